// The README's configuration table names every environment variable the server reads, and
// nothing it does not: a setting added to src/config.ts without a row fails here.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';

const ROOT = new URL('../../', import.meta.url).pathname;
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');

/** Variable names read in src/config.ts (`env.NAME`, `env['NAME']`, `intVar(env, 'NAME', …)`) and as `process.env.NAME` anywhere in src/. */
function variablesRead(): Set<string> {
  const names = new Set<string>();
  const config = read('src/config.ts');
  for (const m of config.matchAll(/\benv(?:\.([A-Z][A-Z0-9_]*)|\[\s*'([A-Z][A-Z0-9_]*)'\s*\]|,\s*'([A-Z][A-Z0-9_]*)')/g)) names.add(m[1] ?? m[2] ?? m[3]!);
  for (const entry of readdirSync(join(ROOT, 'src'), { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !entry.name.endsWith('.ts')) continue;
    const text = readFileSync(join(entry.parentPath, entry.name), 'utf8');
    for (const m of text.matchAll(/process\.env\.([A-Z][A-Z0-9_]*)/g)) names.add(m[1]!);
  }
  return names;
}

/** The names in the first column of the README's "## Configuration" table. */
function variablesDocumented(): Set<string> {
  const readme = read('README.md');
  const section = readme.slice(readme.indexOf('\n## Configuration\n'), readme.indexOf('\n## ', readme.indexOf('\n## Configuration\n') + 1));
  const names = new Set<string>();
  for (const row of section.split('\n').filter((l) => /^\|\s*`/.test(l))) {
    for (const m of row.split('|')[1]!.matchAll(/`([A-Z][A-Z0-9_]*)`/g)) names.add(m[1]!);
  }
  return names;
}

it('every variable src/config.ts reads has a row in the README configuration table, and every row is a variable it reads', () => {
  const read = variablesRead();
  const documented = variablesDocumented();
  // the parsers found the table and the settings (a broken regular expression must not pass)
  expect(read.size).toBeGreaterThan(40);
  expect(read).toContain('SEND_BATCH_MAX');
  expect(read).toContain('NODE_ENV');
  expect(documented).toContain('PORT');
  expect([...read].filter((n) => !documented.has(n)).sort(), 'missing from the README table').toEqual([]);
  expect([...documented].filter((n) => !read.has(n)).sort(), 'in the README table but never read').toEqual([]);
});
