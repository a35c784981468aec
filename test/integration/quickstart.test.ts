import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server.close());

it("the README's quick-start script signs in, sends and reads back a message", async () => {
  const root = new URL('../../', import.meta.url).pathname;
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'docs/examples/quickstart.ts', server.baseUrl], { cwd: root });
  expect(stdout.trim()).toBe('#1: gm, Bob');
});

it('the README two-instance example crosses instances through Redis', async () => {
  const second = await startTestServer({ database: server.database, env: { REDIS_URL: process.env.REDIS_URL || 'redis://127.0.0.1:6379' } });
  const first = await startTestServer({ database: server.database, env: { REDIS_URL: process.env.REDIS_URL || 'redis://127.0.0.1:6379' } });
  try {
    const root = new URL('../../', import.meta.url).pathname;
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'docs/examples/two-instances.ts', first.baseUrl, second.baseUrl], {
      cwd: root,
      timeout: 20_000,
    });
    expect(stdout.trim()).toBe(`Bob on ${second.baseUrl} received #1: hello across instances`);
  } finally {
    await first.close();
    await second.close();
  }
});

const runExample = (args: string[], env: Record<string, string> = {}) =>
  promisify(execFile)(process.execPath, ['--import', 'tsx', ...args], {
    cwd: new URL('../../', import.meta.url).pathname,
    timeout: 20_000,
    env: { ...process.env, ...env },
  }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );

it('an example pointed at nothing says so in one line and exits 1', async () => {
  const closed = await startTestServer();
  const url = closed.baseUrl;
  await closed.close();
  const r = await runExample(['docs/examples/quickstart.ts', url]);
  expect(r.code).toBe(1);
  expect(r.stderr.trim()).toBe(`cannot reach ${url} (/auth/challenge): is the server running there?`);
});

it('the two-instance example gives up with a clear message when the instances do not share Redis', async () => {
  const second = await startTestServer({ database: server.database });
  try {
    const r = await runExample(['docs/examples/two-instances.ts', server.baseUrl, second.baseUrl], { EXAMPLE_TIMEOUT_MS: '1500' });
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(
      `Bob's socket on ${second.baseUrl} got no new_message within 1500 ms: do both instances use the same DATABASE_URL and REDIS_URL?`,
    );
  } finally {
    await second.close();
  }
});
