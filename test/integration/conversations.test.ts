// Integration tests: conversations, members, list, read receipts, message status, key rotation (docs/design.md, Data; docs/protocol.md).
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyFingerprint } from '../../src/crypto/kdf.js';
import type { ApiResponse } from '../helpers/http.js';
import { signIn, startTestServer, TEST_MASTER_KEY_B64, type SignedInUser, type TestServer } from '../helpers/server.js';

// ---------------------------------------------------------------- local helpers

function expectError(res: ApiResponse, status: number, code: string, field?: string | null): void {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.body?.error?.code, JSON.stringify(res.body)).toBe(code);
  expect(typeof res.body.error.message).toBe('string');
  if (field === null) expect(res.body.error.field).toBeUndefined();
  else if (field !== undefined) expect(res.body.error.field).toBe(field);
}

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;
const CONVERSATION_KEYS = ['created_at', 'current_key_version', 'id', 'last_seq', 'members', 'title', 'type', 'updated_at'];
const MEMBER_KEYS = ['delivered_seq', 'joined_at', 'read_seq', 'role', 'user_id'];

let srv: TestServer;

beforeAll(async () => {
  srv = await startTestServer();
});

afterAll(async () => {
  await srv?.close();
});

const user = () => signIn(srv.baseUrl);
type Tuple<T, N extends number, R extends T[] = []> = R['length'] extends N ? R : Tuple<T, N, [T, ...R]>;
const users = <N extends number>(n: N) => Promise.all(Array.from({ length: n }, () => signIn(srv.baseUrl))) as unknown as Promise<Tuple<SignedInUser, N>>;

async function direct(a: SignedInUser, b: SignedInUser): Promise<any> {
  const res = await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] });
  expect([200, 201], JSON.stringify(res.body)).toContain(res.status);
  return res.body.conversation;
}

async function group(owner: SignedInUser, members: SignedInUser[], title: string | null = 'a group'): Promise<any> {
  const res = await owner.api.post('/api/v1/conversations', { type: 'group', title, member_ids: members.map((m) => m.user.id) });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.conversation;
}

async function send(u: SignedInUser, conversationId: string, content: string): Promise<any> {
  const res = await u.api.post('/api/v1/messages', { conversation_id: conversationId, content });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.message;
}

async function messagesOf(u: SignedInUser, conversationId: string): Promise<any[]> {
  const res = await u.api.get(`/api/v1/conversations/${conversationId}/messages?limit=200`);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.messages;
}

async function listAll(u: SignedInUser): Promise<any[]> {
  const res = await u.api.get('/api/v1/conversations?limit=100');
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.conversations;
}

function expectConversationShape(c: any): void {
  expect(Object.keys(c).sort()).toEqual(CONVERSATION_KEYS);
  expect(c.created_at).toMatch(ISO_UTC);
  expect(c.updated_at).toMatch(ISO_UTC);
  expect(typeof c.last_seq).toBe('number');
  expect(typeof c.current_key_version).toBe('number');
  for (const m of c.members) {
    expect(Object.keys(m).sort()).toEqual(MEMBER_KEYS);
    expect(m.joined_at).toMatch(ISO_UTC);
    expect(typeof m.delivered_seq).toBe('number');
    expect(typeof m.read_seq).toBe('number');
  }
}

const memberIds = (c: any) => c.members.map((m: any) => m.user_id).sort();
const roleOf = (c: any, id: string) => c.members.find((m: any) => m.user_id === id)?.role;

// ---------------------------------------------------------------- direct

