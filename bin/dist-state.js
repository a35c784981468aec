// Whether dist/ (the compiled server) is current with the TypeScript sources. Used by
// bin/sotalk.js and, as `node bin/dist-state.js --build-if-stale`, by `npm start` (prestart):
// builds only when a source is newer than the last build, so a start costs no compile.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = new URL('../', import.meta.url);
export const COMPILED_MAIN = new URL('dist/src/cli/main.js', root);
/** Touched by `npm run build` after tsc succeeded. */
const STAMP = new URL('dist/.built', root);

/** Newest modification time (ms) of the TypeScript sources under `dir`; 0 without any (an image holding only dist/). */
function newestSource(dir) {
  const path = fileURLToPath(new URL(dir, root));
  if (!existsSync(path)) return 0;
  let newest = 0;
  for (const entry of readdirSync(path, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name.endsWith('.ts')) newest = Math.max(newest, statSync(`${entry.parentPath ?? entry.path}/${entry.name}`).mtimeMs);
  }
  return newest;
}

/** 'current', 'stale' (a source is newer than the build) or 'missing'. */
export function distState() {
  if (!existsSync(COMPILED_MAIN) || !existsSync(STAMP)) return 'missing';
  const built = statSync(STAMP).mtimeMs;
  return Math.max(newestSource('src'), newestSource('workers')) > built ? 'stale' : 'current';
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === '--build-if-stale') {
  const state = distState();
  if (state !== 'current') {
    process.stderr.write(`sotalk: dist/ is ${state}: building (npm run build)\n`);
    const run = spawnSync('npm', ['run', '--silent', 'build'], { stdio: 'inherit', cwd: fileURLToPath(root) });
    process.exit(run.status ?? 1);
  }
}
