// Integration tests: wallet sign-in (challenge / verify), bearer tokens, users endpoints (docs/protocol.md).
import { randomBytes, randomUUID } from 'node:crypto';
import bs58 from 'bs58';
import { createSigner } from 'fast-jwt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { apiClient, type ApiResponse } from '../helpers/http.js';
import { signIn, startTestServer, type TestServer } from '../helpers/server.js';
import { newWallet } from '../helpers/wallet.js';

// ---------------------------------------------------------------- local helpers

const TOKEN_TTL_S = 3600;
const CHALLENGE_TTL_MS = 5 * 60 * 1000;

/** A frozen, steerable service clock: BASE + offset. */
const BASE_MS = Date.UTC(2031, 4, 6, 10, 20, 30, 456);
let offsetMs = 0;
const clock = () => new Date(BASE_MS + offsetMs);

function expectError(res: ApiResponse, status: number, code: string, field?: string | null): void {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.body?.error?.code, JSON.stringify(res.body)).toBe(code);
  expect(typeof res.body.error.message).toBe('string');
  expect(res.body.error.message.length).toBeGreaterThan(0);
  if (field === null) expect(res.body.error.field).toBeUndefined();
  else if (field !== undefined) expect(res.body.error.field).toBe(field);
}

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

let srv: TestServer;
let anon: ReturnType<typeof apiClient>;

beforeAll(async () => {
  srv = await startTestServer({ env: { AUTH_TOKEN_TTL_S: String(TOKEN_TTL_S) }, deps: { clock } });
  anon = apiClient(srv.baseUrl);
});

afterAll(async () => {
  await srv?.close();
});

afterEach(() => {
  offsetMs = 0;
});

async function challenge(wallet: string) {
  const res = await anon.post('/api/v1/auth/challenge', { wallet });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body as { nonce: string; message: string; expires_at: string };
}

// ---------------------------------------------------------------- challenge

describe('POST /auth/challenge', () => {
  it('returns a nonce and a message containing the wallet and the nonce, valid 5 minutes', async () => {
    const w = newWallet();
    const res = await anon.post('/api/v1/auth/challenge', { wallet: w.address });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(Object.keys(res.body).sort()).toEqual(['expires_at', 'message', 'nonce']);
    expect(typeof res.body.nonce).toBe('string');
    expect(res.body.nonce.length).toBeGreaterThan(0);
    expect(typeof res.body.message).toBe('string');
    expect(res.body.message).toContain(w.address);
    expect(res.body.message).toContain(res.body.nonce);
    expect(res.body.expires_at).toMatch(ISO_UTC);
    // the clock is frozen: exactly five minutes after "now"
    expect(res.body.expires_at).toBe(new Date(BASE_MS + CHALLENGE_TTL_MS).toISOString());
  });

  it('issues a different nonce for every challenge of the same wallet', async () => {
    const w = newWallet();
    const nonces = new Set<string>();
    for (let i = 0; i < 5; i++) nonces.add((await challenge(w.address)).nonce);
    expect(nonces.size).toBe(5);
  });

  it('stores the challenge (nonce, wallet, expiry) in auth_challenges', async () => {
    const w = newWallet();
    const c = await challenge(w.address);
    const { rows } = await srv.pool.query('SELECT wallet, expires_at, used_at FROM auth_challenges WHERE nonce = $1', [c.nonce]);
    expect(rows).toHaveLength(1);
    expect(rows[0].wallet).toBe(w.address);
    expect(rows[0].used_at).toBeNull();
    expect(new Date(rows[0].expires_at).toISOString()).toBe(c.expires_at);
  });

  it.each([
    ['not base58 (0, O, I, l are not in the alphabet)', '0OIl0OIl0OIl0OIl0OIl0OIl0OIl0OIl'],
    ['base58 of 31 bytes', bs58.encode(randomBytes(31))],
    ['base58 of 33 bytes', bs58.encode(randomBytes(33))],
    ['empty string', ''],
    ['a hex string', randomBytes(32).toString('hex')],
  ])('rejects a bad wallet (%s) with 400 field wallet', async (_name, wallet) => {
    expectError(await anon.post('/api/v1/auth/challenge', { wallet }), 400, 'invalid_request', 'wallet');
  });

  it('rejects a missing or non-string wallet with 400 field wallet', async () => {
    expectError(await anon.post('/api/v1/auth/challenge', {}), 400, 'invalid_request', 'wallet');
    expectError(await anon.post('/api/v1/auth/challenge', { wallet: 12345 }), 400, 'invalid_request', 'wallet');
    expectError(await anon.post('/api/v1/auth/challenge', { wallet: [newWallet().address] }), 400, 'invalid_request', 'wallet');
  });
});