describe('direct conversations', () => {
  it('get-or-create: 201 when created, then 200 with the same conversation (from either side)', async () => {
    const [a, b] = await users(2);
    const first = await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] });
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    const c = first.body.conversation;
    expectConversationShape(c);
    expect(c.type).toBe('direct');
    expect(c.title).toBeNull();
    expect(c.last_seq).toBe(0);
    expect(c.current_key_version).toBe(1);
    expect(memberIds(c)).toEqual([a.user.id, b.user.id].sort());
    // in a direct conversation both sides are `member`
    expect(c.members.map((m: any) => m.role)).toEqual(['member', 'member']);
    expect(c.members.every((m: any) => m.delivered_seq === 0 && m.read_seq === 0)).toBe(true);

    const again = await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] });
    expect(again.status).toBe(200);
    expect(again.body.conversation.id).toBe(c.id);
    const reverse = await b.api.post('/api/v1/conversations', { type: 'direct', member_ids: [a.user.id] });
    expect(reverse.status).toBe(200);
    expect(reverse.body.conversation.id).toBe(c.id);
    expectConversationShape(reverse.body.conversation);
  });

  it('20 concurrent creates by the same pair make exactly one conversation (checked in the database)', async () => {
    const [a, b] = await users(2);
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        (i % 2 === 0 ? a : b).api.post('/api/v1/conversations', { type: 'direct', member_ids: [(i % 2 === 0 ? b : a).user.id] }),
      ),
    );
    for (const r of results) expect([200, 201], JSON.stringify(r.body)).toContain(r.status);
    expect(results.filter((r) => r.status === 201)).toHaveLength(1);
    const ids = new Set(results.map((r) => r.body.conversation.id));
    expect(ids.size).toBe(1);
    const { rows } = await srv.pool.query(
      `SELECT c.id FROM conversations c
       WHERE c.type = 'direct'
         AND EXISTS (SELECT 1 FROM conversation_members m WHERE m.conversation_id = c.id AND m.user_id = $1)
         AND EXISTS (SELECT 1 FROM conversation_members m WHERE m.conversation_id = c.id AND m.user_id = $2)`,
      [a.user.id, b.user.id],
    );
    expect(rows.map((r) => r.id)).toEqual([...ids]);
    const members = await srv.pool.query('SELECT count(*)::int AS n FROM conversation_members WHERE conversation_id = $1', [rows[0].id]);
    expect(members.rows[0].n).toBe(2);
    const keys = await srv.pool.query('SELECT version FROM conversation_keys WHERE conversation_id = $1', [rows[0].id]);
    expect(keys.rows).toEqual([{ version: 1 }]);
  });

  it('the database itself refuses a second direct conversation for a pair', async () => {
    const [a, b] = await users(2);
    const c = await direct(a, b);
    const { rows } = await srv.pool.query('SELECT direct_low, direct_high, created_by FROM conversations WHERE id = $1', [c.id]);
    await expect(
      srv.pool.query(
        `INSERT INTO conversations (id, type, created_by, direct_low, direct_high) VALUES ($1, 'direct', $2, $3, $4)`,
        [randomUUID(), rows[0].created_by, rows[0].direct_low, rows[0].direct_high],
      ),
    ).rejects.toMatchObject({ code: '23505' });
  });

  it('direct with an unknown user → 404, nothing created', async () => {
    const a = await user();
    const before = await srv.pool.query('SELECT count(*)::int AS n FROM conversations');
    expectError(await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [randomUUID()] }), 404, 'not_found');
    const after = await srv.pool.query('SELECT count(*)::int AS n FROM conversations');
    expect(after.rows[0].n).toBe(before.rows[0].n);
  });

  it('direct with oneself → 400', async () => {
    const a = await user();
    expectError(await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [a.user.id] }), 400, 'invalid_request', 'member_ids');
  });

  it('direct with zero or two other users, or a bad uuid → 400 field member_ids', async () => {
    const [a, b, c] = await users(3);
    expectError(await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [] }), 400, 'invalid_request', 'member_ids');
    expectError(
      await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id, c.user.id] }),
      400,
      'invalid_request',
      'member_ids',
    );
    expectError(await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: ['nope'] }), 400, 'invalid_request', 'member_ids');
    expectError(await a.api.post('/api/v1/conversations', { type: 'direct' }), 400, 'invalid_request', 'member_ids');
  });

  it('an unknown or missing type → 400 field type', async () => {
    const [a, b] = await users(2);
    expectError(await a.api.post('/api/v1/conversations', { type: 'channel', member_ids: [b.user.id] }), 400, 'invalid_request', 'type');
    expectError(await a.api.post('/api/v1/conversations', { member_ids: [b.user.id] }), 400, 'invalid_request', 'type');
  });

  it('members cannot be added to or removed from a direct conversation (400)', async () => {
    const [a, b, c] = await users(3);
    const d = await direct(a, b);
    expectError(await a.api.post(`/api/v1/conversations/${d.id}/members`, { user_id: c.user.id }), 400, 'invalid_request');
    expectError(await a.api.delete(`/api/v1/conversations/${d.id}/members/${b.user.id}`), 400, 'invalid_request');
    expectError(await a.api.delete(`/api/v1/conversations/${d.id}/members/${a.user.id}`), 400, 'invalid_request');
    const after = await a.api.get(`/api/v1/conversations/${d.id}`);
    expect(memberIds(after.body.conversation)).toEqual([a.user.id, b.user.id].sort());
  });
});

// ---------------------------------------------------------------- conversation_keys at creation

