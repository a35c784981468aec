// Building and starting a checkout: production runs only compiled code (a missing or stale dist/
// is a one-line error, never a silent fall-back to the TypeScript sources), and `npm start` on a
// fresh clone builds first — once, even when two start at the same time.
// Each test works on a copy of the checkout (sources, bin/, configs; node_modules linked).
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { afterAll, describe, expect, it } from 'vitest';
import { runCommand } from '../helpers/cli.js';
import { createTestDatabase } from '../helpers/db.js';
import { TEST_MASTER_KEY_B64 } from '../helpers/server.js';
import { REPO, spawnServer } from '../helpers/spawned-server.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** A checkout without build output (`withDist`: with a copy of the suite's dist/). */
function checkout(withDist: boolean): string {
  const dir = mkdtempSync(join(tmpdir(), 'sotalk-checkout-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  for (const entry of ['package.json', 'tsconfig.json', 'tsconfig.build.json', 'bin', 'src', 'workers', 'migrations', 'web']) {
    cpSync(join(REPO, entry), join(dir, entry), { recursive: true, preserveTimestamps: true });
  }
  if (withDist) cpSync(join(REPO, 'dist'), join(dir, 'dist'), { recursive: true, preserveTimestamps: true });
  symlinkSync(join(REPO, 'node_modules'), join(dir, 'node_modules'));
  return dir;
}

/** `node …args` in the checkout `cwd`. */
const run = (cwd: string, args: string[], env: Record<string, string>) => runCommand(process.execPath, args, env, cwd);

const BASE64_KEY = /^[A-Za-z0-9+/]{43}=\n$/;

describe('NODE_ENV=production runs compiled code only', () => {
  it('a current dist/ runs; a stale or missing one is a one-line error naming `npm run build`, where development falls back to tsx', async () => {
    const dir = checkout(true);
    const current = await run(dir, ['bin/sotalk.js', 'keygen'], { NODE_ENV: 'production' });
    expect(current.code, current.stderr).toBe(0);
    expect(current.stdout).toMatch(BASE64_KEY);

    const later = new Date(Date.now() + 60_000);
    utimesSync(join(dir, 'src/config.ts'), later, later); // a source edited after the build
    const stale = await run(dir, ['bin/sotalk.js', 'keygen'], { NODE_ENV: 'production' });
    expect(stale.code).toBe(1);
    expect(stale.stdout).toBe('');
    expect(stale.stderr).toBe('sotalk: dist/ is stale (a source is newer than the build) and NODE_ENV=production runs only compiled code: run `npm run build`\n');

    const dev = await run(dir, ['bin/sotalk.js', 'keygen'], { NODE_ENV: 'development' });
    expect(dev.code, dev.stderr).toBe(0);
    expect(dev.stdout).toMatch(BASE64_KEY);
    expect(dev.stderr).toMatch(/^sotalk: dist\/ is stale: running the TypeScript sources through tsx/);

    rmSync(join(dir, 'dist'), { recursive: true });
    const missing = await run(dir, ['bin/sotalk.js', 'serve'], { NODE_ENV: 'production', DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/x', ENCRYPTION_MASTER_KEY: TEST_MASTER_KEY_B64 });
    expect(missing.code).toBe(1);
    expect(missing.stdout).toBe('');
    expect(missing.stderr).toBe('sotalk: dist/ is missing and NODE_ENV=production runs only compiled code: run `npm run build`\n');
  }, 90_000);
});

describe('npm start on a fresh clone', () => {
  it('two `npm start`s at once: one builds (under the lock), the other waits for it, both serve the compiled code', async () => {
    const dir = checkout(false);
    const db = await createTestDatabase();
    cleanups.push(() => db.drop());
    // Hold the build lock ourselves until both starts wait for it: then both are racing for it.
    mkdirSync(join(dir, 'dist'));
    const release = await lockfile.lock(join(dir, 'dist'), { lockfilePath: join(dir, 'dist/.build.lock') });
    let waiting = 0;
    let bothWaiting: () => void;
    const waited = new Promise<void>((resolve) => (bothWaiting = resolve));
    const onLine = (line: string) => /waiting for another build of dist\//.test(line) && ++waiting === 2 && bothWaiting();
    const env = { DATABASE_URL: db.url, ENCRYPTION_MASTER_KEY: TEST_MASTER_KEY_B64, LOG_FORMAT: 'json' };
    const started = [1, 2].map((i) => spawnServer({ ...env, SOTALK_DATA_DIR: join(dir, `data${i}`) }, { command: ['npm', 'start'], cwd: dir, onLine }));
    for (const s of started) s.catch(() => {});
    await waited;
    await release();
    const starts = await Promise.all(started);
    for (const s of starts) cleanups.push(() => s.stop());
    const lines = starts.flatMap((s) => s.lines);
    expect(lines.filter((l) => /dist\/ is missing: building/.test(l)), lines.join('\n')).toHaveLength(1);
    expect(lines.join('\n')).not.toMatch(/through tsx/);
    for (const s of starts) expect((await fetch(`${s.baseUrl}/healthz`)).status).toBe(200);

    // dist/ is current now: another start builds nothing and says nothing
    const again = await run(dir, ['bin/dist-state.js', '--build-if-stale'], {});
    expect(again).toEqual({ code: 0, stdout: '', stderr: '' });
  }, 180_000);

  it('a lock left by a build that was killed is taken over', async () => {
    const dir = checkout(false);
    mkdirSync(join(dir, 'dist/.build.lock'), { recursive: true });
    const longAgo = new Date(Date.now() - 60_000);
    utimesSync(join(dir, 'dist/.build.lock'), longAgo, longAgo);
    const build = await run(dir, ['bin/dist-state.js', '--build-if-stale'], {});
    expect(build.code, build.stderr).toBe(0);
    expect(build.stderr).toBe('sotalk: dist/ is missing: building (npm run build)\n');
    const prod = await run(dir, ['bin/sotalk.js', 'keygen'], { NODE_ENV: 'production' });
    expect(prod.code, prod.stderr).toBe(0);
    expect(prod.stdout).toMatch(BASE64_KEY);
  }, 180_000);
});
