// Integration tests: several instances on one Postgres and one Redis — a single server, and a Redis
// Cluster with sharded pub/sub (docs/design.md, docs/protocol.md,
// docs/operations.md): events cross instances, membership changes cross,
// an instance works alone without Redis, and fan-out survives a Redis restart and a cluster master's
// restart and failover to its replica (on throwaway servers, so the shared Redis and cluster are never
// disturbed).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, startRedisCluster, type ThrowawayRedis, type ThrowawayRedisCluster } from '../helpers/redis-server.js';
import { signIn, startRedisPair, startTestServer, type SignedInUser, type TestServer } from '../helpers/server.js';
import { openSocket, type TestSocket } from '../helpers/socket.js';

// ---------------------------------------------------------------- local helpers

const SHARED_REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
/** test/run.mjs starts a throwaway cluster (required under CI); without one the cluster variants are skipped. */
const CLUSTER_URL = process.env.REDIS_CLUSTER_URL || '';
const REDIS_TARGETS = [
  { redis: 'one Redis', url: SHARED_REDIS_URL },
  { redis: 'a Redis Cluster (sharded pub/sub)', url: CLUSTER_URL },
].filter((t) => t.url);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sockets: TestSocket[] = [];

async function connect(s: TestServer, u: SignedInUser, options: Parameters<typeof openSocket>[2] = {}): Promise<TestSocket> {
  const sock = await openSocket(s.baseUrl, u.token, options);
  sockets.push(sock);
  return sock;
}

/** Signs in on one instance; tokens are valid on every instance (same master key, same database). */
const users = (s: TestServer, n: number) => Promise.all(Array.from({ length: n }, () => signIn(s.baseUrl)));

/** The same user, talking HTTP to another instance. */
function via(s: TestServer, u: SignedInUser): SignedInUser {
  const headers = { authorization: `Bearer ${u.token}` };
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(s.baseUrl + path, {
      method,
      headers: body === undefined ? headers : { ...headers, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined, headers: res.headers };
  };
  return {
    ...u,
    api: {
      get: (p) => call('GET', p),
      post: (p, b) => call('POST', p, b),
      patch: (p, b) => call('PATCH', p, b),
      delete: (p) => call('DELETE', p),
      raw: () => {
        throw new Error('not needed');
      },
    },
  };
}

async function group(owner: SignedInUser, members: SignedInUser[]): Promise<string> {
  const res = await owner.api.post('/api/v1/conversations', { type: 'group', title: 'g', member_ids: members.map((m) => m.user.id) });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.conversation.id;
}

async function direct(a: SignedInUser, b: SignedInUser): Promise<string> {
  const res = await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] });
  expect([200, 201]).toContain(res.status);
  return res.body.conversation.id;
}

async function send(u: SignedInUser, conversationId: string, content: string): Promise<any> {
  const res = await u.api.post('/api/v1/messages', { conversation_id: conversationId, content });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.message;
}

const newMessage = (id: string) => (f: any) => f.type === 'new_message' && f.message?.id === id;
const ofType = (type: string, conversationId: string) => (f: any) =>
  f.type === type && (f.conversation_id ?? f.message?.conversation_id) === conversationId;

async function readyz(s: TestServer): Promise<number> {
  return (await fetch(`${s.baseUrl}/readyz`)).status;
}

