// Abuse resistance (issue "Abuse resistance and exact semantics", items 2 and 3):
// - sign-in: unauthenticated requests are limited per client address; a wallet's own budget
//   counts only sign-ins that proved the key, so nobody else can lock a wallet out;
// - edits, deletes, rotate-key, conversation creation, member changes, receipts and searches
//   each have a per-user limit (429 with Retry-After), shared by instances through Redis.
// Limits are fixed one-minute windows: each test starts well inside a window (freshWindow).
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { apiClient, type ApiResponse } from '../helpers/http.js';
import { signIn, startRedisPair, startTestServer, type SignedInUser, type TestServer } from '../helpers/server.js';
import { openSocket, type TestSocket } from '../helpers/socket.js';
import { awayFromWindowEdge } from '../helpers/rate-window.js';
import { newWallet, type TestWallet } from '../helpers/wallet.js';

vi.setConfig({ testTimeout: 60_000 });

function expectRateLimited(res: ApiResponse): void {
  expect(res.status, JSON.stringify(res.body)).toBe(429);
  expect(res.body.error.code).toBe('rate_limited');
  expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
  expect(Number(res.headers.get('retry-after'))).toBeLessThanOrEqual(60);
}

const from = (address: string) => ({ 'content-type': 'application/json', 'x-forwarded-for': address });

/** A challenge (and, given a wallet that can sign, a verification) as seen coming from `address`. */
async function challenge(baseUrl: string, wallet: string, address: string): Promise<ApiResponse> {
  return apiClient(baseUrl).raw('POST', '/api/v1/auth/challenge', { body: JSON.stringify({ wallet }), headers: from(address) });
}

async function signInFrom(baseUrl: string, wallet: TestWallet, address: string): Promise<ApiResponse> {
  const c = await challenge(baseUrl, wallet.address, address);
  if (c.status !== 200) return c;
  const body = { wallet: wallet.address, nonce: c.body.nonce, signature: wallet.sign(c.body.message) };
  return apiClient(baseUrl).raw('POST', '/api/v1/auth/verify', { body: JSON.stringify(body), headers: from(address) });
}

describe('sign-in cannot be locked out by others', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({
      env: { TRUST_PROXY_HOPS: '1', RATE_LIMIT_SIGNIN_PER_MIN: '3', RATE_LIMIT_SIGNIN_PER_ADDRESS_PER_MIN: '4' },
    });
  });
  afterAll(async () => {
    await srv?.close();
  });

  it("challenges for a victim's wallet from many addresses leave the victim's own sign-in intact", async () => {
    await awayFromWindowEdge(20_000);
    const victim = newWallet();
    // five attacking addresses spend their whole budget on the victim's wallet
    for (let a = 1; a <= 5; a++) {
      for (let i = 0; i < 4; i++) expect((await challenge(srv.baseUrl, victim.address, `10.0.0.${a}`)).status).toBe(200);
      expectRateLimited(await challenge(srv.baseUrl, victim.address, `10.0.0.${a}`));
    }
    // and fail verifications with nonces of their own challenges (no key: the signature is wrong)
    const other = newWallet();
    const c = await challenge(srv.baseUrl, victim.address, '10.0.1.1');
    const bad = { wallet: victim.address, nonce: c.body.nonce, signature: other.sign(c.body.message) };
    expect((await apiClient(srv.baseUrl).raw('POST', '/api/v1/auth/verify', { body: JSON.stringify(bad), headers: from('10.0.1.1') })).status).toBe(401);
    // the victim, from its own address, signs in three times (its limit), the fourth is refused
    for (let i = 0; i < 3; i++) {
      const res = await signInFrom(srv.baseUrl, victim, `192.0.2.${i + 1}`);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(res.body.token).toEqual(expect.any(String));
    }
    expectRateLimited(await signInFrom(srv.baseUrl, victim, '192.0.2.9'));
  });

  it('X-Forwarded-For is believed only as far as TRUST_PROXY_HOPS: entries a client adds on the left do not count', async () => {
    await awayFromWindowEdge(20_000);
    const w = newWallet().address;
    // the trusted proxy appends the real address (10.9.9.9); the client's own entries vary
    for (let i = 0; i < 4; i++) expect((await challenge(srv.baseUrl, w, `1.1.1.${i}, 10.9.9.9`)).status).toBe(200);
    expectRateLimited(await challenge(srv.baseUrl, w, `1.1.1.99, 10.9.9.9`));
  });

  it('without TRUST_PROXY_HOPS the header is ignored: the peer address is limited', async () => {
    const direct = await startTestServer({ env: { RATE_LIMIT_SIGNIN_PER_ADDRESS_PER_MIN: '4' } });
    try {
      await awayFromWindowEdge(20_000);
      for (let i = 0; i < 4; i++) expect((await challenge(direct.baseUrl, newWallet().address, `10.1.0.${i}`)).status).toBe(200);
      expectRateLimited(await challenge(direct.baseUrl, newWallet().address, '10.1.0.99'));
    } finally {
      await direct.close();
    }
  });
});