// ---------------------------------------------------------------- verify

describe('POST /auth/verify', () => {
  it('signs a new wallet in: token, Bearer, expires_at = now + AUTH_TOKEN_TTL_S, user created', async () => {
    const w = newWallet();
    const c = await challenge(w.address);
    const res = await anon.post('/api/v1/auth/verify', { wallet: w.address, nonce: c.nonce, signature: w.sign(c.message) });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(Object.keys(res.body).sort()).toEqual(['expires_at', 'token', 'token_type', 'user']);
    expect(res.body.token_type).toBe('Bearer');
    expect(typeof res.body.token).toBe('string');
    expect(res.body.expires_at).toBe(new Date((Math.floor(BASE_MS / 1000) + TOKEN_TTL_S) * 1000).toISOString());
    const u = res.body.user;
    expect(Object.keys(u).sort()).toEqual(['created_at', 'display_name', 'id', 'wallet']);
    expect(u.wallet).toBe(w.address);
    expect(u.display_name).toBeNull();
    expect(u.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(u.created_at).toMatch(ISO_UTC);
    const { rows } = await srv.pool.query('SELECT id FROM users WHERE wallet = $1', [w.address]);
    expect(rows).toEqual([{ id: u.id }]);
    // the token works
    const me = await apiClient(srv.baseUrl, res.body.token).get('/api/v1/users/me');
    expect(me.status).toBe(200);
    expect(me.body.user.id).toBe(u.id);
  });

  it('a second sign-in of the same wallet returns the same user (no duplicate)', async () => {
    const w = newWallet();
    const first = await signIn(srv.baseUrl, w);
    const second = await signIn(srv.baseUrl, w);
    expect(second.user.id).toBe(first.user.id);
    const { rows } = await srv.pool.query('SELECT count(*)::int AS n FROM users WHERE wallet = $1', [w.address]);
    expect(rows[0].n).toBe(1);
  });

  it('marks the nonce used', async () => {
    const w = newWallet();
    const c = await challenge(w.address);
    await anon.post('/api/v1/auth/verify', { wallet: w.address, nonce: c.nonce, signature: w.sign(c.message) });
    const { rows } = await srv.pool.query('SELECT used_at FROM auth_challenges WHERE nonce = $1', [c.nonce]);
    expect(rows[0].used_at).not.toBeNull();
  });

  it('wrong signature (another key) → 401 and no user is created', async () => {
    const w = newWallet();
    const other = newWallet();
    const c = await challenge(w.address);
    const res = await anon.post('/api/v1/auth/verify', { wallet: w.address, nonce: c.nonce, signature: other.sign(c.message) });
    expectError(res, 401, 'unauthorized');
    const { rows } = await srv.pool.query('SELECT count(*)::int AS n FROM users WHERE wallet = $1', [w.address]);
    expect(rows[0].n).toBe(0);
  });

  it('signature of a different message by the right key → 401', async () => {
    const w = newWallet();
    const c = await challenge(w.address);
    const res = await anon.post('/api/v1/auth/verify', { wallet: w.address, nonce: c.nonce, signature: w.sign(c.message + ' ') });
    expectError(res, 401, 'unauthorized');
  });

  it('a nonce issued to one wallet cannot sign in another wallet → 401', async () => {
    const w = newWallet();
    const other = newWallet();
    const c = await challenge(w.address);
    const res = await anon.post('/api/v1/auth/verify', { wallet: other.address, nonce: c.nonce, signature: other.sign(c.message) });
    expectError(res, 401, 'unauthorized');
  });

  it('an unknown nonce → 401', async () => {
    const w = newWallet();
    const res = await anon.post('/api/v1/auth/verify', { wallet: w.address, nonce: bs58.encode(randomBytes(24)), signature: w.sign('anything') });
    expectError(res, 401, 'unauthorized');
  });

  it('a reused nonce → 401 (single use)', async () => {
    const w = newWallet();
    const c = await challenge(w.address);
    const body = { wallet: w.address, nonce: c.nonce, signature: w.sign(c.message) };
    expect((await anon.post('/api/v1/auth/verify', body)).status).toBe(200);
    expectError(await anon.post('/api/v1/auth/verify', body), 401, 'unauthorized');
  });

  it('a nonce is used up by a failed attempt: the right signature afterwards is also 401', async () => {
    const w = newWallet();
    const c = await challenge(w.address);
    expectError(
      await anon.post('/api/v1/auth/verify', { wallet: w.address, nonce: c.nonce, signature: newWallet().sign(c.message) }),
      401,
      'unauthorized',
    );
    expectError(
      await anon.post('/api/v1/auth/verify', { wallet: w.address, nonce: c.nonce, signature: w.sign(c.message) }),
      401,
      'unauthorized',
    );
  });

  it('concurrent verifies of one nonce: exactly one succeeds', async () => {
    const w = newWallet();
    const c = await challenge(w.address);
    const body = { wallet: w.address, nonce: c.nonce, signature: w.sign(c.message) };
    const results = await Promise.all(Array.from({ length: 8 }, () => anon.post('/api/v1/auth/verify', body)));
    expect(results.map((r) => r.status).sort()).toEqual([200, 401, 401, 401, 401, 401, 401, 401]);
  });

  it('a nonce is still valid just before 5 minutes (clock + 4m59s → 200)', async () => {
    const w = newWallet();
    const c = await challenge(w.address);
    offsetMs = CHALLENGE_TTL_MS - 1000;
    const res = await anon.post('/api/v1/auth/verify', { wallet: w.address, nonce: c.nonce, signature: w.sign(c.message) });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
  });

  it('an expired nonce → 401 (clock advanced past 5 minutes)', async () => {
    const w = newWallet();
    const c = await challenge(w.address);
    offsetMs = CHALLENGE_TTL_MS + 1000;
    const res = await anon.post('/api/v1/auth/verify', { wallet: w.address, nonce: c.nonce, signature: w.sign(c.message) });
    expectError(res, 401, 'unauthorized');
  });

  it('a bad wallet in verify → 400 field wallet', async () => {
    const w = newWallet();
    const c = await challenge(w.address);
    expectError(
      await anon.post('/api/v1/auth/verify', { wallet: 'xyz', nonce: c.nonce, signature: w.sign(c.message) }),
      400,
      'invalid_request',
      'wallet',
    );
  });

  it('missing nonce / signature → 400 naming the field', async () => {
    const w = newWallet();
    const c = await challenge(w.address);
    expectError(await anon.post('/api/v1/auth/verify', { wallet: w.address, signature: w.sign(c.message) }), 400, 'invalid_request', 'nonce');
    expectError(await anon.post('/api/v1/auth/verify', { wallet: w.address, nonce: c.nonce }), 400, 'invalid_request', 'signature');
  });
});

// ---------------------------------------------------------------- tokens

describe('bearer tokens', () => {
  it('a token is accepted until AUTH_TOKEN_TTL_S has passed on the service clock, then 401', async () => {
    const u = await signIn(srv.baseUrl);
    offsetMs = (TOKEN_TTL_S - 1) * 1000;
    expect((await u.api.get('/api/v1/users/me')).status).toBe(200);
    offsetMs = (TOKEN_TTL_S + 1) * 1000;
    expectError(await u.api.get('/api/v1/users/me'), 401, 'unauthorized');
    // and back in time it is fine again: expiry is judged by the service clock alone
    offsetMs = 0;
    expect((await u.api.get('/api/v1/users/me')).status).toBe(200);
  });

  it('no Authorization header → 401 on every authenticated endpoint', async () => {
    const id = randomUUID();
    const paths: [string, string][] = [
      ['GET', '/api/v1/users/me'],
      ['PATCH', '/api/v1/users/me'],
      ['GET', `/api/v1/users/${id}`],
      ['GET', `/api/v1/users?wallet=${newWallet().address}`],
      ['GET', '/api/v1/conversations'],
      ['POST', '/api/v1/conversations'],
      ['GET', `/api/v1/conversations/${id}`],
      ['POST', `/api/v1/conversations/${id}/members`],
      ['DELETE', `/api/v1/conversations/${id}/members/${id}`],
      ['POST', `/api/v1/conversations/${id}/read`],
      ['POST', `/api/v1/conversations/${id}/rotate-key`],
      ['GET', `/api/v1/conversations/${id}/messages`],
      ['POST', '/api/v1/messages'],
      ['GET', `/api/v1/messages?conv_id=${id}`],
      ['PATCH', `/api/v1/messages/${id}`],
      ['DELETE', `/api/v1/messages/${id}`],
    ];
    for (const [method, path] of paths) {
      const res = await anon.raw(method, path, method === 'GET' || method === 'DELETE' ? {} : { body: '{}', headers: { 'content-type': 'application/json' } });
      expect(res.status, `${method} ${path}`).toBe(401);
      expect(res.body?.error?.code, `${method} ${path}`).toBe('unauthorized');
    }
  });

  it.each([
    ['empty', ''],
    ['Bearer without a token', 'Bearer'],
    ['Bearer and a space', 'Bearer '],
    ['garbage token', 'Bearer garbage'],
    ['three garbage segments', 'Bearer aaa.bbb.ccc'],
    ['another scheme', 'Basic dXNlcjpwYXNz'],
  ])('a bad Authorization header (%s) → 401', async (_name, header) => {
    const res = await anon.raw('GET', '/api/v1/users/me', { headers: header === '' ? {} : { authorization: header } });
    expectError(res, 401, 'unauthorized');
  });

  it('a token with a tampered payload → 401', async () => {
    const u = await signIn(srv.baseUrl);
    const [h, p, s] = u.token.split('.');
    const payload = JSON.parse(Buffer.from(p!, 'base64url').toString());
    payload.sub = randomUUID();
    const forged = `${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${s}`;
    expectError(await apiClient(srv.baseUrl, forged).get('/api/v1/users/me'), 401, 'unauthorized');
  });

  it('a token signed with another secret, or alg "none" → 401', async () => {
    const u = await signIn(srv.baseUrl);
    const claims = JSON.parse(Buffer.from(u.token.split('.')[1]!, 'base64url').toString());
    const otherSigner = createSigner({ key: randomBytes(32).toString('base64'), algorithm: 'HS256' });
    const otherToken = otherSigner(claims);
    expectError(await apiClient(srv.baseUrl, otherToken).get('/api/v1/users/me'), 401, 'unauthorized');
    const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.`;
    expectError(await apiClient(srv.baseUrl, none).get('/api/v1/users/me'), 401, 'unauthorized');
  });
});

// ---------------------------------------------------------------- users

describe('users', () => {
  it('GET /users/me → {user} with exactly id, wallet, display_name, created_at', async () => {
    const u = await signIn(srv.baseUrl);
    const res = await u.api.get('/api/v1/users/me');
    expect(res.status).toBe(200);
    expect(Object.keys(res.body)).toEqual(['user']);
    expect(res.body.user).toEqual({ id: u.user.id, wallet: u.wallet.address, display_name: null, created_at: u.user.created_at });
    expect(res.body.user.created_at).toMatch(ISO_UTC);
  });

  it('PATCH /users/me sets display_name; GET reflects it; it survives a new sign-in', async () => {
    const u = await signIn(srv.baseUrl);
    const res = await u.api.patch('/api/v1/users/me', { display_name: 'Alice Ünïcødé' });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.user).toEqual({ ...u.user, display_name: 'Alice Ünïcødé' });
    expect((await u.api.get('/api/v1/users/me')).body.user.display_name).toBe('Alice Ünïcødé');
    const again = await signIn(srv.baseUrl, u.wallet);
    expect(again.user.display_name).toBe('Alice Ünïcødé');
  });

  it('display_name of 1 and of 64 characters is accepted; 64 non-BMP characters count as 64', async () => {
    const u = await signIn(srv.baseUrl);
    for (const name of ['x', 'a'.repeat(64), '😀'.repeat(64)]) {
      const res = await u.api.patch('/api/v1/users/me', { display_name: name });
      expect(res.status, `${name.length} code units: ${JSON.stringify(res.body)}`).toBe(200);
      expect(res.body.user.display_name).toBe(name);
    }
  });

  it('display_name of 65 characters → 400 field display_name, nothing changes', async () => {
    const u = await signIn(srv.baseUrl);
    await u.api.patch('/api/v1/users/me', { display_name: 'before' });
    expectError(await u.api.patch('/api/v1/users/me', { display_name: 'a'.repeat(65) }), 400, 'invalid_request', 'display_name');
    expectError(await u.api.patch('/api/v1/users/me', { display_name: '😀'.repeat(65) }), 400, 'invalid_request', 'display_name');
    expect((await u.api.get('/api/v1/users/me')).body.user.display_name).toBe('before');
  });

  it('empty, missing or non-string display_name → 400 field display_name', async () => {
    const u = await signIn(srv.baseUrl);
    expectError(await u.api.patch('/api/v1/users/me', { display_name: '' }), 400, 'invalid_request', 'display_name');
    expectError(await u.api.patch('/api/v1/users/me', {}), 400, 'invalid_request', 'display_name');
    expectError(await u.api.patch('/api/v1/users/me', { display_name: 42 }), 400, 'invalid_request', 'display_name');
    expectError(await u.api.patch('/api/v1/users/me', { display_name: null }), 400, 'invalid_request', 'display_name');
  });

  it('GET /users/{id} returns another user', async () => {
    const a = await signIn(srv.baseUrl);
    const b = await signIn(srv.baseUrl);
    await b.api.patch('/api/v1/users/me', { display_name: 'Bob' });
    const res = await a.api.get(`/api/v1/users/${b.user.id}`);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ user: { ...b.user, display_name: 'Bob' } });
  });

  it('GET /users/{id} with a bad uuid → 400 field id', async () => {
    const a = await signIn(srv.baseUrl);
    for (const bad of ['not-a-uuid', '123', `${randomUUID()}x`, randomUUID().replace(/-/g, '')]) {
      expectError(await a.api.get(`/api/v1/users/${bad}`), 400, 'invalid_request', 'id');
    }
  });

  it('GET /users/{id} of an unknown user → 404', async () => {
    const a = await signIn(srv.baseUrl);
    expectError(await a.api.get(`/api/v1/users/${randomUUID()}`), 404, 'not_found');
  });

  it('GET /users?wallet= returns zero or one user', async () => {
    const a = await signIn(srv.baseUrl);
    const b = await signIn(srv.baseUrl);
    const one = await a.api.get(`/api/v1/users?wallet=${b.wallet.address}`);
    expect(one.status).toBe(200);
    expect(one.body).toEqual({ users: [b.user] });
    const none = await a.api.get(`/api/v1/users?wallet=${newWallet().address}`);
    expect(none.status).toBe(200);
    expect(none.body).toEqual({ users: [] });
  });

  it('GET /users?wallet= with a bad or missing wallet → 400 field wallet', async () => {
    const a = await signIn(srv.baseUrl);
    expectError(await a.api.get('/api/v1/users?wallet=not-a-wallet'), 400, 'invalid_request', 'wallet');
    expectError(await a.api.get(`/api/v1/users?wallet=${bs58.encode(randomBytes(31))}`), 400, 'invalid_request', 'wallet');
    expectError(await a.api.get('/api/v1/users'), 400, 'invalid_request', 'wallet');
  });
});