describe('conversation key version 1', () => {
  it('a new conversation has a key version 1 row: active master key fingerprint and its creation second', async () => {
    const [a, b] = await users(2);
    const before = Math.floor(Date.now() / 1000);
    const g = await group(a, [b]);
    const after = Math.ceil(Date.now() / 1000);
    const { rows } = await srv.pool.query(
      'SELECT version, master_key_fingerprint, created_unix_seconds FROM conversation_keys WHERE conversation_id = $1',
      [g.id],
    );
    expect(rows).toHaveLength(1);
    expect(rows[0].version).toBe(1);
    expect(rows[0].master_key_fingerprint).toBe(keyFingerprint(Buffer.from(TEST_MASTER_KEY_B64, 'base64')));
    expect(Number(rows[0].created_unix_seconds)).toBeGreaterThanOrEqual(before);
    expect(Number(rows[0].created_unix_seconds)).toBeLessThanOrEqual(after);
    // never the key itself: no binary column, and the documented columns are there
    const cols = await srv.pool.query(
      "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'conversation_keys'",
    );
    expect(cols.rows.filter((r) => r.data_type === 'bytea')).toEqual([]);
    expect(cols.rows.map((r) => r.column_name)).toEqual(
      expect.arrayContaining(['conversation_id', 'version', 'master_key_fingerprint', 'created_unix_seconds', 'created_at']),
    );
    const d = await direct(a, b);
    const dk = await srv.pool.query('SELECT version FROM conversation_keys WHERE conversation_id = $1', [d.id]);
    expect(dk.rows).toEqual([{ version: 1 }]);
  });
});

// ---------------------------------------------------------------- groups and members

