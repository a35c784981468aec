// Operations and reliability: Redis stopped and started, or stalled, under two instances (on a
// throwaway redis-server, so the shared Redis is never disturbed). While Redis is down an instance
// keeps serving HTTP and its own sockets, fast; /readyz reports 503 (Redis is configured and down);
// once it is back, /readyz is 200 and fan-out between the instances resumes by itself.
// (test/integration/realtime-cluster.test.ts covers event routing across a restart in more depth.)
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, type ThrowawayRedis } from '../helpers/redis-server.js';
import { signIn, startTestServer, type SignedInUser, type TestServer } from '../helpers/server.js';
import { openSocket, type TestSocket } from '../helpers/socket.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const FAST_MS = 4000;

let redis: ThrowawayRedis;
let A: TestServer;
let B: TestServer;
let a: SignedInUser;
let b: SignedInUser;
let conv: string;
const sockets: TestSocket[] = [];

beforeAll(async () => {
  redis = await startRedis();
  A = await startTestServer({ env: { REDIS_URL: redis.url } });
  B = await startTestServer({ env: { REDIS_URL: redis.url }, database: A.database });
  [a, b] = await Promise.all([signIn(A.baseUrl), signIn(A.baseUrl)]);
  const res = await a.api.post('/api/v1/conversations', { type: 'group', title: 'ops redis', member_ids: [b.user.id] });
  conv = res.body.conversation.id;
}, 60_000);

afterAll(async () => {
  await Promise.all(sockets.map((s) => s.close().catch(() => {})));
  await B?.close();
  await A?.close();
  await redis?.stop();
});

async function connect(s: TestServer, u: SignedInUser): Promise<TestSocket> {
  const sock = await openSocket(s.baseUrl, u.token);
  sockets.push(sock);
  return sock;
}

async function readyz(s: TestServer): Promise<{ status: number; body: any; ms: number }> {
  const t = Date.now();
  const res = await fetch(`${s.baseUrl}/readyz`);
  return { status: res.status, body: await res.json(), ms: Date.now() - t };
}

