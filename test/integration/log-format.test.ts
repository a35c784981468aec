// Which log format the server writes (LOG_FORMAT): human-readable at a terminal in development,
// with the URL to open; JSON lines in production and whenever stdout is not a terminal (piped to
// a supervisor or a log shipper); LOG_FORMAT=json|pretty overrides both. The terminal is a real
// pseudo-terminal made by `script` (util-linux).
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { TEST_MASTER_KEY_B64 } from '../helpers/server.js';
import { REPO, spawnServer } from '../helpers/spawned-server.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

let db: TestDatabase;
let dataDir: string;
beforeAll(async () => {
  db = await createTestDatabase();
  cleanups.push(() => db.drop());
  dataDir = mkdtempSync(join(tmpdir(), 'sotalk-logs-'));
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
});

const PRETTY_LINE = /^\[\d\d:\d\d:\d\d\.\d{3}\] (INFO|WARN|ERROR)( \(\d+\))?: /;

/**
 * `sotalk serve` against a database that does not answer (it logs a retry, then gives up after a
 * second and exits 1): the log lines it wrote, at a terminal or piped.
 */
function serveUnreachable(env: Record<string, string>, terminal: boolean): string[] {
  const vars = {
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'info',
    REDIS_URL: '',
    CRYPTO_POOL_SIZE: '1',
    DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/nothing',
    DATABASE_CONNECT_TIMEOUT_S: '1',
    ENCRYPTION_MASTER_KEY: TEST_MASTER_KEY_B64,
    SOTALK_DATA_DIR: dataDir,
    LOG_FORMAT: '',
    NODE_ENV: 'development',
    ...env,
  };
  const command = `${process.execPath} bin/sotalk.js serve`;
  const options = { cwd: REPO, env: { ...process.env, ...vars, TERM: 'dumb' }, encoding: 'utf8' as const, timeout: 60_000 };
  // exit 1 is expected (the database never answers): the output is what matters
  const run = (file: string, args: string[]) => {
    try {
      return execFileSync(file, args, { ...options, stdio: ['ignore', 'pipe', 'ignore'] });
    } catch (err) {
      return (err as { stdout: string }).stdout;
    }
  };
  const out = terminal ? run('script', ['-qec', command, '/dev/null']) : run(process.execPath, ['bin/sotalk.js', 'serve']);
  // eslint-disable-next-line no-control-regex
  const lines = out.replace(/\r/g, '').replace(/\x1b\[[0-9;]*m/g, '').split('\n');
  return lines.filter((l) => /unreachable; retrying/.test(l));
}

const hasScript = (() => {
  try {
    execFileSync('script', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

describe('log format', () => {
  it('piped: JSON lines, in development too; LOG_FORMAT=pretty turns them human-readable', () => {
    const piped = serveUnreachable({}, false);
    expect(piped.length).toBeGreaterThan(0);
    for (const line of piped) expect(JSON.parse(line)).toMatchObject({ level: 40, msg: expect.stringMatching(/unreachable; retrying$/) });
    const pretty = serveUnreachable({ LOG_FORMAT: 'pretty' }, false);
    expect(pretty.length).toBeGreaterThan(0);
    for (const line of pretty) expect(line).toMatch(PRETTY_LINE);
  }, 90_000);

  it.skipIf(!hasScript)('at a terminal: pretty in development, JSON with NODE_ENV=production or LOG_FORMAT=json', () => {
    const dev = serveUnreachable({}, true);
    expect(dev.length).toBeGreaterThan(0);
    for (const line of dev) expect(line).toMatch(PRETTY_LINE);
    for (const env of [{ NODE_ENV: 'production' }, { LOG_FORMAT: 'json' }] as Record<string, string>[]) {
      const json = serveUnreachable(env, true);
      expect(json.length, JSON.stringify(env)).toBeGreaterThan(0);
      for (const line of json) expect(JSON.parse(line).level, JSON.stringify(env)).toBe(40);
    }
  }, 90_000);

  it('the pretty start-up line names the URL to open', async () => {
    const child = spawn(process.execPath, ['bin/sotalk.js', 'serve'], {
      cwd: REPO,
      env: { ...process.env, NODE_ENV: 'development', HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', LOG_FORMAT: 'pretty', REDIS_URL: '', CRYPTO_POOL_SIZE: '1', DATABASE_URL: db.url, ENCRYPTION_MASTER_KEY: TEST_MASTER_KEY_B64, SOTALK_DATA_DIR: dataDir },
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    cleanups.push(() => void child.kill('SIGKILL'));
    const line = await new Promise<string>((resolve) =>
      createInterface({ input: child.stdout }).on('line', (l) => /sotalk listening/.test(l) && resolve(l)),
    );
    expect(line).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: sotalk listening — open http:\/\/127\.0\.0\.1:\d+\/$/);
    const port = Number(/:(\d+)\/$/.exec(line)![1]);
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  }, 60_000);
});

describe('DATABASE_POOL_SIZE on the embedded database', () => {
  it('is 1 whatever was asked, and the start-up says so', async () => {
    const embeddedDir = mkdtempSync(join(tmpdir(), 'sotalk-logs-embedded-'));
    cleanups.push(() => rmSync(embeddedDir, { recursive: true, force: true }));
    const server = await spawnServer({ DATABASE_URL: '', DATABASE_POOL_SIZE: '8', SOTALK_DATA_DIR: embeddedDir, ENCRYPTION_MASTER_KEY: TEST_MASTER_KEY_B64, LOG_FORMAT: 'json' });
    cleanups.push(() => server.stop());
    const records = server.lines.flatMap((l) => {
      try {
        return [JSON.parse(l)];
      } catch {
        return [];
      }
    });
    expect(records.find((r) => r.msg.startsWith('DATABASE_POOL_SIZE ignored'))?.msg).toBe(
      'DATABASE_POOL_SIZE ignored: the embedded database (no DATABASE_URL) is one session, so its pool holds 1 connection',
    );
    expect(records.find((r) => r.msg === 'sotalk listening')).toMatchObject({ databasePool: 1, database: `embedded at ${join(embeddedDir, 'pgdata')}` });
  }, 90_000);
});
