// The client library (client/) against real servers: typed calls and errors, the live stream in
// JSON and msgpack, a server restarted in the middle of a conversation, and two instances.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateWallet, SoTalkClient, SoTalkError, type LiveConnection } from '../../client/index.js';
import type { Message } from '../../client/types.js';
import { createTestDatabase, testPool } from '../helpers/db.js';
import { startRedisPair, startTestServer, TEST_MASTER_KEY_B64, type TestServer } from '../helpers/server.js';
import { spawnServer } from '../helpers/spawned-server.js';

async function signedIn(baseUrl: string, options: Partial<ConstructorParameters<typeof SoTalkClient>[0]> = {}) {
  const client = new SoTalkClient({ baseUrl, wallet: await generateWallet(), ...options });
  await client.signIn();
  return client;
}

/** The next `n` messages of a live stream. */
async function take(live: LiveConnection, n: number): Promise<Message[]> {
  const out: Message[] = [];
  while (out.length < n) {
    const next = await live.next();
    if (next.done) throw new Error(`the stream ended after ${out.length} messages`);
    out.push(next.value);
  }
  return out;
}

/**
 * A free port below the ephemeral range: a client reconnecting to a closed port of that range
 * can be handed that very port as its own (a TCP self-connection) and keep the server out of it.
 */
async function quietPort(): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const free = await new Promise<boolean>((resolve) => {
      const probe = createServer().once('error', () => resolve(false));
      probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
    });
    if (free) return port;
  }
}

const seqs = (list: Message[]) => list.map((m) => m.seq);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('one server', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(() => server.close());

  it('signs in with a wallet, calls endpoints with typed answers, and reports errors with code and field', async () => {
    const alice = await signedIn(server.baseUrl);
    const bob = await signedIn(server.baseUrl);
    expect(alice.user?.wallet).toMatch(/^[1-9A-HJ-NP-Za-km-z]{32,44}$/);
    expect(await alice.me()).toEqual(alice.user);
    const conversation = await alice.directConversation(bob.user!.id);
    expect(conversation.type).toBe('direct');
    const sent = await alice.sendMessage({ conversation_id: conversation.id, content: 'gm, Bob', client_message_id: 'once' });
    const replay = await alice.sendMessage({ conversation_id: conversation.id, content: 'different text', client_message_id: 'once' });
    expect(replay).toEqual(sent);
    const page = await bob.messages(conversation.id);
    expect(page.messages.map((m) => m.content)).toEqual(['gm, Bob']);
    expect((await bob.allConversations()).map((c) => c.id)).toEqual([conversation.id]);
    expect((await alice.features()).features.max_message_bytes).toBeGreaterThan(0);
    expect(await alice.call('metrics')).toContain('# HELP');

    const bad = await bob.messages(conversation.id, { limit: 500 }).catch((e) => e);
    expect(bad).toBeInstanceOf(SoTalkError);
    expect(bad).toMatchObject({ code: 'invalid_request', status: 400, field: 'limit' });
    expect(bad.requestId).toBeTruthy();
    await expect(bob.getConversation('00000000-0000-4000-8000-000000000000')).rejects.toMatchObject({ code: 'not_found', status: 404 });
    await expect(alice.sendMessage({ conversation_id: conversation.id, content: '' })).rejects.toMatchObject({ code: 'invalid_request', field: 'content' });
    alice.close();
    bob.close();
  });

  it('the server serves the library to browsers at /client/', async () => {
    const res = await fetch(`${server.baseUrl}/client/index.js`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(await res.text()).toContain("export { LiveConnection } from './live.js';");
    for (const file of ['live.js', 'client.js', 'base58.js', 'wallet.js']) expect((await fetch(`${server.baseUrl}/client/${file}`)).status).toBe(200);
    expect((await fetch(`${server.baseUrl}/client/openapi.d.ts`)).status).toBe(404);
  });

  it.each(['json', 'msgpack'] as const)('the live stream (%s) holds every message once, in seq order, sent over HTTP and the socket alike', async (encoding) => {
    const alice = await signedIn(server.baseUrl);
    const bob = await signedIn(server.baseUrl);
    const conversation = await alice.directConversation(bob.user!.id);
    const bobLive = bob.live({ encoding });
    await bobLive.start();
    const aliceLive = alice.live({ encoding });
    await aliceLive.start();
    // 40 messages, 4 senders at a time, half over the socket: they commit in some order, each with its seq
    const sends = range(1, 40).map((i) => () => (i % 2 ? alice.sendMessage({ conversation_id: conversation.id, content: `m${i}` }) : aliceLive.send({ conversation_id: conversation.id, content: `m${i}` })));
    const acked: Message[] = [];
    await Promise.all(range(0, 3).map(async (w) => { for (let i = w; i < sends.length; i += 4) acked.push(await sends[i]!()); }));
    const got = await take(bobLive, 40);
    expect(seqs(got)).toEqual(range(1, 40));
    expect(new Set(got.map((m) => m.content))).toEqual(new Set(acked.map((m) => m.content)));
    expect(seqs(await take(aliceLive, 40))).toEqual(range(1, 40));
    // a reply from Bob over his socket reaches both streams next
    const reply = await bobLive.send({ conversation_id: conversation.id, content: 'got them all' });
    expect(reply.seq).toBe(41);
    expect((await take(aliceLive, 1))[0]!.content).toBe('got them all');
    expect((await take(bobLive, 1))[0]!.id).toBe(reply.id);
    expect(bobLive.positions()).toEqual({ [conversation.id]: 41 });
    bobLive.close();
    aliceLive.close();
    alice.close();
    bob.close();
  });

  it('a new connection given the positions of an earlier one goes on exactly where it stopped', async () => {
    const alice = await signedIn(server.baseUrl);
    const bob = await signedIn(server.baseUrl);
    const conversation = await alice.directConversation(bob.user!.id);
    const first = bob.live();
    await first.start();
    for (const i of range(1, 3)) await alice.sendMessage({ conversation_id: conversation.id, content: `m${i}` });
    expect(seqs(await take(first, 2))).toEqual([1, 2]);
    const positions = first.positions();
    first.close();
    for (const i of range(4, 6)) await alice.sendMessage({ conversation_id: conversation.id, content: `m${i}` });
    const second = bob.live({ positions });
    await second.start();
    expect((await take(second, 4)).map((m) => m.content)).toEqual(['m3', 'm4', 'm5', 'm6']);
    second.close();
    alice.close();
    bob.close();
  });
});

