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
