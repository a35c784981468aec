// Operations and reliability: rate limits (docs/operations.md: RATE_LIMIT_SEND_PER_MIN counts HTTP and
// socket together; docs/protocol.md: `rate_limited` 429 with Retry-After; RATE_LIMIT_SIGNIN_PER_MIN (proven sign-ins per wallet) and
// RATE_LIMIT_TYPING_PER_MIN of src/config.ts). With REDIS_URL the budget is shared by instances.
// The limits are fixed one-minute windows: each test starts well inside a window so that a window
// boundary cannot reset a budget half-way.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { apiClient } from '../helpers/http.js';
import { signIn, startRedisPair, startTestServer, type SignedInUser, type TestServer } from '../helpers/server.js';
import { openSocket, type TestSocket } from '../helpers/socket.js';
import { awayFromWindowEdge } from '../helpers/rate-window.js';
import { newWallet } from '../helpers/wallet.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
// A test may first wait up to 20 s for a fresh window.
vi.setConfig({ testTimeout: 60_000 });

const LIMITS = { RATE_LIMIT_SEND_PER_MIN: '5', RATE_LIMIT_SIGNIN_PER_MIN: '3', RATE_LIMIT_TYPING_PER_MIN: '3' };

let srv: TestServer;
const sockets: TestSocket[] = [];

beforeAll(async () => {
  srv = await startTestServer({ env: LIMITS });
});

afterAll(async () => {
  await Promise.all(sockets.map((s) => s.close().catch(() => {})));
  await srv?.close();
});

async function connect(s: TestServer, u: SignedInUser): Promise<TestSocket> {
  const sock = await openSocket(s.baseUrl, u.token);
  sockets.push(sock);
  return sock;
}

async function direct(s: TestServer, a: SignedInUser, b: SignedInUser): Promise<string> {
  const res = await apiClient(s.baseUrl, a.token).post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] });
  expect([200, 201]).toContain(res.status);
  return res.body.conversation.id;
}

const httpSend = (s: TestServer, u: SignedInUser, conversationId: string, content: string) =>
  apiClient(s.baseUrl, u.token).post('/api/v1/messages', { conversation_id: conversationId, content });

async function socketSend(sock: TestSocket, requestId: string, conversationId: string, content: string): Promise<any> {
  sock.send({ type: 'send', request_id: requestId, conversation_id: conversationId, content });
  return sock.next((f) => (f.type === 'ack' || f.type === 'error') && f.request_id === requestId);
}

function expectRateLimited(res: { status: number; body: any; headers: Headers }): void {
  expect(res.status, JSON.stringify(res.body)).toBe(429);
  expect(res.body.error.code).toBe('rate_limited');
  const retryAfter = res.headers.get('retry-after');
  expect(retryAfter, 'Retry-After header').toMatch(/^\d+$/);
  expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);
  expect(Number(retryAfter)).toBeLessThanOrEqual(60);
}

describe('send limit (RATE_LIMIT_SEND_PER_MIN=5)', () => {
  it('the 6th HTTP send in a minute is 429 with Retry-After; nothing is stored for it', async () => {
    const [a, b] = await Promise.all([signIn(srv.baseUrl), signIn(srv.baseUrl)]);
    const d = await direct(srv, a, b);
    await awayFromWindowEdge(20_000);
    for (let i = 1; i <= 5; i++) expect((await httpSend(srv, a, d, `http ${i}`)).status).toBe(201);
    expectRateLimited(await httpSend(srv, a, d, 'http 6'));
    expectRateLimited(await httpSend(srv, a, d, 'http 7'));
    const page = await apiClient(srv.baseUrl, a.token).get(`/api/v1/conversations/${d}/messages`);
    expect(page.body.messages.map((m: any) => m.content)).toEqual(['http 1', 'http 2', 'http 3', 'http 4', 'http 5']);
    // the limit is per user: b still sends
    expect((await httpSend(srv, b, d, 'b is not limited')).status).toBe(201);
    // and reads are not limited
    expect(page.status).toBe(200);
  });

  it('HTTP and socket sends share one budget; over the socket the answer is an `error` frame rate_limited', async () => {
    const [a, b] = await Promise.all([signIn(srv.baseUrl), signIn(srv.baseUrl)]);
    const d = await direct(srv, a, b);
    const sock = await connect(srv, a);
    await awayFromWindowEdge(20_000);
    for (let i = 1; i <= 3; i++) expect((await httpSend(srv, a, d, `mixed http ${i}`)).status).toBe(201);
    for (let i = 4; i <= 5; i++) expect((await socketSend(sock, `s${i}`, d, `mixed socket ${i}`)).type).toBe('ack');
    // 6th: over the socket
    const limited = await socketSend(sock, 's6', d, 'mixed socket 6');
    expect(limited).toMatchObject({ type: 'error', request_id: 's6', error: { code: 'rate_limited' } });
    // as HTTP's Retry-After: whole seconds until the window lets it through, within the minute
    expect(Number.isInteger(limited.error.retry_after) && limited.error.retry_after >= 1 && limited.error.retry_after <= 60, JSON.stringify(limited)).toBe(true);
    // 7th: over HTTP
    expectRateLimited(await httpSend(srv, a, d, 'mixed http 7'));
    // the socket stays open and usable
    sock.send({ type: 'ping', request_id: 'still-there' });
    await sock.next((f) => f.type === 'pong' && f.request_id === 'still-there');
  });

  it('the budget starts with the socket too: 5 socket sends, then HTTP is 429', async () => {
    const [a, b] = await Promise.all([signIn(srv.baseUrl), signIn(srv.baseUrl)]);
    const d = await direct(srv, a, b);
    const sock = await connect(srv, a);
    await awayFromWindowEdge(20_000);
    for (let i = 1; i <= 5; i++) expect((await socketSend(sock, `t${i}`, d, `socket ${i}`)).type).toBe('ack');
    expectRateLimited(await httpSend(srv, a, d, 'http after 5 socket sends'));
  });

  it('429s are counted in /metrics', async () => {
    const metrics = await (await fetch(`${srv.baseUrl}/metrics`)).text();
    expect(metrics).toMatch(/^sotalk_http_requests_total\{route="\/api\/v1\/messages",method="POST",status="429"\} [1-9]/m);
  });
});