describe('groups and members', () => {
  it('creates a group: 201, creator is owner, others are members, title kept', async () => {
    const [a, b, c] = await users(3);
    const res = await a.api.post('/api/v1/conversations', { type: 'group', title: 'Team ✨', member_ids: [b.user.id, c.user.id] });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const g = res.body.conversation;
    expectConversationShape(g);
    expect(g.type).toBe('group');
    expect(g.title).toBe('Team ✨');
    expect(g.last_seq).toBe(0);
    expect(g.current_key_version).toBe(1);
    expect(memberIds(g)).toEqual([a.user.id, b.user.id, c.user.id].sort());
    expect(roleOf(g, a.user.id)).toBe('owner');
    expect(roleOf(g, b.user.id)).toBe('member');
    expect(roleOf(g, c.user.id)).toBe('member');
    // every member sees the same conversation
    const seen = await c.api.get(`/api/v1/conversations/${g.id}`);
    expect(seen.status).toBe(200);
    expect(seen.body.conversation.id).toBe(g.id);
    expect(memberIds(seen.body.conversation)).toEqual(memberIds(g));
  });

  it('creating the same group twice makes two conversations (groups are not get-or-create)', async () => {
    const [a, b] = await users(2);
    const g1 = await group(a, [b], 'same');
    const g2 = await group(a, [b], 'same');
    expect(g1.id).not.toBe(g2.id);
  });

  it('a group naming an unknown user → 404', async () => {
    const [a, b] = await users(2);
    expectError(await a.api.post('/api/v1/conversations', { type: 'group', title: 'x', member_ids: [b.user.id, randomUUID()] }), 404, 'not_found');
  });

  it('any member may add a member: 200 {conversation} with the new member', async () => {
    const [a, b, c, d] = await users(4);
    const g = await group(a, [b]);
    const added = await b.api.post(`/api/v1/conversations/${g.id}/members`, { user_id: c.user.id });
    expect(added.status, JSON.stringify(added.body)).toBe(200);
    expectConversationShape(added.body.conversation);
    expect(memberIds(added.body.conversation)).toEqual([a.user.id, b.user.id, c.user.id].sort());
    expect(roleOf(added.body.conversation, c.user.id)).toBe('member');
    const byOwner = await a.api.post(`/api/v1/conversations/${g.id}/members`, { user_id: d.user.id });
    expect(byOwner.status).toBe(200);
    expect(memberIds(byOwner.body.conversation)).toHaveLength(4);
    expect((await d.api.get(`/api/v1/conversations/${g.id}`)).status).toBe(200);
  });

  it('adding: an unknown user → 404, a bad uuid → 400 field user_id, a non-member adder → 404', async () => {
    const [a, b, outsider] = await users(3);
    const g = await group(a, [b]);
    expectError(await a.api.post(`/api/v1/conversations/${g.id}/members`, { user_id: randomUUID() }), 404, 'not_found');
    expectError(await a.api.post(`/api/v1/conversations/${g.id}/members`, { user_id: 'xyz' }), 400, 'invalid_request', 'user_id');
    expectError(await a.api.post(`/api/v1/conversations/${g.id}/members`, {}), 400, 'invalid_request', 'user_id');
    expectError(await outsider.api.post(`/api/v1/conversations/${g.id}/members`, { user_id: outsider.user.id }), 404, 'not_found');
  });

  it('a member removes themselves: 204 and the conversation is gone for them', async () => {
    const [a, b] = await users(2);
    const g = await group(a, [b]);
    const res = await b.api.delete(`/api/v1/conversations/${g.id}/members/${b.user.id}`);
    expect(res.status).toBe(204);
    expect(res.body).toBeUndefined();
    expectError(await b.api.get(`/api/v1/conversations/${g.id}`), 404, 'not_found');
    const owner = await a.api.get(`/api/v1/conversations/${g.id}`);
    expect(memberIds(owner.body.conversation)).toEqual([a.user.id]);
  });

  it('the owner removes another member: 204', async () => {
    const [a, b, c] = await users(3);
    const g = await group(a, [b, c]);
    expect((await a.api.delete(`/api/v1/conversations/${g.id}/members/${c.user.id}`)).status).toBe(204);
    const after = await a.api.get(`/api/v1/conversations/${g.id}`);
    expect(memberIds(after.body.conversation)).toEqual([a.user.id, b.user.id].sort());
    const { rows } = await srv.pool.query('SELECT user_id FROM conversation_members WHERE conversation_id = $1 ORDER BY user_id', [g.id]);
    expect(rows.map((r) => r.user_id)).toEqual([a.user.id, b.user.id].sort());
  });

  it('a non-owner removing another member → 403, nothing changes', async () => {
    const [a, b, c] = await users(3);
    const g = await group(a, [b, c]);
    expectError(await b.api.delete(`/api/v1/conversations/${g.id}/members/${c.user.id}`), 403, 'forbidden');
    expectError(await b.api.delete(`/api/v1/conversations/${g.id}/members/${a.user.id}`), 403, 'forbidden');
    const after = await a.api.get(`/api/v1/conversations/${g.id}`);
    expect(memberIds(after.body.conversation)).toEqual([a.user.id, b.user.id, c.user.id].sort());
  });

  it('bad uuids in member paths → 400 naming the parameter', async () => {
    const [a, b] = await users(2);
    const g = await group(a, [b]);
    expectError(await a.api.delete(`/api/v1/conversations/${g.id}/members/not-a-uuid`), 400, 'invalid_request', 'user_id');
    expectError(await a.api.delete(`/api/v1/conversations/bad/members/${b.user.id}`), 400, 'invalid_request', 'id');
    expectError(await a.api.post('/api/v1/conversations/bad/members', { user_id: b.user.id }), 400, 'invalid_request', 'id');
  });

  it('GET /conversations/{id}: bad uuid → 400 field id; unknown or not a member → 404', async () => {
    const [a, b, outsider] = await users(3);
    const g = await group(a, [b]);
    expectError(await a.api.get('/api/v1/conversations/not-a-uuid'), 400, 'invalid_request', 'id');
    expectError(await a.api.get(`/api/v1/conversations/${randomUUID()}`), 404, 'not_found');
    expectError(await outsider.api.get(`/api/v1/conversations/${g.id}`), 404, 'not_found');
  });

  it('a removed member gets 404 for everything in the conversation, and it leaves their list', async () => {
    const [a, b, c] = await users(3);
    const g = await group(a, [b, c]);
    const mine = await send(b, g.id, 'b wrote this before removal');
    await send(a, g.id, 'a wrote this');
    expect((await listAll(b)).map((x) => x.id)).toContain(g.id);
    expect((await a.api.delete(`/api/v1/conversations/${g.id}/members/${b.user.id}`)).status).toBe(204);

    expectError(await b.api.get(`/api/v1/conversations/${g.id}`), 404, 'not_found');
    expectError(await b.api.get(`/api/v1/conversations/${g.id}/messages`), 404, 'not_found');
    expectError(await b.api.get(`/api/v1/messages?conv_id=${g.id}`), 404, 'not_found');
    expectError(await b.api.get(`/api/v1/conversations/${g.id}/messages?after_seq=0`), 404, 'not_found');
    expectError(await b.api.post('/api/v1/messages', { conversation_id: g.id, content: 'still here?' }), 404, 'not_found');
    expectError(await b.api.post(`/api/v1/conversations/${g.id}/read`, { seq: 1 }), 404, 'not_found');
    expectError(await b.api.post(`/api/v1/conversations/${g.id}/rotate-key`), 404, 'not_found');
    expectError(await b.api.patch(`/api/v1/messages/${mine.id}`, { content: 'edited after removal' }), 404, 'not_found');
    expectError(await b.api.delete(`/api/v1/messages/${mine.id}`), 404, 'not_found');
    expectError(await b.api.post(`/api/v1/conversations/${g.id}/members`, { user_id: b.user.id }), 404, 'not_found');
    expectError(await b.api.delete(`/api/v1/conversations/${g.id}/members/${c.user.id}`), 404, 'not_found');
    expect((await listAll(b)).map((x) => x.id)).not.toContain(g.id);

    // nothing was changed by the refused calls
    const msgs = await messagesOf(a, g.id);
    expect(msgs).toHaveLength(2);
    expect(msgs[0].content).toBe('b wrote this before removal');
    expect(msgs[0].deleted).toBe(false);
    const conv = await a.api.get(`/api/v1/conversations/${g.id}`);
    expect(conv.body.conversation.current_key_version).toBe(1);
    expect(conv.body.conversation.last_seq).toBe(2);

    // …until added again
    expect((await c.api.post(`/api/v1/conversations/${g.id}/members`, { user_id: b.user.id })).status).toBe(200);
    expect((await b.api.get(`/api/v1/conversations/${g.id}`)).status).toBe(200);
    expect((await messagesOf(b, g.id)).map((m) => m.content)).toEqual(['b wrote this before removal', 'a wrote this']);
    expect((await listAll(b)).map((x) => x.id)).toContain(g.id);
  });
});

