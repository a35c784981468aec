// An uncaught exception must not leave the server running silently in an unknown state
// (docs/operations.md, Faults): it is logged, /readyz turns 503 and the listener closes, accepted work is finished and
// the process exits 1.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/db.js';
import { TEST_MASTER_KEY_B64 } from '../helpers/server.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

it('an uncaught exception: logged, not ready, drained, exit code 1', async () => {
  const db = await createTestDatabase();
  const dataDir = mkdtempSync(join(tmpdir(), 'sotalk-fault-'));
  try {
    const child = spawn(process.execPath, ['--import', fileURLToPath(new URL('../fixtures/throw-later.mjs', import.meta.url)), 'bin/sotalk.js', 'serve'], {
      cwd: REPO,
      env: { ...process.env, DATABASE_URL: db.url, ENCRYPTION_MASTER_KEY: TEST_MASTER_KEY_B64, SOTALK_DATA_DIR: dataDir, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', REDIS_URL: '', SOTALK_TEST_THROW_AFTER_MS: '9000' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: string[] = [];
    let port = 0;
    const listening = new Promise<void>((resolve) =>
      createInterface({ input: child.stdout! }).on('line', (line) => {
        lines.push(line);
        try {
          const rec = JSON.parse(line);
          if (rec.msg === 'sotalk listening') {
            port = rec.port;
            resolve();
          }
        } catch {
          /* not JSON */
        }
      }),
    );
    createInterface({ input: child.stderr! }).on('line', (line) => lines.push(line));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await listening;
    expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);
    const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 25_000))]);
    if (code === 'timeout') child.kill('SIGKILL');
    expect(code).toBe(1);
    const log = lines.join('\n');
    expect(log).toContain('uncaught exception');
    expect(log).toContain('shutting down');
    expect(log).toContain('sotalk stopped');
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
    await db.drop();
  }
}, 60_000);