const WRITE_LIMITS = {
  RATE_LIMIT_EDIT_PER_MIN: '2',
  RATE_LIMIT_DELETE_PER_MIN: '2',
  RATE_LIMIT_ROTATE_KEY_PER_MIN: '2',
  RATE_LIMIT_CREATE_CONVERSATION_PER_MIN: '3',
  RATE_LIMIT_MEMBER_CHANGE_PER_MIN: '2',
  RATE_LIMIT_RECEIPT_PER_MIN: '2',
  RATE_LIMIT_SEARCH_PER_MIN: '2',
};

describe('write paths and search have per-user limits', () => {
  let srv: TestServer;
  const sockets: TestSocket[] = [];
  beforeAll(async () => {
    srv = await startTestServer({ env: WRITE_LIMITS });
  });
  afterAll(async () => {
    await Promise.all(sockets.map((s) => s.close().catch(() => {})));
    await srv?.close();
  });

  const group = async (u: SignedInUser, members: SignedInUser[] = []) => {
    const res = await u.api.post('/api/v1/conversations', { type: 'group', title: 'g', member_ids: members.map((m) => m.user.id) });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body.conversation.id as string;
  };
  const send = async (u: SignedInUser, conversationId: string, content = 'hello') => {
    const res = await u.api.post('/api/v1/messages', { conversation_id: conversationId, content });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body.message;
  };

  it('edits: the third in a minute is 429; another user is unaffected', async () => {
    const [a, b] = await Promise.all([signIn(srv.baseUrl), signIn(srv.baseUrl)]);
    await awayFromWindowEdge(20_000);
    const g = await group(a, [b]);
    const m = await send(a, g);
    for (let i = 0; i < 2; i++) expect((await a.api.patch(`/api/v1/messages/${m.id}`, { content: `edit ${i}` })).status).toBe(200);
    expectRateLimited(await a.api.patch(`/api/v1/messages/${m.id}`, { content: 'edit 3' }));
    const mb = await send(b, g);
    expect((await b.api.patch(`/api/v1/messages/${mb.id}`, { content: 'b edits' })).status).toBe(200);
    // the refused edit changed nothing
    const page = await a.api.get(`/api/v1/conversations/${g}/messages`);
    expect(page.body.messages.find((x: { id: string }) => x.id === m.id).content).toBe('edit 1');
  });

  it('deletes: the third in a minute is 429', async () => {
    const a = await signIn(srv.baseUrl);
    await awayFromWindowEdge(20_000);
    const g = await group(a);
    const ms = [await send(a, g), await send(a, g), await send(a, g)];
    for (const m of ms.slice(0, 2)) expect((await a.api.delete(`/api/v1/messages/${m.id}`)).status).toBe(200);
    expectRateLimited(await a.api.delete(`/api/v1/messages/${ms[2].id}`));
  });

  it('rotate-key: the third in a minute is 429 and the version does not move', async () => {
    const a = await signIn(srv.baseUrl);
    await awayFromWindowEdge(20_000);
    const g = await group(a);
    for (let i = 0; i < 2; i++) expect((await a.api.post(`/api/v1/conversations/${g}/rotate-key`)).status).toBe(200);
    expectRateLimited(await a.api.post(`/api/v1/conversations/${g}/rotate-key`));
    expect((await a.api.get(`/api/v1/conversations/${g}`)).body.conversation.current_key_version).toBe(3);
  });

  it('conversation creation: groups and new direct conversations count, reaching an existing one does not', async () => {
    const [a, b, c, d] = await Promise.all([signIn(srv.baseUrl), signIn(srv.baseUrl), signIn(srv.baseUrl), signIn(srv.baseUrl)]);
    await awayFromWindowEdge(20_000);
    await group(a);
    const direct = await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] });
    expect(direct.status).toBe(201);
    // a send by recipient_id creates the third
    expect((await a.api.post('/api/v1/messages', { recipient_id: c.user.id, content: 'hi c' })).status).toBe(201);
    // existing ones stay reachable
    expect((await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] })).status).toBe(200);
    expect((await a.api.post('/api/v1/messages', { recipient_id: c.user.id, content: 'again' })).status).toBe(201);
    // new ones do not
    expectRateLimited(await a.api.post('/api/v1/conversations', { type: 'group', title: 'x', member_ids: [] }));
    expectRateLimited(await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [d.user.id] }));
    expectRateLimited(await a.api.post('/api/v1/messages', { recipient_id: d.user.id, content: 'hi d' }));
  });

  it('member changes: adds and removes share one budget', async () => {
    const [a, b, c] = await Promise.all([signIn(srv.baseUrl), signIn(srv.baseUrl), signIn(srv.baseUrl)]);
    await awayFromWindowEdge(20_000);
    const g = await group(a);
    expect((await a.api.post(`/api/v1/conversations/${g}/members`, { user_id: b.user.id })).status).toBe(200);
    expect((await a.api.delete(`/api/v1/conversations/${g}/members/${b.user.id}`)).status).toBe(204);
    expectRateLimited(await a.api.post(`/api/v1/conversations/${g}/members`, { user_id: c.user.id }));
  });

  it('receipts: HTTP and socket share one budget; a refused socket receipt is an error frame', async () => {
    const [a, b] = await Promise.all([signIn(srv.baseUrl), signIn(srv.baseUrl)]);
    await awayFromWindowEdge(20_000);
    const g = await group(a, [b]);
    await send(a, g);
    await send(a, g);
    expect((await b.api.post(`/api/v1/conversations/${g}/read`, { seq: 1 })).status).toBe(200);
    const sock = await openSocket(srv.baseUrl, b.token);
    sockets.push(sock);
    sock.send({ type: 'read', request_id: 'r2', conversation_id: g, seq: 2 });
    sock.send({ type: 'read', request_id: 'r3', conversation_id: g, seq: 2 });
    const err = await sock.next((f) => f.type === 'error' && f.request_id === 'r3');
    expect(err.error.code).toBe('rate_limited');
    expect(sock.frames.some((f) => f.type === 'error' && f.request_id === 'r2')).toBe(false);
    expectRateLimited(await b.api.post(`/api/v1/conversations/${g}/read`, { seq: 2 }));
  });

  it('search: the third in a minute is 429', async () => {
    const a = await signIn(srv.baseUrl);
    await awayFromWindowEdge(20_000);
    for (let i = 0; i < 2; i++) expect((await a.api.get('/api/v1/search?q=hello')).status).toBe(200);
    expectRateLimited(await a.api.get('/api/v1/search?q=hello'));
  });
});

describe('with Redis, two instances share each budget', () => {
  let A: TestServer;
  let B: TestServer;
  beforeAll(async () => {
    [A, B] = await startRedisPair(WRITE_LIMITS);
  });
  afterAll(async () => {
    await B?.close();
    await A?.close();
  });

  it('one rotate-key on A and one on B spend the budget: the third is 429 on either', async () => {
    const a = await signIn(A.baseUrl);
    await awayFromWindowEdge(20_000);
    const created = await a.api.post('/api/v1/conversations', { type: 'group', title: 'g', member_ids: [] });
    const g = created.body.conversation.id;
    const onB = apiClient(B.baseUrl, a.token);
    expect((await a.api.post(`/api/v1/conversations/${g}/rotate-key`)).status).toBe(200);
    expect((await onB.post(`/api/v1/conversations/${g}/rotate-key`)).status).toBe(200);
    expectRateLimited(await onB.post(`/api/v1/conversations/${g}/rotate-key`));
    expectRateLimited(await a.api.post(`/api/v1/conversations/${g}/rotate-key`));
  });
});