// ---------------------------------------------------------------- list

describe('GET /conversations', () => {
  it('lists the caller’s conversations by activity (newest message, else creation), most recent first', async () => {
    const [u, x] = await users(2);
    const c1 = await group(u, [], 'c1');
    const c2 = await group(u, [], 'c2');
    const c3 = await group(u, [], 'c3');
    expect((await listAll(u)).map((c) => c.id)).toEqual([c3.id, c2.id, c1.id]);
    await send(u, c1.id, 'bump c1');
    expect((await listAll(u)).map((c) => c.id)).toEqual([c1.id, c3.id, c2.id]);
    await send(u, c2.id, 'bump c2');
    expect((await listAll(u)).map((c) => c.id)).toEqual([c2.id, c1.id, c3.id]);
    // adding a member is not "activity" (docs/design.md: newest message or creation time)
    await u.api.post(`/api/v1/conversations/${c3.id}/members`, { user_id: x.user.id });
    expect((await listAll(u)).map((c) => c.id)).toEqual([c2.id, c1.id, c3.id]);
  });

  it('each item has the conversation fields plus last_message and unread_count', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    const items = await listAll(a);
    expect(items).toHaveLength(1);
    expect(Object.keys(items[0]).sort()).toEqual([...CONVERSATION_KEYS, 'last_message', 'unread_count'].sort());
    expect(items[0].id).toBe(d.id);
    expect(items[0].last_message).toBeNull();
    expect(items[0].unread_count).toBe(0);
    expect(memberIds(items[0])).toEqual([a.user.id, b.user.id].sort());
  });

  it('a user with no conversations gets an empty list and a null cursor', async () => {
    const u = await user();
    const res = await u.api.get('/api/v1/conversations');
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ conversations: [], next_cursor: null });
  });

  it.each(['0', '101', '-1', 'abc', '1.5', '1e2'])('limit=%s → 400 field limit', async (limit) => {
    const u = await user();
    expectError(await u.api.get(`/api/v1/conversations?limit=${limit}`), 400, 'invalid_request', 'limit');
  });

  it('limit 1 and 100 are accepted', async () => {
    const u = await user();
    await group(u, [], 'one');
    await group(u, [], 'two');
    const one = await u.api.get('/api/v1/conversations?limit=1');
    expect(one.status).toBe(200);
    expect(one.body.conversations).toHaveLength(1);
    expect(typeof one.body.next_cursor).toBe('string');
    const hundred = await u.api.get('/api/v1/conversations?limit=100');
    expect(hundred.status).toBe(200);
    expect(hundred.body.conversations).toHaveLength(2);
    expect(hundred.body.next_cursor).toBeNull();
  });

  it('default limit is 20', async () => {
    const u = await user();
    for (let i = 0; i < 21; i++) await group(u, [], `g${i}`);
    const res = await u.api.get('/api/v1/conversations');
    expect(res.status).toBe(200);
    expect(res.body.conversations).toHaveLength(20);
    expect(res.body.next_cursor).not.toBeNull();
  });

  it('pages through every conversation with next_cursor, no duplicates, same order, null at the end', async () => {
    const u = await user();
    for (let i = 0; i < 7; i++) await group(u, [], `p${i}`);
    const expected = (await listAll(u)).map((c) => c.id);
    expect(expected).toHaveLength(7);
    const seen: string[] = [];
    const sizes: number[] = [];
    let cursor: string | null = null;
    for (let page = 0; page < 10; page++) {
      const res: ApiResponse = await u.api.get(`/api/v1/conversations?limit=3${cursor ? `&before=${encodeURIComponent(cursor)}` : ''}`);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      sizes.push(res.body.conversations.length);
      seen.push(...res.body.conversations.map((c: any) => c.id));
      cursor = res.body.next_cursor;
      if (cursor === null) break;
      expect(typeof cursor).toBe('string');
    }
    expect(cursor).toBeNull();
    expect(sizes).toEqual([3, 3, 1]);
    expect(seen).toEqual(expected);
    // an exact multiple: the last full page already says there is nothing more
    const exact = await u.api.get('/api/v1/conversations?limit=7');
    expect(exact.body.conversations).toHaveLength(7);
    expect(exact.body.next_cursor).toBeNull();
  });

  it.each([
    'garbage',
    'AAAA',
    Buffer.from('12:not-a-uuid').toString('base64url'),
    '!!!',
    // decodable but out of range: bigint overflow, a 36-character non-UUID
    Buffer.from('99999999999999999999:01234567-89ab-cdef-0123-456789abcdef').toString('base64url'),
    Buffer.from('12:------------------------------------').toString('base64url'),
    Buffer.from('12:0123456789abcdef0123456789abcdef0123').toString('base64url'),
  ])(
    'a cursor the server did not issue (%s) → 400 field before',
    async (cursor) => {
      const u = await user();
      expectError(await u.api.get(`/api/v1/conversations?before=${encodeURIComponent(cursor)}`), 400, 'invalid_request', 'before');
    },
  );

  it('unread_count counts messages from others above read_seq, ignoring own messages and tombstones', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    const a1 = await send(a, d.id, 'a1');
    await send(a, d.id, 'a2');
    const a3 = await send(a, d.id, 'a3');
    await send(b, d.id, 'b4');
    const b5 = await send(b, d.id, 'b5');
    const unread = async (u: SignedInUser) => (await listAll(u)).find((c) => c.id === d.id).unread_count;
    expect(await unread(b)).toBe(3);
    expect(await unread(a)).toBe(2);
    expect((await b.api.post(`/api/v1/conversations/${d.id}/read`, { seq: 2 })).status).toBe(200);
    expect(await unread(b)).toBe(1);
    // a tombstone above read_seq does not count
    expect((await a.api.delete(`/api/v1/messages/${a3.id}`)).status).toBe(200);
    expect(await unread(b)).toBe(0);
    expect((await b.api.delete(`/api/v1/messages/${b5.id}`)).status).toBe(200);
    expect(await unread(a)).toBe(1);
    // a tombstone below read_seq changes nothing either
    expect((await a.api.delete(`/api/v1/messages/${a1.id}`)).status).toBe(200);
    expect(await unread(b)).toBe(0);
    expect(await unread(a)).toBe(1);
  });

  it('last_message is the newest message, decrypted, as a full message object', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    const g = await group(a, [b], 'silent');
    await send(a, d.id, 'first');
    const second = await send(b, d.id, 'second — ünïcødé ✓');
    const items = await listAll(a);
    const item = items.find((c) => c.id === d.id);
    expect(item.last_seq).toBe(2);
    expect(item.last_message).toEqual({ ...second, status: 'sent' });
    expect(item.last_message.content).toBe('second — ünïcødé ✓');
    expect(items.find((c) => c.id === g.id).last_message).toBeNull();
  });
});

