// The production build (issue "Production build and an operator's command line"): the compiled
// dist/ runs without any TypeScript loader (workers included), and `npm start` passes SIGTERM
// to the server instead of leaving it running behind a dead npm.
// test/run.mjs builds dist/ before the suite; these tests use that build.
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { TEST_MASTER_KEY_B64, signIn } from '../helpers/server.js';
import { REPO, spawnServer } from '../helpers/spawned-server.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function database(): Promise<TestDatabase> {
  const db = await createTestDatabase();
  cleanups.push(() => db.drop());
  return db;
}

/** Whether anything accepts connections on the port. */
const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });

describe('the compiled server', () => {
  it('runs from an installation without TypeScript tooling: dist/, migrations/, web/, client/ and the runtime dependencies only', async () => {
    expect(existsSync(join(REPO, 'dist/src/cli/main.js')), 'dist/ built by test/run.mjs').toBe(true);
    expect(existsSync(join(REPO, 'dist/workers/crypto-worker.js')), 'the worker is compiled too').toBe(true);
    // a production-like install: no src/, no workers/*.ts, and node_modules without tsx or typescript
    const dir = mkdtempSync(join(tmpdir(), 'sotalk-prod-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    for (const entry of ['package.json', 'bin', 'dist', 'migrations', 'web', 'client']) cpSync(join(REPO, entry), join(dir, entry), { recursive: true });
    const modules = join(dir, 'node_modules');
    cpSync(join(REPO, 'node_modules'), modules, {
      recursive: true,
      filter: (src) => {
        const rel = src.slice(join(REPO, 'node_modules').length + 1);
        return !/^(tsx|typescript|vitest|vite|esbuild|@esbuild|get-tsconfig)(\/|$)/.test(rel) && !rel.startsWith('.bin/tsx');
      },
    });
    expect(readdirSync(modules)).not.toContain('tsx');

    const db = await database();
    const dataDir = mkdtempSync(join(tmpdir(), 'sotalk-prod-data-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const server = await spawnServer(
      { DATABASE_URL: db.url, ENCRYPTION_MASTER_KEY: TEST_MASTER_KEY_B64, SOTALK_DATA_DIR: dataDir, CRYPTO_POOL_SIZE: '1', CRYPTO_INLINE_MAX: '0' },
      { cwd: dir },
    );
    cleanups.push(() => server.stop());
    expect(server.lines.join('\n')).not.toMatch(/tsx/);
    // a send and a read go through the worker pool (CRYPTO_INLINE_MAX=0): the compiled worker loads
    const [a, b] = await Promise.all([signIn(server.baseUrl), signIn(server.baseUrl)]);
    const sent = await a.api.post('/api/v1/messages', { recipient_id: b.user.id, content: 'compiled hello' });
    expect(sent.status, JSON.stringify(sent.body)).toBe(201);
    const page = await b.api.get(`/api/v1/conversations/${sent.body.message.conversation_id}/messages`);
    expect(page.body.messages.map((m: { content: string }) => m.content)).toEqual(['compiled hello']);
    const metrics = await (await fetch(`${server.baseUrl}/metrics`)).text();
    expect(metrics).toMatch(/^sotalk_crypto_task_run_seconds_count [1-9]/m);
    // the web client and the client library it imports are served from the installation
    expect(await (await fetch(`${server.baseUrl}/app.js`)).text()).toContain("from '../client/index.js'");
    expect((await fetch(`${server.baseUrl}/client/index.js`)).status).toBe(200);
  });

  it('`npm start` stopped with SIGTERM stops the server: nothing keeps listening', async () => {
    const db = await database();
    const dataDir = mkdtempSync(join(tmpdir(), 'sotalk-npm-start-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const server = await spawnServer(
      { DATABASE_URL: db.url, ENCRYPTION_MASTER_KEY: TEST_MASTER_KEY_B64, SOTALK_DATA_DIR: dataDir },
      { command: ['npm', 'start'] },
    );
    cleanups.push(() => server.stop());
    expect(await listening(server.port)).toBe(true);
    server.child.kill('SIGTERM'); // the npm process, as a supervisor would
    expect(await server.exited, server.lines.join('\n')).toEqual({ code: 0, signal: null });
    let open = true;
    for (let i = 0; i < 100 && open; i++) {
      open = await listening(server.port);
      if (open) await new Promise((r) => setTimeout(r, 100));
    }
    expect(open, 'the server still listens after npm exited').toBe(false);
  });
});

describe('signals while the server starts', () => {
  it('SIGTERM while it waits for the database stops it at once with exit code 0, not by the signal', async () => {
    const child = spawn(process.execPath, ['bin/sotalk.js', 'serve'], {
      cwd: REPO,
      env: {
        ...process.env,
        NODE_ENV: 'test',
        HOST: '127.0.0.1',
        PORT: '0',
        LOG_LEVEL: 'info',
        LOG_FORMAT: 'json',
        REDIS_URL: '',
        DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/nothing',
        DATABASE_CONNECT_TIMEOUT_S: '120',
        ENCRYPTION_MASTER_KEY: TEST_MASTER_KEY_B64,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    cleanups.push(() => void child.kill('SIGKILL'));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    const lines: string[] = [];
    await new Promise<void>((resolve) =>
      createInterface({ input: child.stdout! }).on('line', (line) => {
        lines.push(line);
        if (/unreachable; retrying/.test(line)) resolve();
      }),
    );
    child.kill('SIGTERM');
    expect(await exited, lines.join('\n')).toEqual({ code: 0, signal: null });
    expect(lines.some((l) => /"msg":"shutting down"/.test(l))).toBe(true);
  });
});