async function waitUntil(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

/** Two instances on one database and the given Redis, both ready (test/helpers/server.ts). */
const startPair = (redisUrl: string) => startRedisPair({ REDIS_URL: redisUrl });

/** Sends through `sender`'s instance every 200 ms (up to ~15 s) until one of them reaches `sock`; returns whether one did. */
async function pollUntilDelivered(sender: SignedInUser, conversationId: string, sock: TestSocket, label: string, timeoutMs = 15_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  const probes = new Set<string>();
  for (let i = 0; Date.now() < deadline; i++) {
    const probe = await send(sender, conversationId, `${label} probe ${i}`);
    probes.add(probe.id);
    await sleep(200);
    if (sock.frames.some((f) => f.type === 'new_message' && probes.has(f.message.id))) return true;
  }
  return false;
}

afterAll(async () => {
  await Promise.all(sockets.map((s) => s.close().catch(() => {})));
});

// ---------------------------------------------------------------- two instances, shared Redis

describe.each(REDIS_TARGETS)('two instances on one Postgres and $redis', ({ url }) => {
  let A: TestServer;
  let B: TestServer;

  beforeAll(async () => {
    [A, B] = await startPair(url);
  });

  afterAll(async () => {
    await Promise.all(sockets.map((s) => s.close().catch(() => {})));
    await B?.close();
    await A?.close();
  });

  it('both instances become ready (database and Redis reachable) and stay so', async () => {
    expect(await readyz(A)).toBe(200);
    expect(await readyz(B)).toBe(200);
  });

  it('a message sent over HTTP on A reaches sockets on B (and on A), decrypted', async () => {
    const [a, b] = await users(A, 2);
    const conv = await group(a!, [b!]);
    const [bOnB, aOnA, aOnB] = await Promise.all([connect(B, b!), connect(A, a!), connect(B, a!)]);
    const sent = await send(a!, conv, 'from A over HTTP');
    for (const s of [bOnB, aOnA, aOnB]) expect((await s.next(newMessage(sent.id))).message).toEqual(sent);
  });

  it('a message sent over a socket on A reaches sockets on B; the sending socket gets its ack first', async () => {
    const [a, b] = await users(A, 2);
    const conv = await group(a!, [b!]);
    const [aOnA, aOnB, bOnB] = await Promise.all([connect(A, a!), connect(B, a!), connect(B, b!)]);
    aOnA.send({ type: 'send', request_id: 'x1', conversation_id: conv, content: 'from A over the socket' });
    const ack = await aOnA.next((f) => f.type === 'ack' && f.request_id === 'x1');
    for (const s of [aOnA, aOnB, bOnB]) expect((await s.next(newMessage(ack.message.id))).message).toEqual(ack.message);
    expect(aOnA.frames.indexOf(ack)).toBeLessThan(aOnA.frames.findIndex(newMessage(ack.message.id)));
  });

  it('messages sent through both instances arrive on each socket in seq order with no gaps', async () => {
    const [a, b] = await users(A, 2);
    const conv = await group(a!, [b!]);
    const [aOnA, bOnB] = await Promise.all([connect(A, a!), connect(B, b!)]);
    const bViaB = via(B, b!);
    const N = 20;
    await Promise.all(Array.from({ length: N }, (_, i) => (i % 2 === 0 ? send(a!, conv, `a${i}`) : send(bViaB, conv, `b${i}`))));
    for (const s of [aOnA, bOnB]) {
      await waitUntil(() => s.frames.filter((f) => f.type === 'new_message').length >= N, 15_000, 'all messages');
      expect(s.frames.filter((f) => f.type === 'new_message').map((f) => f.message.seq)).toEqual(Array.from({ length: N }, (_, k) => k + 1));
    }
  });

  it('the first messages of fresh conversations, sent concurrently through both instances, arrive in seq order everywhere', async () => {
    const ROUNDS = 20;
    const PER_ROUND = 4;
    const [a, b] = await users(A, 2);
    const [aOnA, bOnB, aOnB] = await Promise.all([connect(A, a!), connect(B, b!), connect(B, a!)]);
    const convs = await Promise.all(Array.from({ length: ROUNDS }, () => group(a!, [b!])));
    const bViaB = via(B, b!);
    await Promise.all(convs.flatMap((conv) => Array.from({ length: PER_ROUND }, (_, j) => (j % 2 === 0 ? send(a!, conv, `a${j}`) : send(bViaB, conv, `b${j}`)))));
    const expected = Array.from({ length: PER_ROUND }, (_, n) => n + 1).join(',');
    for (const [name, s] of [['a on A', aOnA], ['b on B', bOnB], ['a on B', aOnB]] as const) {
      await waitUntil(() => s.frames.filter((f) => f.type === 'new_message').length >= ROUNDS * PER_ROUND, 15_000, `all messages on ${name}`);
      const problems = convs
        .map((conv) => s.frames.filter((f) => f.type === 'new_message' && f.message.conversation_id === conv).map((f) => f.message.seq).join(','))
        .filter((seqs) => seqs !== expected);
      expect(problems, `out-of-order seqs on ${name}`).toEqual([]);
    }
  });

  it('edits, deletes, receipts, key rotation and typing cross instances; typing skips the typer’s sockets everywhere', async () => {
    const [a, b] = await users(A, 2);
    const conv = await group(a!, [b!]);
    const [aOnA, aOnB, bOnB] = await Promise.all([connect(A, a!), connect(B, a!), connect(B, b!)]);
    const sent = await send(a!, conv, 'to be edited');
    await bOnB.next(newMessage(sent.id));
    expect((await a!.api.patch(`/api/v1/messages/${sent.id}`, { content: 'edited on A' })).status).toBe(200);
    expect((await bOnB.next(ofType('message_updated', conv))).message.content).toBe('edited on A');
    expect((await a!.api.delete(`/api/v1/messages/${sent.id}`)).status).toBe(200);
    expect(await bOnB.next(ofType('message_deleted', conv))).toEqual({ type: 'message_deleted', conversation_id: conv, id: sent.id, seq: 1 });
    // b reads on B: a's sockets on A and B hear it
    bOnB.send({ type: 'read', conversation_id: conv, seq: 1 });
    for (const s of [aOnA, aOnB]) {
      expect(await s.next(ofType('receipt', conv))).toEqual({ type: 'receipt', conversation_id: conv, user_id: b!.user.id, delivered_seq: 1, read_seq: 1 });
    }
    expect((await via(B, b!).api.post(`/api/v1/conversations/${conv}/rotate-key`)).status).toBe(200);
    expect(await aOnA.next(ofType('key_rotated', conv))).toEqual({ type: 'key_rotated', conversation_id: conv, current_key_version: 2 });
    // a types on A: b on B gets it, a's socket on B does not
    aOnA.send({ type: 'typing', conversation_id: conv });
    expect(await bOnB.next(ofType('typing', conv))).toEqual({ type: 'typing', conversation_id: conv, user_id: a!.user.id });
    const marker = await send(via(B, b!), conv, 'marker');
    await Promise.all([aOnA.next(newMessage(marker.id)), aOnB.next(newMessage(marker.id))]);
    expect(aOnB.frames.filter((f) => f.type === 'typing')).toEqual([]);
    expect(aOnA.frames.filter((f) => f.type === 'typing')).toEqual([]);
  });

  it('member_added crosses instances, and the other instance then routes to the new member', async () => {
    const [a, b, c] = await users(A, 3);
    const conv = await group(a!, [b!]);
    const [aOnA, bOnB, cOnB] = await Promise.all([connect(A, a!), connect(B, b!), connect(B, c!)]);
    // warm B's view of the membership (a send routed by B before c joins)
    const warm = await send(via(B, b!), conv, 'before c');
    await aOnA.next(newMessage(warm.id));
    const res = await a!.api.post(`/api/v1/conversations/${conv}/members`, { user_id: c!.user.id });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    for (const s of [aOnA, bOnB, cOnB]) {
      expect(await s.next((f) => f.type === 'member_added' && f.conversation_id === conv && f.user_id === c!.user.id)).toEqual({
        type: 'member_added',
        conversation_id: conv,
        user_id: c!.user.id,
      });
    }
    const fromA = await send(a!, conv, 'routed by A');
    expect((await cOnB.next(newMessage(fromA.id))).message.content).toBe('routed by A');
    const fromB = await send(via(B, b!), conv, 'routed by B');
    expect((await cOnB.next(newMessage(fromB.id))).message.content).toBe('routed by B');
    await aOnA.next(newMessage(fromB.id));
  });

  it('member_removed crosses instances, and neither instance routes to the removed member afterwards', async () => {
    const [a, b, c] = await users(A, 3);
    const conv = await group(a!, [b!, c!]);
    const dm = await direct(a!, c!);
    const [aOnA, bOnB, cOnB, cOnA] = await Promise.all([connect(A, a!), connect(B, b!), connect(B, c!), connect(A, c!)]);
    // warm both instances' view of the membership
    const warmA = await send(a!, conv, 'warm A');
    const warmB = await send(via(B, b!), conv, 'warm B');
    await Promise.all([cOnB.next(newMessage(warmA.id)), cOnB.next(newMessage(warmB.id)), cOnA.next(newMessage(warmB.id))]);

    expect((await a!.api.delete(`/api/v1/conversations/${conv}/members/${c!.user.id}`)).status).toBe(204);
    for (const s of [aOnA, bOnB, cOnB, cOnA]) {
      expect(await s.next(ofType('member_removed', conv))).toEqual({ type: 'member_removed', conversation_id: conv, user_id: c!.user.id });
    }
    const afterA = await send(a!, conv, 'after removal, via A');
    const afterB = await send(via(B, b!), conv, 'after removal, via B');
    await Promise.all([bOnB.next(newMessage(afterA.id)), aOnA.next(newMessage(afterB.id))]);
    // markers in the direct conversation, routed by each instance, flush c's sockets
    const m1 = await send(a!, dm, 'marker via A');
    const m2 = await send(via(B, a!), dm, 'marker via B');
    await Promise.all([cOnA, cOnB].flatMap((s) => [s.next(newMessage(m1.id)), s.next(newMessage(m2.id))]));
    for (const s of [cOnA, cOnB]) {
      expect(s.frames.filter((f) => f.type === 'new_message' && f.message.conversation_id === conv).map((f) => f.message.content)).toEqual(['warm A', 'warm B']);
    }
  });

  it('an instance with no sockets of the members stops routing to a member removed through the other instance', async () => {
    const [a, x, e] = await users(A, 3);
    const conv = await group(a!, [x!, e!]);
    const dm = await direct(a!, e!);
    const [aOnA, eOnA] = await Promise.all([connect(A, a!), connect(A, e!)]);
    // B routes a message: its membership view includes e (and B holds no socket of any member)
    const warm = await send(via(B, x!), conv, 'warm B');
    await eOnA.next(newMessage(warm.id));
    expect((await a!.api.delete(`/api/v1/conversations/${conv}/members/${e!.user.id}`)).status).toBe(204);
    await eOnA.next(ofType('member_removed', conv));
    const removedAt = eOnA.frames.findIndex(ofType('member_removed', conv));
    const after = await send(via(B, x!), conv, 'not for e (routed by B)');
    await aOnA.next(newMessage(after.id));
    const marker = await send(a!, dm, 'marker');
    await eOnA.next(newMessage(marker.id));
    expect(eOnA.frames.slice(removedAt).filter((f) => f.type === 'new_message' && f.message.conversation_id === conv)).toEqual([]);
  });

  it('a token issued by one instance works on the other (HTTP and /ws)', async () => {
    const [a] = await users(A, 1);
    expect((await via(B, a!).api.get('/api/v1/users/me')).status).toBe(200);
    const s = await connect(B, a!, { tokenInQuery: true });
    expect(s.frames[0]).toEqual({ type: 'hello', user_id: a!.user.id });
  });
});

// ---------------------------------------------------------------- no Redis

describe('an instance without REDIS_URL', () => {
  it('works alone: ready, and its sockets get every event', async () => {
    const solo = await startTestServer();
    try {
      expect(await readyz(solo)).toBe(200);
      const [a, b] = await users(solo, 2);
      const conv = await group(a!, [b!]);
      const [sa, sb] = await Promise.all([connect(solo, a!), connect(solo, b!)]);
      sa.send({ type: 'send', request_id: 's1', conversation_id: conv, content: 'alone' });
      const ack = await sa.next((f) => f.type === 'ack' && f.request_id === 's1');
      expect((await sb.next(newMessage(ack.message.id))).message.content).toBe('alone');
      const viaHttp = await send(b!, conv, 'alone over HTTP');
      expect((await sa.next(newMessage(viaHttp.id))).message.content).toBe('alone over HTTP');
      sb.send({ type: 'typing', conversation_id: conv });
      await sa.next(ofType('typing', conv));
    } finally {
      await solo.close();
    }
  });
});

// ---------------------------------------------------------------- Redis restart

describe('Redis restart (throwaway redis-server)', () => {
  let redis: ThrowawayRedis;
  let A: TestServer;
  let B: TestServer;

  beforeAll(async () => {
    redis = await startRedis();
    [A, B] = await startPair(redis.url);
  });

  afterAll(async () => {
    await Promise.all(sockets.map((s) => s.close().catch(() => {})));
    await B?.close();
    await A?.close();
    await redis?.stop();
  });

  it('the first new_message a socket sees in a conversation, when it overtakes its predecessor (Redis briefly stalled), does not break seq order', async () => {
    // Two more instances without send rate limits, so a stalled Redis delays only PUBLISH, not the sends.
    const C = await startTestServer({ env: { REDIS_URL: redis.url, RATE_LIMIT_SEND_PER_MIN: '0' }, database: A.database });
    const D = await startTestServer({ env: { REDIS_URL: redis.url, RATE_LIMIT_SEND_PER_MIN: '0' }, database: A.database });
    try {
      const [a, b] = await users(C, 2);
      const aOnC = await connect(C, a!);
      const bViaD = via(D, b!);
      const warm = await group(a!, [b!]);
      expect(await pollUntilDelivered(bViaD, warm, aOnC, 'D→C'), 'fan-out D→C works').toBe(true);
      const conv = await group(a!, [b!]);
      // Redis holds PUBLISH (not reads) until we unpause it: D's message (seq 1) reaches C only after
      // C's own (seq 2), the first new_message of `conv` that C's hub sees for a. We unpause right
      // after C's send, well within any sensible reorder window.
      await redis.pause(10_000, 'WRITE');
      let fromD: any;
      let fromC: any;
      try {
        fromD = await send(bViaD, conv, 'seq 1, via D, delayed by Redis');
        fromC = await send(a!, conv, 'seq 2, via C, delivered locally');
      } finally {
        await redis.unpause();
      }
      expect([fromD.seq, fromC.seq]).toEqual([1, 2]);
      await Promise.all([aOnC.next(newMessage(fromD.id)), aOnC.next(newMessage(fromC.id))]);
      const seqs = aOnC.frames.filter((f) => f.type === 'new_message' && f.message.conversation_id === conv).map((f) => f.message.seq);
      expect(seqs, 'seqs in arrival order').toEqual([1, 2]);
    } finally {
      await Promise.all([C.close(), D.close()]);
    }
  }, 60_000);

  it('keeps serving local sockets while Redis is down and resumes fan-out A→B after it is back', async () => {
    const [a, b] = await users(A, 2);
    const conv = await group(a!, [b!]);
    const [aOnA, a2OnA, bOnB] = await Promise.all([connect(A, a!), connect(A, a!), connect(B, b!)]);

    // fan-out works before the outage
    const before = await send(a!, conv, 'before the outage');
    expect((await bOnB.next(newMessage(before.id), 10_000)).message.content).toBe('before the outage');

    await redis.kill();
    try {
      await waitUntil(async () => (await readyz(A)) === 503, 10_000, 'A to report not ready');
      // A still serves its own sockets: HTTP send and socket send
      const during = await send(a!, conv, 'during the outage (HTTP)');
      for (const s of [aOnA, a2OnA]) expect((await s.next(newMessage(during.id))).message.content).toBe('during the outage (HTTP)');
      aOnA.send({ type: 'send', request_id: 'down-1', conversation_id: conv, content: 'during the outage (socket)' });
      const ack = await aOnA.next((f) => (f.type === 'ack' || f.type === 'error') && f.request_id === 'down-1', 10_000);
      expect(ack.type, JSON.stringify(ack)).toBe('ack');
      await a2OnA.next(newMessage(ack.message.id));
      // B still serves its own sockets too
      const fromB = await send(via(B, b!), conv, 'B during the outage');
      expect((await bOnB.next(newMessage(fromB.id))).message.content).toBe('B during the outage');
    } finally {
      await redis.start();
    }

    expect(await pollUntilDelivered(a!, conv, bOnB, 'A→B'), 'a message sent through A after Redis came back reached B').toBe(true);
    const steady = await send(a!, conv, 'steady state');
    expect((await bOnB.next(newMessage(steady.id), 5000)).message.content).toBe('steady state');
    // B → A as well
    const back = await send(via(B, b!), conv, 'B to A');
    expect((await aOnA.next(newMessage(back.id), 5000)).message.content).toBe('B to A');
    await waitUntil(async () => (await readyz(A)) === 200 && (await readyz(B)) === 200, 10_000, 'both ready again');
  }, 90_000);

  it('a user who connects to B while Redis is down gets messages sent through A once Redis is back', async () => {
    const [a, b, d] = await users(A, 3);
    const conv = await group(a!, [b!]);
    const convD = await direct(a!, d!);
    const bOnB = await connect(B, b!);
    let dOnB: TestSocket | undefined;
    await redis.kill();
    try {
      await waitUntil(async () => (await readyz(B)) === 503, 10_000, 'B to report not ready');
      dOnB = await connect(B, d!);
      // B serves it locally meanwhile
      const local = await send(via(B, a!), convD, 'local on B');
      expect((await dOnB.next(newMessage(local.id))).message.content).toBe('local on B');
      // a realistic outage lasts a few seconds (several reconnection attempts), not a blink
      await sleep(3000);
    } finally {
      await redis.start();
    }
    // fan-out to the user who was already subscribed resumes...
    expect(await pollUntilDelivered(a!, conv, bOnB, 'A→b'), 'fan-out A→B resumed for a user connected before the outage').toBe(true);
    // ...and must also reach the one who connected during the outage
    expect(await pollUntilDelivered(a!, convD, dOnB!, 'A→d', 8000), 'fan-out A→B reaches a user who connected to B while Redis was down').toBe(true);
  }, 90_000);

  it('an instance started while Redis is down still learns membership changes made elsewhere once Redis is up', async () => {
    await redis.kill();
    let C: TestServer | undefined;
    try {
      try {
        C = await startTestServer({ env: { REDIS_URL: redis.url }, database: A.database });
        await sleep(3000); // several reconnection attempts
      } finally {
        await redis.start();
      }
      await waitUntil(async () => (await readyz(C!)) === 200 && (await readyz(A)) === 200, 15_000, 'all ready');
      const [a, x, e] = await users(A, 3);
      const conv = await group(a!, [x!, e!]);
      const dm = await direct(a!, e!);
      const [aOnA, eOnA] = await Promise.all([connect(A, a!), connect(A, e!)]);
      // C routes a message (its membership view now includes e); wait until C's fan-out works
      expect(await pollUntilDelivered(via(C!, x!), conv, eOnA, 'C→A'), 'fan-out C→A works once Redis is up').toBe(true);
      // A removes e; C must stop routing the conversation to e
      expect((await a!.api.delete(`/api/v1/conversations/${conv}/members/${e!.user.id}`)).status).toBe(204);
      await eOnA.next(ofType('member_removed', conv));
      const removedAt = eOnA.frames.findIndex(ofType('member_removed', conv));
      const after = await send(via(C!, x!), conv, 'not for e (routed by C)');
      await aOnA.next(newMessage(after.id));
      const marker = await send(a!, dm, 'marker');
      await eOnA.next(newMessage(marker.id));
      const leaked = eOnA.frames.slice(removedAt).filter((f) => f.type === 'new_message' && f.message.conversation_id === conv);
      expect(leaked.map((f) => f.message.content), 'messages of a conversation e was removed from').toEqual([]);
    } finally {
      await C?.close();
    }
  }, 90_000);
});

// ---------------------------------------------------------------- Redis Cluster: a master restarts

describe.skipIf(!CLUSTER_URL)('Redis Cluster: a master killed and restarted (throwaway cluster)', () => {
  let cluster: ThrowawayRedisCluster;
  let A: TestServer;
  let B: TestServer;

  beforeAll(async () => {
    cluster = await startRedisCluster();
    [A, B] = await startPair(cluster.url);
  });

  afterAll(async () => {
    await Promise.all(sockets.map((s) => s.close().catch(() => {})));
    await B?.close();
    await A?.close();
    await cluster?.stop();
  });

  it('other shards keep fanning out while /readyz reports the failure; the restarted shard resubscribes and delivers again', async () => {
    const channel = (id: string) => `sotalk:c:{${id}}`;
    const [a, b, d] = await users(A, 3);
    const conv = await group(a!, [b!]);
    const victim = await cluster.ownerOf(channel(conv));
    // a conversation on another shard, and a direct one on the same shard (for a user who connects during the outage)
    let healthy: string | undefined;
    let sameShard: string | undefined;
    for (let i = 0; i < 40 && (!healthy || !sameShard); i++) {
      const id = i % 2 === 0 ? await group(a!, [b!]) : await group(a!, [d!]);
      const owner = await cluster.ownerOf(channel(id));
      if (owner !== victim && i % 2 === 0) healthy ??= id;
      if (owner === victim && i % 2 === 1) sameShard ??= id;
    }
    expect(healthy && sameShard, 'conversations on the other shards and on the victim shard').toBeTruthy();
    const [aOnA, bOnB] = await Promise.all([connect(A, a!), connect(B, b!)]);
    for (const id of [conv, healthy!]) expect(await pollUntilDelivered(a!, id, bOnB, 'before'), 'fan-out A→B before the outage').toBe(true);

    await victim.kill();
    let dOnB: TestSocket | undefined;
    try {
      await waitUntil(async () => (await readyz(A)) === 503 && (await readyz(B)) === 503, 15_000, 'both instances to report not ready');
      const body = (await (await fetch(`${A.baseUrl}/readyz`)).json()) as { checks: Record<string, string> };
      expect(body.checks).toMatchObject({ database: 'ok', redis: 'unavailable' });
      // sharded pub/sub of the shards still up keeps working (one shard per conversation)
      expect(await pollUntilDelivered(a!, healthy!, bOnB, 'healthy shard'), 'fan-out on a healthy shard during the outage').toBe(true);
      // local delivery never depends on Redis
      const local = await send(via(B, b!), conv, 'local on B during the outage');
      expect((await bOnB.next(newMessage(local.id))).message.content).toBe('local on B during the outage');
      dOnB = await connect(B, d!);
    } finally {
      await victim.start();
    }
    await waitUntil(async () => (await cluster.state()) === 'ok', 20_000, 'the cluster to recover');
    expect(await pollUntilDelivered(a!, conv, bOnB, 'victim shard A→B'), 'fan-out resumed on the restarted shard').toBe(true);
    expect(await pollUntilDelivered(via(B, b!), conv, aOnA, 'victim shard B→A'), 'and B→A').toBe(true);
    expect(await pollUntilDelivered(a!, sameShard!, dOnB!, 'subscribed during the outage'), 'a user who connected during the outage').toBe(true);
    await waitUntil(async () => (await readyz(A)) === 200 && (await readyz(B)) === 200, 15_000, 'both ready again');
  }, 120_000);
});

// ---------------------------------------------------------------- Redis Cluster: a replica takes over

describe.skipIf(!CLUSTER_URL)('Redis Cluster: a master fails over to its replica (throwaway cluster with replicas)', () => {
  let cluster: ThrowawayRedisCluster;
  let A: TestServer;
  let B: TestServer;

  beforeAll(async () => {
    cluster = await startRedisCluster({ replicas: 1 });
    [A, B] = await startPair(cluster.url);
  });

  afterAll(async () => {
    await Promise.all(sockets.map((s) => s.close().catch(() => {})));
    await B?.close();
    await A?.close();
    await cluster?.stop();
  });

  it('without restarting anything, the instances subscribe on the promoted replica and delivery resumes both ways', async () => {
    const [a, b] = await users(A, 2);
    const conv = await group(a!, [b!]);
    const [aOnA, bOnB] = await Promise.all([connect(A, a!), connect(B, b!)]);
    expect(await pollUntilDelivered(a!, conv, bOnB, 'before'), 'fan-out A→B before the failover').toBe(true);
    const victim = await cluster.ownerOf(`sotalk:c:{${conv}}`);
    await victim.kill(); // and it stays down: its replica must take over
    const owner = () => cluster.ownerOf(`sotalk:c:{${conv}}`).catch(() => victim); // none while the slot is uncovered
    await waitUntil(async () => (await cluster.state()) === 'ok' && (await owner()) !== victim, 20_000, 'a replica to take over');
    expect(await pollUntilDelivered(a!, conv, bOnB, 'after failover A→B'), 'fan-out A→B through the new master').toBe(true);
    expect(await pollUntilDelivered(via(B, b!), conv, aOnA, 'after failover B→A'), 'and B→A').toBe(true);
    await waitUntil(async () => (await readyz(A)) === 200 && (await readyz(B)) === 200, 15_000, 'both ready on the new master');
  }, 120_000);
});