// ---------------------------------------------------------------- read receipts and status

describe('read receipts', () => {
  it('moves forward, never backwards, and reading implies delivery', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    for (let i = 1; i <= 3; i++) await send(a, d.id, `m${i}`);
    const r2 = await b.api.post(`/api/v1/conversations/${d.id}/read`, { seq: 2 });
    expect(r2.status, JSON.stringify(r2.body)).toBe(200);
    expect(r2.body).toEqual({ conversation_id: d.id, user_id: b.user.id, delivered_seq: 2, read_seq: 2 });
    const r1 = await b.api.post(`/api/v1/conversations/${d.id}/read`, { seq: 1 });
    expect(r1.status).toBe(200);
    expect(r1.body).toEqual({ conversation_id: d.id, user_id: b.user.id, delivered_seq: 2, read_seq: 2 });
    const r0 = await b.api.post(`/api/v1/conversations/${d.id}/read`, { seq: 0 });
    expect(r0.status).toBe(200);
    expect(r0.body.read_seq).toBe(2);
    const r3 = await b.api.post(`/api/v1/conversations/${d.id}/read`, { seq: 3 });
    expect(r3.body).toEqual({ conversation_id: d.id, user_id: b.user.id, delivered_seq: 3, read_seq: 3 });
    const conv = await a.api.get(`/api/v1/conversations/${d.id}`);
    const mb = conv.body.conversation.members.find((m: any) => m.user_id === b.user.id);
    expect([mb.delivered_seq, mb.read_seq]).toEqual([3, 3]);
    const ma = conv.body.conversation.members.find((m: any) => m.user_id === a.user.id);
    expect([ma.delivered_seq, ma.read_seq]).toEqual([0, 0]);
  });

  it('keeps delivered_seq when it is already ahead of the read receipt', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    for (let i = 1; i <= 4; i++) await send(a, d.id, `m${i}`);
    // delivered_seq only advances over sockets; set it directly
    await srv.pool.query('UPDATE conversation_members SET delivered_seq = 4 WHERE conversation_id = $1 AND user_id = $2', [d.id, b.user.id]);
    const r = await b.api.post(`/api/v1/conversations/${d.id}/read`, { seq: 2 });
    expect(r.body).toEqual({ conversation_id: d.id, user_id: b.user.id, delivered_seq: 4, read_seq: 2 });
  });

  it('a seq above last_seq → 400 field seq, nothing changes', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    await send(a, d.id, 'only one');
    expectError(await b.api.post(`/api/v1/conversations/${d.id}/read`, { seq: 2 }), 400, 'invalid_request', 'seq');
    const conv = await b.api.get(`/api/v1/conversations/${d.id}`);
    const mb = conv.body.conversation.members.find((m: any) => m.user_id === b.user.id);
    expect([mb.delivered_seq, mb.read_seq]).toEqual([0, 0]);
    const empty = await direct(a, await user());
    expectError(await a.api.post(`/api/v1/conversations/${empty.id}/read`, { seq: 1 }), 400, 'invalid_request', 'seq');
  });

  it('a malformed seq → 400 field seq', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    await send(a, d.id, 'x');
    for (const seq of [-1, 1.5, '1', null, true]) {
      expectError(await b.api.post(`/api/v1/conversations/${d.id}/read`, { seq }), 400, 'invalid_request', 'seq');
    }
    expectError(await b.api.post(`/api/v1/conversations/${d.id}/read`, {}), 400, 'invalid_request', 'seq');
  });

  it('non-member → 404; bad uuid → 400 field id', async () => {
    const [a, b, outsider] = await users(3);
    const d = await direct(a, b);
    await send(a, d.id, 'x');
    expectError(await outsider.api.post(`/api/v1/conversations/${d.id}/read`, { seq: 1 }), 404, 'not_found');
    expectError(await a.api.post('/api/v1/conversations/zzz/read', { seq: 1 }), 400, 'invalid_request', 'id');
  });
});