it('a server process restarted in the middle of a conversation: every message reaches the stream once, in order, and no send is stored twice', async () => {
  const database = await createTestDatabase();
  const env = { DATABASE_URL: database.url, ENCRYPTION_MASTER_KEY: TEST_MASTER_KEY_B64, SOTALK_DATA_DIR: mkdtempSync(join(tmpdir(), 'sotalk-client-')) };
  const port = String(await quietPort());
  let server = await spawnServer({ ...env, PORT: port });
  const retry = { retries: 100, retryDelayMs: 50, maxRetryDelayMs: 400 };
  const reconnect = { reconnectDelayMs: 50, maxReconnectDelayMs: 400, sendTimeoutMs: 60_000 };
  try {
    const alice = await signedIn(server.baseUrl, retry);
    const bob = await signedIn(server.baseUrl, retry);
    const conversation = await alice.directConversation(bob.user!.id);
    const bobLive = bob.live(reconnect);
    await bobLive.start();
    const aliceLive = alice.live({ encoding: 'msgpack', ...reconnect });
    await aliceLive.start();
    const states: string[] = [];
    bobLive.on('state', (s) => states.push(s));

    const total = 60;
    let restarted: Promise<void> | undefined;
    const sending = (async () => {
      for (const i of range(1, total)) {
        const body = { conversation_id: conversation.id, content: `m${i}` };
        await (i % 3 === 0 ? aliceLive.send(body) : alice.sendMessage(body));
        if (i === 20) {
          // stop the server (SIGTERM) under both clients and start a new process on the same port
          restarted = (async () => {
            await server.stop();
            server = await spawnServer({ ...env, PORT: port });
          })();
        }
      }
    })();
    const got = await take(bobLive, total);
    await sending;
    await restarted;
    expect(seqs(got)).toEqual(range(1, total));
    expect(got.map((m) => m.content)).toEqual(range(1, total).map((i) => `m${i}`));
    expect(states).toContain('offline');
    expect(bobLive.state).toBe('live');
    const pool = testPool(database.url, 1);
    const stored = await pool.query('SELECT count(*)::int AS n FROM messages WHERE conversation_id = $1', [conversation.id]);
    await pool.end();
    expect(stored.rows[0].n).toBe(total);
    expect(seqs(await take(aliceLive, total))).toEqual(range(1, total));
    bobLive.close();
    aliceLive.close();
    alice.close();
    bob.close();
  } finally {
    await server.stop();
    await database.drop();
    rmSync(env.SOTALK_DATA_DIR, { recursive: true, force: true });
  }
}, 90_000);

it('two instances: a stream on each receives every message once and in order, whichever instance it was sent through', async () => {
  const [a, b] = await startRedisPair();
  try {
    const alice = await signedIn(a.baseUrl);
    const bob = await signedIn(b.baseUrl);
    const bobOnA = new SoTalkClient({ baseUrl: a.baseUrl, session: bob.session! });
    const conversation = await alice.directConversation(bob.user!.id);
    const streams = [bob.live({ encoding: 'msgpack' }), bobOnA.live(), alice.live()];
    for (const s of streams) await s.start();
    const aliceViaB = new SoTalkClient({ baseUrl: b.baseUrl, session: alice.session! });
    const sends: Promise<Message>[] = [];
    for (const i of range(1, 30)) {
      const body = { conversation_id: conversation.id, content: `m${i}` };
      sends.push(i % 2 ? alice.sendMessage(body) : aliceViaB.sendMessage(body));
    }
    await Promise.all(sends);
    for (const s of streams) expect(seqs(await take(s, 30))).toEqual(range(1, 30));
    for (const s of streams) s.close();
    for (const c of [alice, bob, bobOnA, aliceViaB]) c.close();
  } finally {
    await b.close();
    await a.close();
  }
}, 60_000);