async function waitUntil(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

/** An HTTP send through instance `s`, timed. */
async function sendVia(s: TestServer, u: SignedInUser, content: string): Promise<{ status: number; body: any; ms: number }> {
  const t = Date.now();
  const res = await fetch(`${s.baseUrl}/api/v1/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${u.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ conversation_id: conv, content }),
  });
  return { status: res.status, body: await res.json(), ms: Date.now() - t };
}

const newMessage = (id: string) => (f: any) => f.type === 'new_message' && f.message?.id === id;

/** Sends through `from` every 200 ms until one reaches `sock` (fan-out resumed); false after the timeout. */
async function fanOutWorks(from: TestServer, sender: SignedInUser, sock: TestSocket, label: string, timeoutMs = 15_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  const ids = new Set<string>();
  for (let i = 0; Date.now() < deadline; i++) {
    const r = await sendVia(from, sender, `${label} probe ${i}`);
    if (r.status === 201) ids.add(r.body.message.id);
    await sleep(200);
    if (sock.frames.some((f) => f.type === 'new_message' && ids.has(f.message.id))) return true;
  }
  return false;
}

function counter(metrics: string, re: RegExp): number {
  return Number(re.exec(metrics)?.[1] ?? 0);
}

describe('Redis stopped and started', () => {
  it('while down: HTTP and local sockets keep working, fast; /readyz 503 naming redis; afterwards 200 and fan-out resumes', async () => {
    const aOnA = await connect(A, a);
    const bOnA = await connect(A, b);
    const bOnB = await connect(B, b);
    const aOnB = await connect(B, a);
    expect(await fanOutWorks(A, a, bOnB, 'before'), 'fan-out A→B before the outage').toBe(true);
    expect((await readyz(A)).status).toBe(200);

    await redis.kill();
    try {
      await waitUntil(async () => (await readyz(A)).status === 503, 10_000, 'A to report not ready');
      const ready = await readyz(A);
      expect(ready.body.checks).toEqual({ database: 'ok', redis: 'unavailable' });
      expect(ready.ms).toBeLessThan(FAST_MS);
      await waitUntil(async () => (await readyz(B)).status === 503, 10_000, 'B to report not ready');
      expect((await fetch(`${A.baseUrl}/healthz`)).status).toBe(200);

      // HTTP sends through A: 201, fast, and delivered to every local socket of the members.
      for (let i = 0; i < 10; i++) {
        const r = await sendVia(A, a, `during the outage ${i}`);
        expect(r.status, JSON.stringify(r.body)).toBe(201);
        expect(r.ms).toBeLessThan(FAST_MS);
        await aOnA.next(newMessage(r.body.message.id));
        await bOnA.next(newMessage(r.body.message.id));
      }
      // A socket send on A: ack, and the other member's local socket gets it.
      aOnA.send({ type: 'send', request_id: 'down-1', conversation_id: conv, content: 'socket during the outage' });
      const ack = await aOnA.next((f) => (f.type === 'ack' || f.type === 'error') && f.request_id === 'down-1', FAST_MS);
      expect(ack.type, JSON.stringify(ack)).toBe('ack');
      await bOnA.next(newMessage(ack.message.id));
      // Reads and receipts work too; B serves its own sockets.
      expect((await fetch(`${A.baseUrl}/api/v1/conversations/${conv}/messages`, { headers: { authorization: `Bearer ${b.token}` } })).status).toBe(200);
      const fromB = await sendVia(B, b, 'B during the outage');
      expect(fromB.status).toBe(201);
      await bOnB.next(newMessage(fromB.body.message.id));
      await aOnB.next(newMessage(fromB.body.message.id));
      // Operators can see it.
      const metrics = await (await fetch(`${A.baseUrl}/metrics`)).text();
      expect(counter(metrics, /^sotalk_dependency_errors_total\{dependency="redis"\} (\S+)$/m)).toBeGreaterThan(0);
      const fiveHundreds = (metrics.match(/^sotalk_http_requests_total\{[^}]*status="5\d\d"\}.*$/gm) ?? []).filter((l) => !l.includes('route="/readyz"'));
      expect(fiveHundreds).toEqual([]);
    } finally {
      await redis.start();
    }

    await waitUntil(async () => (await readyz(A)).status === 200 && (await readyz(B)).status === 200, 20_000, 'both instances ready again');
    expect(await fanOutWorks(A, a, bOnB, 'after A→B'), 'fan-out A→B after Redis is back').toBe(true);
    expect(await fanOutWorks(B, b, aOnA, 'after B→A'), 'fan-out B→A after Redis is back').toBe(true);
  }, 120_000);

  it('a second outage right after the first is handled the same (reconnection is not one-shot)', async () => {
    const bOnB = await connect(B, b);
    await redis.kill();
    try {
      await waitUntil(async () => (await readyz(A)).status === 503, 10_000, 'A to report not ready');
      const r = await sendVia(A, a, 'second outage');
      expect(r.status).toBe(201);
      await sleep(2500); // a few reconnection attempts
    } finally {
      await redis.start();
    }
    await waitUntil(async () => (await readyz(A)).status === 200 && (await readyz(B)).status === 200, 20_000, 'both ready again');
    expect(await fanOutWorks(A, a, bOnB, 'after the second outage')).toBe(true);
  }, 90_000);
});

describe('Redis stalled (CLIENT PAUSE ALL)', () => {
  it('sends and /readyz still answer within a bound while Redis accepts connections but answers nothing', async () => {
    const aOnA = await connect(A, a);
    expect((await readyz(A)).status).toBe(200);
    await redis.pause(8000, 'ALL');
    const t = Date.now();
    try {
      const [ready, send] = await Promise.all([readyz(A), sendVia(A, a, 'while Redis is stalled')]);
      expect(ready.ms, '/readyz answered within its probe timeout').toBeLessThan(FAST_MS);
      expect(ready.status).toBe(503);
      expect(send.ms, `a send while Redis is stalled answered ${send.status} after ${send.ms} ms (the pause lasts 8 s)`).toBeLessThan(FAST_MS);
      expect(send.status).toBe(201);
      await aOnA.next(newMessage(send.body.message.id));
      console.log(`[ops] Redis stalled: /readyz ${ready.status} in ${ready.ms} ms, send ${send.status} in ${send.ms} ms`);
    } finally {
      // the pause ends by itself; wait it out so later tests start clean
      await sleep(Math.max(0, 8000 - (Date.now() - t)));
    }
    await waitUntil(async () => (await readyz(A)).status === 200, 10_000, 'ready after the stall');
  }, 60_000);
});