describe('message status', () => {
  it('direct: sent → delivered → read, as seen by both sides', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    const m1 = await send(a, d.id, 'one');
    const m2 = await send(a, d.id, 'two');
    expect(m1.status).toBe('sent');
    expect((await messagesOf(a, d.id)).map((m) => m.status)).toEqual(['sent', 'sent']);
    await b.api.post(`/api/v1/conversations/${d.id}/read`, { seq: m1.seq });
    expect((await messagesOf(a, d.id)).map((m) => m.status)).toEqual(['read', 'sent']);
    expect((await messagesOf(b, d.id)).map((m) => m.status)).toEqual(['read', 'sent']);
    // delivery (normally over a socket): set delivered_seq directly
    await srv.pool.query('UPDATE conversation_members SET delivered_seq = $3 WHERE conversation_id = $1 AND user_id = $2', [d.id, b.user.id, m2.seq]);
    expect((await messagesOf(a, d.id)).map((m) => m.status)).toEqual(['read', 'delivered']);
    await b.api.post(`/api/v1/conversations/${d.id}/read`, { seq: m2.seq });
    expect((await messagesOf(a, d.id)).map((m) => m.status)).toEqual(['read', 'read']);
    // the sender's own receipts do not matter for their messages
    const reply = await send(b, d.id, 'reply');
    expect(reply.status).toBe('sent');
    expect((await messagesOf(b, d.id))[2].status).toBe('sent');
  });

  it('group: read only when every other member has read it', async () => {
    const [a, b, c] = await users(3);
    const g = await group(a, [b, c]);
    const m = await send(a, g.id, 'to all');
    await b.api.post(`/api/v1/conversations/${g.id}/read`, { seq: m.seq });
    expect((await messagesOf(a, g.id))[0].status).toBe('sent');
    await srv.pool.query('UPDATE conversation_members SET delivered_seq = 1 WHERE conversation_id = $1 AND user_id = $2', [g.id, c.user.id]);
    expect((await messagesOf(a, g.id))[0].status).toBe('delivered');
    await c.api.post(`/api/v1/conversations/${g.id}/read`, { seq: m.seq });
    expect((await messagesOf(a, g.id))[0].status).toBe('read');
    // last_message in the list carries the same status
    expect((await listAll(a)).find((x) => x.id === g.id).last_message.status).toBe('read');
  });
});

// ---------------------------------------------------------------- rotate-key