describe('sign-in limit (RATE_LIMIT_SIGNIN_PER_MIN=3)', () => {
  it("a wallet's 4th proven sign-in in a minute is 429 with Retry-After; unproven challenges do not count; other wallets are not affected", async () => {
    const anon = apiClient(srv.baseUrl);
    const w = newWallet();
    await awayFromWindowEdge(20_000);
    // challenges nobody answers (anyone can ask for them) spend nothing of the wallet's budget
    for (let i = 0; i < 5; i++) expect((await anon.post('/api/v1/auth/challenge', { wallet: w.address })).status).toBe(200);
    for (let i = 0; i < 3; i++) await signIn(srv.baseUrl, w);
    const c = await anon.post('/api/v1/auth/challenge', { wallet: w.address });
    expect(c.status).toBe(200);
    expectRateLimited(await anon.post('/api/v1/auth/verify', { wallet: w.address, nonce: c.body.nonce, signature: w.sign(c.body.message) }));
    // another wallet signs in normally
    await signIn(srv.baseUrl);
  });
});

describe('typing limit (RATE_LIMIT_TYPING_PER_MIN=3)', () => {
  it('the 4th typing frame in a minute gets an `error` rate_limited; the others reach the other member', async () => {
    const [a, b] = await Promise.all([signIn(srv.baseUrl), signIn(srv.baseUrl)]);
    const d = await direct(srv, a, b);
    const [sa, sb] = await Promise.all([connect(srv, a), connect(srv, b)]);
    await awayFromWindowEdge(20_000);
    for (let i = 1; i <= 3; i++) sa.send({ type: 'typing', request_id: `ty${i}`, conversation_id: d });
    sa.send({ type: 'typing', request_id: 'ty4', conversation_id: d });
    const err = await sa.next((f) => f.request_id === 'ty4');
    expect(err).toMatchObject({ type: 'error', error: { code: 'rate_limited', retry_after: expect.any(Number) } });
    await sleep(300);
    expect(sb.frames.filter((f) => f.type === 'typing' && f.conversation_id === d)).toHaveLength(3);
    expect(sa.frames.filter((f) => f.type === 'error' && ['ty1', 'ty2', 'ty3'].includes(f.request_id))).toEqual([]);
    // typing does not eat the send budget
    expect((await httpSend(srv, a, d, 'send after typing')).status).toBe(201);
  });
});

describe('two instances with Redis share the budget', () => {
  let A: TestServer;
  let B: TestServer;
  beforeAll(async () => {
    [A, B] = await startRedisPair(LIMITS);
  });
  afterAll(async () => {
    await B?.close();
    await A?.close();
  });

  it('3 sends through A and 2 through B use the budget; the 6th is 429 on either instance', async () => {
    const [a, b] = await Promise.all([signIn(A.baseUrl), signIn(A.baseUrl)]);
    const d = await direct(A, a, b);
    const sockOnB = await connect(B, a);
    await awayFromWindowEdge(20_000);
    for (let i = 1; i <= 3; i++) expect((await httpSend(A, a, d, `A ${i}`)).status).toBe(201);
    expect((await httpSend(B, a, d, 'B 4')).status).toBe(201);
    expect((await socketSend(sockOnB, 'b5', d, 'B socket 5')).type).toBe('ack');
    expectRateLimited(await httpSend(A, a, d, 'A 6'));
    expectRateLimited(await httpSend(B, a, d, 'B 7'));
    expect(await socketSend(sockOnB, 'b8', d, 'B socket 8')).toMatchObject({ type: 'error', error: { code: 'rate_limited' } });
  });

  it('proven sign-ins of a wallet are shared too', async () => {
    const w = newWallet();
    await awayFromWindowEdge(20_000);
    await signIn(A.baseUrl, w);
    await signIn(B.baseUrl, w);
    await signIn(A.baseUrl, w);
    const c = await apiClient(B.baseUrl).post('/api/v1/auth/challenge', { wallet: w.address });
    expectRateLimited(await apiClient(B.baseUrl).post('/api/v1/auth/verify', { wallet: w.address, nonce: c.body.nonce, signature: w.sign(c.body.message) }));
  });
});
