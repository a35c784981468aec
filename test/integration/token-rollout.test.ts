// Tokens and search cursors across a two-phase master-key rollout (docs/operations.md): with
// AUTH_TOKEN_SECRET unset, an instance signs with its active key's secret and accepts any
// configured key's, so instances on either side of the switch accept each other's tokens.
// AUTH_TOKEN_SECRET, when set, is the HMAC key itself (its bytes).
import { createHmac, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiClient } from '../helpers/http.js';
import { signIn, startTestServer, type TestServer } from '../helpers/server.js';

const K1 = randomBytes(32).toString('base64');
const K2 = randomBytes(32).toString('base64');
const K3 = randomBytes(32).toString('base64');

describe('master-key rollout', () => {
  let phase1: TestServer; // knows K2, still signs with K1
  let phase2: TestServer; // switched to K2, keeps K1 for decryption
  let stranger: TestServer; // another deployment altogether

  beforeAll(async () => {
    phase1 = await startTestServer({ env: { ENCRYPTION_MASTER_KEY: K1, ENCRYPTION_OLD_MASTER_KEYS: K2 } });
    phase2 = await startTestServer({ env: { ENCRYPTION_MASTER_KEY: K2, ENCRYPTION_OLD_MASTER_KEYS: K1 }, database: phase1.database });
    stranger = await startTestServer({ env: { ENCRYPTION_MASTER_KEY: K3 }, database: phase1.database });
  });

  afterAll(async () => {
    await stranger?.close();
    await phase2?.close();
    await phase1?.close();
  });

  it('a token from either side works on the other; one from an unrelated key does not', async () => {
    const fromOld = await signIn(phase1.baseUrl);
    const fromNew = await signIn(phase2.baseUrl);
    expect((await apiClient(phase2.baseUrl, fromOld.token).get('/api/v1/users/me')).status).toBe(200);
    expect((await apiClient(phase1.baseUrl, fromNew.token).get('/api/v1/users/me')).status).toBe(200);
    expect((await apiClient(stranger.baseUrl, fromOld.token).get('/api/v1/users/me')).status).toBe(401);
  });

  it('a search cursor issued by one side pages on the other', async () => {
    const a = await signIn(phase1.baseUrl);
    const conv = (await a.api.post('/api/v1/conversations', { type: 'group', title: 'rollout', member_ids: [] })).body.conversation.id;
    for (let i = 0; i < 3; i++) expect((await a.api.post('/api/v1/messages', { conversation_id: conv, content: `rollout word ${i}` })).status).toBe(201);
    const first = await a.api.get('/api/v1/search?q=rollout&limit=1');
    expect(first.status).toBe(200);
    const next = await apiClient(phase2.baseUrl, a.token).get(`/api/v1/search?q=rollout&limit=1&before=${encodeURIComponent(first.body.next_cursor)}`);
    expect(next.status, JSON.stringify(next.body)).toBe(200);
    expect(next.body.results).toHaveLength(1);
  });
});

it('AUTH_TOKEN_SECRET is the HMAC key itself: a token signed by hand with its bytes is accepted', async () => {
  const secret = 'a-token-secret-of-at-least-32-bytes-0123456789';
  const srv = await startTestServer({ env: { AUTH_TOKEN_SECRET: secret } });
  try {
    const u = await signIn(srv.baseUrl);
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: u.user.id, wal: u.user.wallet, iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 600 })}`;
    const token = `${unsigned}.${createHmac('sha256', Buffer.from(secret)).update(unsigned).digest('base64url')}`;
    expect((await apiClient(srv.baseUrl, token).get('/api/v1/users/me')).status).toBe(200);
  } finally {
    await srv.close();
  }
});
