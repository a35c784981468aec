import { execFile, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { generateWallet, SoTalkClient } from '../../client/index.js';
import type { Message } from '../../client/types.js';
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
  expect(r.stderr.trim()).toBe(`cannot reach ${url}: is the server running there?`);
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

it('the chat-bot example answers every message sent to it, once and in order', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'docs/examples/chat-bot.ts', server.baseUrl], { cwd: new URL('../../', import.meta.url).pathname, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  try {
    const ready = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout! }).once('line', resolve);
      void exited.then((code) => reject(new Error(`chat-bot exited (${code})`)));
    });
    const botId = /\(user ([0-9a-f-]{36})\)$/.exec(ready)?.[1];
    expect(botId).toBeDefined();
    const carol = new SoTalkClient({ baseUrl: server.baseUrl, wallet: await generateWallet() });
    await carol.signIn();
    const live = carol.live();
    await live.start();
    const first = await carol.sendMessage({ recipient_id: botId!, content: 'hello there bot' });
    for (const text of ['two words', 'one']) await live.send({ conversation_id: first.conversation_id, content: text });
    const replies: Message[] = [];
    while (replies.length < 3) {
      const { value } = await live.next();
      if (value!.sender_id === botId) replies.push(value!);
    }
    expect(replies.map((m) => m.content)).toEqual(['#1: "hello there bot" has 3 words', '#2: "two words" has 2 words', '#3: "one" has 1 word']);
    expect(replies[0]!.reply_to_id).toBe(first.id);
    live.close();
    carol.close();
  } finally {
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  }
});