describe('POST /conversations/{id}/rotate-key', () => {
  it('returns version 2; old messages stay readable; new ones are stored under version 2', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    const old1 = await send(a, d.id, 'before rotation 1');
    const old2 = await send(b, d.id, 'before rotation 2');
    const res = await a.api.post(`/api/v1/conversations/${d.id}/rotate-key`);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toEqual({ conversation_id: d.id, current_key_version: 2 });
    const conv = await b.api.get(`/api/v1/conversations/${d.id}`);
    expect(conv.body.conversation.current_key_version).toBe(2);
    const fresh = await send(b, d.id, 'after rotation');

    const msgs = await messagesOf(a, d.id);
    expect(msgs.map((m) => m.content)).toEqual(['before rotation 1', 'before rotation 2', 'after rotation']);
    expect(msgs.every((m) => m.integrity_error === undefined)).toBe(true);

    const { rows } = await srv.pool.query(
      'SELECT message_id, key_version FROM message_encryption_metadata WHERE message_id = ANY($1::uuid[])',
      [[old1.id, old2.id, fresh.id]],
    );
    const byId = Object.fromEntries(rows.map((r) => [r.message_id, r.key_version]));
    expect(byId).toEqual({ [old1.id]: 1, [old2.id]: 1, [fresh.id]: 2 });
    const keys = await srv.pool.query(
      'SELECT version, master_key_fingerprint FROM conversation_keys WHERE conversation_id = $1 ORDER BY version',
      [d.id],
    );
    const fp = keyFingerprint(Buffer.from(TEST_MASTER_KEY_B64, 'base64'));
    expect(keys.rows).toEqual([
      { version: 1, master_key_fingerprint: fp },
      { version: 2, master_key_fingerprint: fp },
    ]);
  });

  it('rotates again to 3; an edit after rotation re-encrypts under the current version', async () => {
    const [a, b] = await users(2);
    const g = await group(a, [b]);
    const m = await send(b, g.id, 'v1 message');
    expect((await b.api.post(`/api/v1/conversations/${g.id}/rotate-key`)).body.current_key_version).toBe(2);
    expect((await a.api.post(`/api/v1/conversations/${g.id}/rotate-key`)).body.current_key_version).toBe(3);
    const edited = await b.api.patch(`/api/v1/messages/${m.id}`, { content: 'edited under v3' });
    expect(edited.status).toBe(200);
    const meta = await srv.pool.query('SELECT key_version FROM message_encryption_metadata WHERE message_id = $1', [m.id]);
    expect(meta.rows[0].key_version).toBe(3);
    expect((await messagesOf(a, g.id))[0].content).toBe('edited under v3');
    const versions = await srv.pool.query('SELECT version FROM conversation_keys WHERE conversation_id = $1 ORDER BY version', [g.id]);
    expect(versions.rows.map((r) => r.version)).toEqual([1, 2, 3]);
  });

  it('concurrent rotations each get a distinct new version', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    const results = await Promise.all(Array.from({ length: 5 }, (_, i) => (i % 2 ? a : b).api.post(`/api/v1/conversations/${d.id}/rotate-key`)));
    expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    expect(results.map((r) => r.body.current_key_version).sort()).toEqual([2, 3, 4, 5, 6]);
    const conv = await a.api.get(`/api/v1/conversations/${d.id}`);
    expect(conv.body.conversation.current_key_version).toBe(6);
  });

  it('after a rotation through one instance, messages sent through another instance (same database) use the new version', async () => {
    // many instances share one Postgres (docs/design.md); after rotate-key new messages use the new version
    const other = await startTestServer({ database: srv.database });
    try {
      const [a, b] = await users(2);
      const d = await direct(a, b);
      const a2 = await signIn(other.baseUrl, a.wallet);
      const before = await send(a2, d.id, 'through instance 2, before rotation');
      expect((await b.api.post(`/api/v1/conversations/${d.id}/rotate-key`)).body.current_key_version).toBe(2);
      const after = await send(a2, d.id, 'through instance 2, after rotation');
      const { rows } = await srv.pool.query(
        'SELECT message_id, key_version FROM message_encryption_metadata WHERE message_id = ANY($1::uuid[])',
        [[before.id, after.id]],
      );
      const byId = Object.fromEntries(rows.map((r) => [r.message_id, r.key_version]));
      expect(byId).toEqual({ [before.id]: 1, [after.id]: 2 });
      expect((await messagesOf(b, d.id)).map((m) => m.content)).toEqual([before.content, after.content]);
    } finally {
      await other.close();
    }
  });

  it('non-member → 404; bad uuid → 400 field id', async () => {
    const [a, b, outsider] = await users(3);
    const d = await direct(a, b);
    expectError(await outsider.api.post(`/api/v1/conversations/${d.id}/rotate-key`), 404, 'not_found');
    expectError(await a.api.post(`/api/v1/conversations/${randomUUID()}/rotate-key`), 404, 'not_found');
    expectError(await a.api.post('/api/v1/conversations/nope/rotate-key'), 400, 'invalid_request', 'id');
    const conv = await a.api.get(`/api/v1/conversations/${d.id}`);
    expect(conv.body.conversation.current_key_version).toBe(1);
  });
});
