// Integration tests: sending, idempotency, concurrency, paging, editing and deleting messages (docs/design.md, Crypto; docs/protocol.md).
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiResponse } from '../helpers/http.js';
import { awayFromWindowEdge } from '../helpers/rate-window.js';
import { signIn, startTestServer, type SignedInUser, type TestServer } from '../helpers/server.js';

// ---------------------------------------------------------------- local helpers

function expectError(res: ApiResponse, status: number, code: string, field?: string | null): void {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.body?.error?.code, JSON.stringify(res.body)).toBe(code);
  expect(typeof res.body.error.message).toBe('string');
  if (field === null) expect(res.body.error.field).toBeUndefined();
  else if (field !== undefined) expect(res.body.error.field).toBe(field);
}

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;
const MESSAGE_KEYS = [
  'client_message_id', 'content', 'content_type', 'conversation_id', 'created_at', 'deleted', 'edited_at', 'id',
  'reply_to_id', 'sender_id', 'seq', 'signature', 'status', 'updated_at',
].sort();
const CONTENT_TYPES = ['text', 'markdown', 'json', 'image', 'file', 'audio', 'video'];
const SMALL_LIMIT = 1024;

let srv: TestServer;
let small: TestServer;

beforeAll(async () => {
  [srv, small] = await Promise.all([startTestServer(), startTestServer({ env: { MAX_MESSAGE_BYTES: String(SMALL_LIMIT) } })]);
});

afterAll(async () => {
  await Promise.all([srv?.close(), small?.close()]);
});

const user = (s: TestServer = srv) => signIn(s.baseUrl);
type Tuple<T, N extends number, R extends T[] = []> = R['length'] extends N ? R : Tuple<T, N, [T, ...R]>;
const users = <N extends number>(n: N, s: TestServer = srv) =>
  Promise.all(Array.from({ length: n }, () => signIn(s.baseUrl))) as unknown as Promise<Tuple<SignedInUser, N>>;

async function direct(a: SignedInUser, b: SignedInUser): Promise<string> {
  const res = await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] });
  expect([200, 201]).toContain(res.status);
  return res.body.conversation.id;
}

async function group(owner: SignedInUser, members: SignedInUser[]): Promise<string> {
  const res = await owner.api.post('/api/v1/conversations', { type: 'group', title: 'g', member_ids: members.map((m) => m.user.id) });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.conversation.id;
}

async function send(u: SignedInUser, conversationId: string, content: string, extra: Record<string, unknown> = {}): Promise<any> {
  const res = await u.api.post('/api/v1/messages', { conversation_id: conversationId, content, ...extra });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.message;
}

async function page(u: SignedInUser, conversationId: string, query = 'limit=200'): Promise<ApiResponse> {
  return u.api.get(`/api/v1/conversations/${conversationId}/messages?${query}`);
}

async function countRows(sql: string, params: unknown[]): Promise<number> {
  const { rows } = await srv.pool.query(sql, params);
  return Number(rows[0].n);
}

function expectMessageShape(m: any): void {
  expect(Object.keys(m).filter((k) => k !== 'integrity_error').sort()).toEqual(MESSAGE_KEYS);
  expect(typeof m.seq).toBe('number');
  expect(m.created_at).toMatch(ISO_UTC);
  expect(m.updated_at).toMatch(ISO_UTC);
  if (m.edited_at !== null) expect(m.edited_at).toMatch(ISO_UTC);
  expect(typeof m.deleted).toBe('boolean');
}

// ---------------------------------------------------------------- send

describe('POST /messages', () => {
  it('sends into a conversation: 201 with the plaintext echoed, status sent, seq 1', async () => {
    const [a, b] = await users(2);
    const c = await direct(a, b);
    const res = await a.api.post('/api/v1/messages', { conversation_id: c, content: 'Hello, Bob! ünïcødé ✓ 😀' });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    expect(Object.keys(res.body)).toEqual(['message']);
    const m = res.body.message;
    expectMessageShape(m);
    expect(m).toMatchObject({
      conversation_id: c, sender_id: a.user.id, seq: 1, content: 'Hello, Bob! ünïcødé ✓ 😀', content_type: 'text', reply_to_id: null,
      client_message_id: null, signature: null, status: 'sent', edited_at: null, deleted: false,
    });
    expect(m.integrity_error).toBeUndefined();
    // what the recipient reads back is the same message
    const got = await page(b, c);
    expect(got.body.messages).toEqual([m]);
    const conv = await a.api.get(`/api/v1/conversations/${c}`);
    expect(conv.body.conversation.last_seq).toBe(1);
  });

  it('sends via recipient_id: creates the direct conversation, reused afterwards', async () => {
    const [a, b] = await users(2);
    const first = await a.api.post('/api/v1/messages', { recipient_id: b.user.id, content: 'first contact' });
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    const cid = first.body.message.conversation_id;
    expect(first.body.message.seq).toBe(1);
    const conv = await b.api.post('/api/v1/conversations', { type: 'direct', member_ids: [a.user.id] });
    expect(conv.status).toBe(200);
    expect(conv.body.conversation.id).toBe(cid);
    const second = await b.api.post('/api/v1/messages', { recipient_id: a.user.id, content: 'reply' });
    expect(second.status).toBe(201);
    expect(second.body.message.conversation_id).toBe(cid);
    expect(second.body.message.seq).toBe(2);
    expect((await page(a, cid)).body.messages.map((m: any) => m.content)).toEqual(['first contact', 'reply']);
  });

  it('concurrent first messages via recipient_id from both sides create one conversation, seqs 1..N', async () => {
    const [a, b] = await users(2);
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) => (i % 2 ? a : b).api.post('/api/v1/messages', { recipient_id: (i % 2 ? b : a).user.id, content: `hello ${i}` })),
    );
    for (const r of results) expect(r.status, JSON.stringify(r.body)).toBe(201);
    const convs = new Set(results.map((r) => r.body.message.conversation_id));
    expect(convs.size).toBe(1);
    expect(results.map((r) => r.body.message.seq).sort((x, y) => x - y)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    const { rows } = await srv.pool.query(
      `SELECT count(*)::int AS n FROM conversations c WHERE c.type = 'direct'
         AND EXISTS (SELECT 1 FROM conversation_members m WHERE m.conversation_id = c.id AND m.user_id = $1)
         AND EXISTS (SELECT 1 FROM conversation_members m WHERE m.conversation_id = c.id AND m.user_id = $2)`,
      [a.user.id, b.user.id],
    );
    expect(rows[0].n).toBe(1);
  });

  it('recipient_id: unknown user → 404, oneself → 400, bad uuid → 400 field recipient_id', async () => {
    const a = await user();
    expectError(await a.api.post('/api/v1/messages', { recipient_id: randomUUID(), content: 'x' }), 404, 'not_found');
    expectError(await a.api.post('/api/v1/messages', { recipient_id: a.user.id, content: 'x' }), 400, 'invalid_request');
    expectError(await a.api.post('/api/v1/messages', { recipient_id: 'bob', content: 'x' }), 400, 'invalid_request', 'recipient_id');
  });

  it('needs exactly one of conversation_id and recipient_id (400)', async () => {
    const [a, b] = await users(2);
    const c = await direct(a, b);
    expectError(await a.api.post('/api/v1/messages', { content: 'x' }), 400, 'invalid_request');
    expectError(await a.api.post('/api/v1/messages', { conversation_id: c, recipient_id: b.user.id, content: 'x' }), 400, 'invalid_request');
    expectError(await a.api.post('/api/v1/messages', { conversation_id: 'nope', content: 'x' }), 400, 'invalid_request', 'conversation_id');
  });

  it.each(CONTENT_TYPES)('accepts content_type %s and echoes it', async (type) => {
    const [a, b] = await users(2);
    const c = await direct(a, b);
    const m = await send(a, c, type === 'json' ? '{"k":[1,2]}' : `some ${type}`, { content_type: type });
    expect(m.content_type).toBe(type);
    expect((await page(b, c)).body.messages[0].content_type).toBe(type);
  });

  it.each(['html', 'TEXT', '', 'text/plain'])('an unknown content_type (%j) → 400 field content_type', async (type) => {
    const [a, b] = await users(2);
    const c = await direct(a, b);
    expectError(await a.api.post('/api/v1/messages', { conversation_id: c, content: 'x', content_type: type }), 400, 'invalid_request', 'content_type');
    expectError(await a.api.post('/api/v1/messages', { conversation_id: c, content: 'x', content_type: 3 }), 400, 'invalid_request', 'content_type');
    expect(await countRows('SELECT count(*) AS n FROM messages WHERE conversation_id = $1', [c])).toBe(0);
  });

  it('empty, missing or non-string content → 400 field content; nothing stored', async () => {
    const [a, b] = await users(2);
    const c = await direct(a, b);
    for (const body of [{ content: '' }, {}, { content: 42 }, { content: null }, { content: ['x'] }]) {
      expectError(await a.api.post('/api/v1/messages', { conversation_id: c, ...body }), 400, 'invalid_request', 'content');
    }
    expect(await countRows('SELECT count(*) AS n FROM messages WHERE conversation_id = $1', [c])).toBe(0);
    const conv = await a.api.get(`/api/v1/conversations/${c}`);
    expect(conv.body.conversation.last_seq).toBe(0);
  });

  it('a lone surrogate in client_message_id, signature, a group title or a display name is 400 with the field (two ids must not collide as U+FFFD)', async () => {
    const [a, b] = await users(2);
    const c = await direct(a, b);
    expectError(await a.api.post('/api/v1/messages', { conversation_id: c, content: 'x', client_message_id: 'id-\ud800' }), 400, 'invalid_request', 'client_message_id');
    expectError(await a.api.post('/api/v1/messages', { conversation_id: c, content: 'x', client_message_id: 'id-\udfff' }), 400, 'invalid_request', 'client_message_id');
    expectError(await a.api.post('/api/v1/messages', { conversation_id: c, content: 'x', signature: 'sig\ud800' }), 400, 'invalid_request', 'signature');
    expectError(await a.api.post('/api/v1/conversations', { type: 'group', title: 'team \ud83d', member_ids: [b.user.id] }), 400, 'invalid_request', 'title');
    expectError(await a.api.patch('/api/v1/users/me', { display_name: 'me \udc00' }), 400, 'invalid_request', 'display_name');
    expect(await countRows('SELECT count(*) AS n FROM messages WHERE conversation_id = $1', [c])).toBe(0);
    // a well-formed pair is fine
    expect((await a.api.post('/api/v1/messages', { conversation_id: c, content: 'x', client_message_id: 'id-😀' })).status).toBe(201);
  });

  it('content that is not well-formed Unicode (a lone surrogate) is rejected or round-trips exactly', async () => {
    const [a, b] = await users(2);
    const c = await direct(a, b);
    const content = 'broken \ud800 surrogate';
    const res = await a.api.post('/api/v1/messages', { conversation_id: c, content });
    expect(res.status).toBeLessThan(500);
    if (res.status === 201) {
      // what was acknowledged must be what is stored and read back
      const back = (await page(b, c)).body.messages[0];
      expect(back.content).toBe(res.body.message.content);
    } else {
      expectError(res, 400, 'invalid_request', 'content');
    }
  });

  describe(`MAX_MESSAGE_BYTES (server with ${SMALL_LIMIT})`, () => {
    it('accepts exactly MAX_MESSAGE_BYTES and refuses one byte more with 413', async () => {
      const [a, b] = await users(2, small);
      const c = await direct(a, b);
      const ok = await a.api.post('/api/v1/messages', { conversation_id: c, content: 'a'.repeat(SMALL_LIMIT) });
      expect(ok.status, JSON.stringify(ok.body)).toBe(201);
      expectError(await a.api.post('/api/v1/messages', { conversation_id: c, content: 'a'.repeat(SMALL_LIMIT + 1) }), 413, 'payload_too_large');
      const { rows } = await small.pool.query('SELECT count(*)::int AS n FROM messages WHERE conversation_id = $1', [c]);
      expect(rows[0].n).toBe(1);
    });

    it('counts UTF-8 bytes, not characters', async () => {
      const [a, b] = await users(2, small);
      const c = await direct(a, b);
      const cases: [string, number][] = [
        ['é'.repeat(SMALL_LIMIT / 2), 201], // 1024 bytes, 512 chars
        ['é'.repeat(SMALL_LIMIT / 2 + 1), 413], // 1026 bytes, 513 chars
        ['€'.repeat(342), 413], // 1026 bytes, 342 chars
        ['€'.repeat(341) + 'a', 201], // 1024 bytes
        ['😀'.repeat(SMALL_LIMIT / 4), 201], // 1024 bytes, 512 UTF-16 units
        ['😀'.repeat(SMALL_LIMIT / 4 + 1), 413], // 1028 bytes, 514 UTF-16 units
      ];
      for (const [content, status] of cases) {
        const res = await a.api.post('/api/v1/messages', { conversation_id: c, content });
        expect(res.status, `${Buffer.byteLength(content)} bytes: ${JSON.stringify(res.body).slice(0, 200)}`).toBe(status);
        if (status === 413) expect(res.body.error.code).toBe('payload_too_large');
        else expect(res.body.message.content).toBe(content);
      }
    });

    it('an edit over MAX_MESSAGE_BYTES → 413 and the message is unchanged', async () => {
      const [a, b] = await users(2, small);
      const c = await direct(a, b);
      const m = await send(a, c, 'short');
      expectError(await a.api.patch(`/api/v1/messages/${m.id}`, { content: 'ü'.repeat(SMALL_LIMIT) }), 413, 'payload_too_large');
      const back = await b.api.get(`/api/v1/conversations/${c}/messages`);
      expect(back.body.messages[0].content).toBe('short');
      expect(back.body.messages[0].edited_at).toBeNull();
    });
  });

  describe('reply_to_id', () => {
    it('a reply names a message of the same conversation and is echoed and stored', async () => {
      const [a, b] = await users(2);
      const c = await direct(a, b);
      const original = await send(a, c, 'question?');
      const reply = await send(b, c, 'answer', { reply_to_id: original.id });
      expect(reply.reply_to_id).toBe(original.id);
      expect((await page(a, c)).body.messages[1].reply_to_id).toBe(original.id);
    });

    it('a message of another conversation → 400 field reply_to_id, nothing stored', async () => {
      const [a, b, x] = await users(3);
      const c = await direct(a, b);
      const elsewhere = await send(a, await direct(a, x), 'elsewhere');
      expectError(await a.api.post('/api/v1/messages', { conversation_id: c, content: 'r', reply_to_id: elsewhere.id }), 400, 'invalid_request', 'reply_to_id');
      expect(await countRows('SELECT count(*) AS n FROM messages WHERE conversation_id = $1', [c])).toBe(0);
    });

    it('an unknown message id or a bad uuid → 400 field reply_to_id', async () => {
      const [a, b] = await users(2);
      const c = await direct(a, b);
      expectError(await a.api.post('/api/v1/messages', { conversation_id: c, content: 'r', reply_to_id: randomUUID() }), 400, 'invalid_request', 'reply_to_id');
      expectError(await a.api.post('/api/v1/messages', { conversation_id: c, content: 'r', reply_to_id: 'nope' }), 400, 'invalid_request', 'reply_to_id');
    });
  });

  describe('signature', () => {
    it('up to 256 characters is stored and returned as given', async () => {
      const [a, b] = await users(2);
      const c = await direct(a, b);
      const signature = ('5Kd3NBUAdUnhyzenEwVLy9pBKxSwXvE9FMPyR4UKZvpe6E3AgLr' + 'ü€😀').repeat(10).slice(0, 256);
      expect([...signature].length).toBeLessThanOrEqual(256);
      const m = await send(a, c, 'signed', { signature });
      expect(m.signature).toBe(signature);
      expect((await page(b, c)).body.messages[0].signature).toBe(signature);
      const { rows } = await srv.pool.query('SELECT signature FROM messages WHERE id = $1', [m.id]);
      expect(rows[0].signature).toBe(signature);
      const exact = 'S'.repeat(256);
      expect((await send(a, c, 'signed 256', { signature: exact })).signature).toBe(exact);
    });

    it('257 characters → 400 field signature', async () => {
      const [a, b] = await users(2);
      const c = await direct(a, b);
      expectError(await a.api.post('/api/v1/messages', { conversation_id: c, content: 'x', signature: 'S'.repeat(257) }), 400, 'invalid_request', 'signature');
      expectError(await a.api.post('/api/v1/messages', { conversation_id: c, content: 'x', signature: 12 }), 400, 'invalid_request', 'signature');
      expect(await countRows('SELECT count(*) AS n FROM messages WHERE conversation_id = $1', [c])).toBe(0);
    });
  });

  describe('idempotent client_message_id', () => {
    it('a repeat returns 200 with the original message and creates nothing', async () => {
      const [a, b] = await users(2);
      const c = await direct(a, b);
      const body = { conversation_id: c, content: 'once only', client_message_id: 'cmid-1', content_type: 'markdown' };
      const first = await a.api.post('/api/v1/messages', body);
      expect(first.status).toBe(201);
      expect(first.body.message.client_message_id).toBe('cmid-1');
      const metaBefore = await countRows('SELECT count(*) AS n FROM message_encryption_metadata e JOIN messages m ON m.id = e.message_id WHERE m.conversation_id = $1', [c]);
      const again = await a.api.post('/api/v1/messages', body);
      expect(again.status, JSON.stringify(again.body)).toBe(200);
      expect(again.body.message).toEqual(first.body.message);
      expect(await countRows('SELECT count(*) AS n FROM messages WHERE conversation_id = $1', [c])).toBe(1);
      expect(await countRows('SELECT count(*) AS n FROM message_encryption_metadata e JOIN messages m ON m.id = e.message_id WHERE m.conversation_id = $1', [c])).toBe(metaBefore);
      const conv = await a.api.get(`/api/v1/conversations/${c}`);
      expect(conv.body.conversation.last_seq).toBe(1);
      // the next new message gets the next seq (no seq was burnt)
      expect((await send(a, c, 'next')).seq).toBe(2);
    });

    it('a retry with different content answers the stored message (what recipients see), also when ten race', async () => {
      const [a, b] = await users(2);
      const c = await direct(a, b);
      const first = await a.api.post('/api/v1/messages', { conversation_id: c, content: 'the original', client_message_id: 'diff-1' });
      expect(first.status).toBe(201);
      const retry = await a.api.post('/api/v1/messages', { conversation_id: c, content: 'something else', client_message_id: 'diff-1' });
      expect(retry.status).toBe(200);
      expect(retry.body.message.content).toBe('the original');
      expect(retry.body.message).toEqual(first.body.message);
      const raced = await Promise.all(
        Array.from({ length: 10 }, (_, i) => a.api.post('/api/v1/messages', { conversation_id: c, content: `racer ${i}`, client_message_id: 'race-1' })),
      );
      const stored = (await b.api.get(`/api/v1/conversations/${c}/messages?limit=10`)).body.messages.find((m: any) => m.client_message_id === 'race-1');
      expect(raced.filter((r) => r.status === 201)).toHaveLength(1);
      for (const r of raced) expect(r.body.message.content).toBe(stored.content);
    });

    it('a repeat via recipient_id is also a replay', async () => {
      const [a, b] = await users(2);
      const body = { recipient_id: b.user.id, content: 'hi', client_message_id: 'r-1' };
      const first = await a.api.post('/api/v1/messages', body);
      expect(first.status).toBe(201);
      const again = await a.api.post('/api/v1/messages', body);
      expect(again.status).toBe(200);
      expect(again.body.message.id).toBe(first.body.message.id);
      expect(await countRows('SELECT count(*) AS n FROM messages WHERE conversation_id = $1', [first.body.message.conversation_id])).toBe(1);
    });

    it('the same client_message_id from another sender, or in another conversation, is a new message', async () => {
      const [a, b, x] = await users(3);
      const c = await direct(a, b);
      const c2 = await direct(a, x);
      const m1 = await send(a, c, 'from a', { client_message_id: 'shared' });
      const m2 = await send(b, c, 'from b', { client_message_id: 'shared' });
      const m3 = await send(a, c2, 'from a elsewhere', { client_message_id: 'shared' });
      expect(new Set([m1.id, m2.id, m3.id]).size).toBe(3);
      expect(m2.seq).toBe(2);
    });

    it('10 concurrent sends with one client_message_id → one row, one 201, the rest 200 with the same message', async () => {
      const [a, b] = await users(2);
      const c = await direct(a, b);
      const body = { conversation_id: c, content: 'racing', client_message_id: 'race-1' };
      const results = await Promise.all(Array.from({ length: 10 }, () => a.api.post('/api/v1/messages', body)));
      for (const r of results) expect([200, 201], JSON.stringify(r.body)).toContain(r.status);
      expect(results.filter((r) => r.status === 201)).toHaveLength(1);
      expect(new Set(results.map((r) => r.body.message.id)).size).toBe(1);
      expect(new Set(results.map((r) => r.body.message.seq))).toEqual(new Set([1]));
      expect(await countRows('SELECT count(*) AS n FROM messages WHERE conversation_id = $1', [c])).toBe(1);
      expect(await countRows(`SELECT count(*) AS n FROM messages WHERE client_message_id = 'race-1' AND sender_id = $1`, [a.user.id])).toBe(1);
      const conv = await a.api.get(`/api/v1/conversations/${c}`);
      expect(conv.body.conversation.last_seq).toBe(1);
      expect((await send(a, c, 'after the race')).seq).toBe(2);
    });

    it('repeated races (40 rounds × 10 concurrent sends of one client_message_id) never fail and never duplicate', async () => {
      const [a, b] = await users(2);
      const c = await direct(a, b);
      const problems: string[] = [];
      for (let round = 0; round < 40; round++) {
        const body = { conversation_id: c, content: `round ${round}`, client_message_id: `round-${round}` };
        const results = await Promise.all(Array.from({ length: 10 }, () => a.api.post('/api/v1/messages', body)));
        const statuses = results.map((r) => r.status).sort();
        const ids = new Set(results.map((r) => r.body?.message?.id));
        if (statuses.filter((s) => s === 201).length !== 1 || statuses.some((s) => s !== 200 && s !== 201) || ids.size !== 1) {
          problems.push(`round ${round}: statuses ${statuses.join(',')} ${JSON.stringify(results.find((r) => r.status >= 300)?.body ?? null)}`);
        }
      }
      expect(problems).toEqual([]);
      expect(await countRows('SELECT count(*) AS n FROM messages WHERE conversation_id = $1', [c])).toBe(40);
      const { rows } = await srv.pool.query('SELECT seq FROM messages WHERE conversation_id = $1 ORDER BY seq', [c]);
      expect(rows.map((r) => Number(r.seq))).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    });

    it('client_message_id longer than 128 characters or not a string → 400 field client_message_id', async () => {
      const [a, b] = await users(2);
      const c = await direct(a, b);
      expectError(await a.api.post('/api/v1/messages', { conversation_id: c, content: 'x', client_message_id: 'c'.repeat(129) }), 400, 'invalid_request', 'client_message_id');
      expectError(await a.api.post('/api/v1/messages', { conversation_id: c, content: 'x', client_message_id: 7 }), 400, 'invalid_request', 'client_message_id');
    });
  });

  it('50 concurrent senders into one group → seqs 1..50, gap-free and unique', async () => {
    const members = await users(50);
    const [owner, ...rest] = members;
    const g = await group(owner!, rest);
    const results = await Promise.all(members.map((u, i) => u.api.post('/api/v1/messages', { conversation_id: g, content: `msg ${i}` })));
    for (const r of results) expect(r.status, JSON.stringify(r.body)).toBe(201);
    const seqs = results.map((r) => r.body.message.seq).sort((x, y) => x - y);
    expect(seqs).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    const { rows } = await srv.pool.query('SELECT seq FROM messages WHERE conversation_id = $1 ORDER BY seq', [g]);
    expect(rows.map((r) => Number(r.seq))).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    const conv = await owner!.api.get(`/api/v1/conversations/${g}`);
    expect(conv.body.conversation.last_seq).toBe(50);
    // each response's seq matches its content as read back
    const read = (await page(owner!, g)).body.messages;
    const bySeq = new Map(read.map((m: any) => [m.seq, m.content]));
    for (const r of results) expect(bySeq.get(r.body.message.seq)).toBe(r.body.message.content);
  });

  it('RATE_LIMIT_SEND_PER_MIN: sends beyond the per-user limit → 429 rate_limited with Retry-After; others unaffected', async () => {
    const limited = await startTestServer({ env: { RATE_LIMIT_SEND_PER_MIN: '3' } });
    try {
      const [a, b] = await users(2, limited);
      const c = await direct(a, b);
      await awayFromWindowEdge(); // the four sends in one window (it failed once across a boundary)
      for (let i = 0; i < 3; i++) expect((await a.api.post('/api/v1/messages', { conversation_id: c, content: `ok ${i}` })).status).toBe(201);
      const over = await a.api.post('/api/v1/messages', { conversation_id: c, content: 'one too many' });
      expectError(over, 429, 'rate_limited');
      const retryAfter = Number(over.headers.get('retry-after'));
      expect(Number.isInteger(retryAfter) && retryAfter > 0 && retryAfter <= 60).toBe(true);
      // the limit is per user
      expect((await b.api.post('/api/v1/messages', { conversation_id: c, content: 'b is fine' })).status).toBe(201);
      const { rows } = await limited.pool.query('SELECT count(*)::int AS n FROM messages WHERE conversation_id = $1 AND sender_id = $2', [c, a.user.id]);
      expect(rows[0].n).toBe(3);
    } finally {
      await limited.close();
    }
  });

  it('a non-member cannot send (404) and nothing is stored', async () => {
    const [a, b, outsider] = await users(3);
    const c = await direct(a, b);
    expectError(await outsider.api.post('/api/v1/messages', { conversation_id: c, content: 'intrusion' }), 404, 'not_found');
    expectError(await a.api.post('/api/v1/messages', { conversation_id: randomUUID(), content: 'nowhere' }), 404, 'not_found');
    expect(await countRows('SELECT count(*) AS n FROM messages WHERE conversation_id = $1', [c])).toBe(0);
  });
});

// ---------------------------------------------------------------- history paging

describe('GET /conversations/{id}/messages', () => {
  let a: SignedInUser;
  let b: SignedInUser;
  let c: string;
  const N = 25;

  beforeAll(async () => {
    [a, b] = await users(2);
    c = await direct(a, b);
    for (let i = 1; i <= N; i++) await send(i % 2 ? a : b, c, `message ${i}`);
  });

  const seqsOf = (res: ApiResponse) => res.body.messages.map((m: any) => m.seq);
  const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

  it('without a cursor: the newest `limit` messages in ascending order, has_more for older ones', async () => {
    const res = await page(a, c, 'limit=10');
    expect(res.status).toBe(200);
    expect(Object.keys(res.body).sort()).toEqual(['has_more', 'messages']);
    expect(seqsOf(res)).toEqual(range(16, 25));
    expect(res.body.has_more).toBe(true);
    expect(res.body.messages.map((m: any) => m.content)).toEqual(range(16, 25).map((i) => `message ${i}`));
    for (const m of res.body.messages) expectMessageShape(m);
  });

  it('default limit is 50; exact limits decide has_more', async () => {
    const all = await b.api.get(`/api/v1/conversations/${c}/messages`);
    expect(seqsOf(all)).toEqual(range(1, 25));
    expect(all.body.has_more).toBe(false);
    expect((await page(a, c, 'limit=25')).body.has_more).toBe(false);
    const l24 = await page(a, c, 'limit=24');
    expect(seqsOf(l24)).toEqual(range(2, 25));
    expect(l24.body.has_more).toBe(true);
  });

  it('before_seq pages towards older messages', async () => {
    const p1 = await page(a, c, 'limit=10&before_seq=16');
    expect(seqsOf(p1)).toEqual(range(6, 15));
    expect(p1.body.has_more).toBe(true);
    const p2 = await page(a, c, 'limit=10&before_seq=6');
    expect(seqsOf(p2)).toEqual(range(1, 5));
    expect(p2.body.has_more).toBe(false);
    const p3 = await page(a, c, 'limit=5&before_seq=6');
    expect(seqsOf(p3)).toEqual(range(1, 5));
    expect(p3.body.has_more).toBe(false);
    const none = await page(a, c, 'before_seq=1');
    expect(none.body).toEqual({ messages: [], has_more: false });
    const beyond = await page(a, c, 'limit=3&before_seq=1000');
    expect(seqsOf(beyond)).toEqual([23, 24, 25]);
    expect(beyond.body.has_more).toBe(true);
  });

  it('after_seq pages towards newer messages', async () => {
    const p1 = await page(a, c, 'limit=10&after_seq=0');
    expect(seqsOf(p1)).toEqual(range(1, 10));
    expect(p1.body.has_more).toBe(true);
    const p2 = await page(a, c, 'limit=10&after_seq=15');
    expect(seqsOf(p2)).toEqual(range(16, 25));
    expect(p2.body.has_more).toBe(false);
    const p3 = await page(a, c, 'limit=10&after_seq=20');
    expect(seqsOf(p3)).toEqual(range(21, 25));
    expect(p3.body.has_more).toBe(false);
    const p4 = await page(a, c, 'limit=4&after_seq=20');
    expect(seqsOf(p4)).toEqual(range(21, 24));
    expect(p4.body.has_more).toBe(true);
    expect((await page(a, c, 'after_seq=25')).body).toEqual({ messages: [], has_more: false });
  });

  it('walking with after_seq visits every message exactly once', async () => {
    const seen: number[] = [];
    let after = 0;
    for (let i = 0; i < 20; i++) {
      const res = await page(b, c, `limit=7&after_seq=${after}`);
      seen.push(...seqsOf(res));
      if (!res.body.has_more) break;
      after = seen[seen.length - 1]!;
    }
    expect(seen).toEqual(range(1, 25));
  });

  it('both cursors at once → 400 field before_seq', async () => {
    expectError(await page(a, c, 'before_seq=10&after_seq=2'), 400, 'invalid_request', 'before_seq');
  });

  it.each(['0', '201', '-1', 'ten', '2.5'])('limit=%s → 400 field limit', async (limit) => {
    expectError(await page(a, c, `limit=${limit}`), 400, 'invalid_request', 'limit');
  });

  it('limit 1 and 200 are accepted', async () => {
    const one = await page(a, c, 'limit=1');
    expect(seqsOf(one)).toEqual([25]);
    expect(one.body.has_more).toBe(true);
    expect(seqsOf(await page(a, c, 'limit=200'))).toEqual(range(1, 25));
  });

  it('malformed cursors → 400 naming the cursor', async () => {
    expectError(await page(a, c, 'before_seq=abc'), 400, 'invalid_request', 'before_seq');
    expectError(await page(a, c, 'before_seq=-3'), 400, 'invalid_request', 'before_seq');
    expectError(await page(a, c, 'after_seq=1.5'), 400, 'invalid_request', 'after_seq');
  });

  it('GET /messages?conv_id= is an alias', async () => {
    const alias = await a.api.get(`/api/v1/messages?conv_id=${c}&limit=10&before_seq=16`);
    expect(alias.status).toBe(200);
    expect(alias.body).toEqual((await page(a, c, 'limit=10&before_seq=16')).body);
    const latest = await b.api.get(`/api/v1/messages?conv_id=${c}`);
    expect(seqsOf(latest)).toEqual(range(1, 25));
    expectError(await a.api.get('/api/v1/messages'), 400, 'invalid_request', 'conv_id');
    expectError(await a.api.get('/api/v1/messages?conv_id=nope'), 400, 'invalid_request', 'conv_id');
    expectError(await a.api.get(`/api/v1/messages?conv_id=${c}&before_seq=3&after_seq=1`), 400, 'invalid_request', 'before_seq');
  });

  it('a non-member gets 404 on both forms; a bad id is 400 field id', async () => {
    const outsider = await user();
    expectError(await page(outsider, c), 404, 'not_found');
    expectError(await outsider.api.get(`/api/v1/messages?conv_id=${c}`), 404, 'not_found');
    expectError(await page(outsider, randomUUID()), 404, 'not_found');
    expectError(await a.api.get('/api/v1/conversations/xyz/messages'), 400, 'invalid_request', 'id');
  });
});

// ---------------------------------------------------------------- warm history pages

describe('history pages stay coherent after they were read', () => {
  it('sends, edits, deletes, receipts and rotations show up on a page that was read before', async () => {
    const [a, b] = await users(2);
    const c = await direct(a, b);
    const m1 = await send(a, c, 'one');
    const m2 = await send(a, c, 'two');
    const read = async () => (await page(b, c, 'limit=50')).body.messages;
    expect((await read()).map((m: any) => m.content)).toEqual(['one', 'two']);
    await send(b, c, 'three');
    expect((await read()).map((m: any) => m.content)).toEqual(['one', 'two', 'three']);
    await a.api.patch(`/api/v1/messages/${m1.id}`, { content: 'one (edited)' });
    const edited = await read();
    expect(edited[0].content).toBe('one (edited)');
    expect(edited[0].edited_at).not.toBeNull();
    await a.api.delete(`/api/v1/messages/${m2.id}`);
    expect((await read())[1]).toMatchObject({ id: m2.id, content: null, deleted: true });
    expect((await read()).map((m: any) => m.status)).toEqual(['sent', 'sent', 'sent']);
    await b.api.post(`/api/v1/conversations/${c}/read`, { seq: 2 });
    expect((await read()).map((m: any) => m.status)).toEqual(['read', 'read', 'sent']);
    await a.api.post(`/api/v1/conversations/${c}/rotate-key`);
    await send(a, c, 'four (v2)');
    expect((await read()).map((m: any) => m.content)).toEqual(['one (edited)', null, 'three', 'four (v2)']);
    // has_more and the alias follow as well
    expect((await page(b, c, 'limit=3')).body.has_more).toBe(true);
    expect((await b.api.get(`/api/v1/messages?conv_id=${c}&limit=50`)).body.messages).toHaveLength(4);
  });

  it('a member removed after reading a page cannot read it again (404)', async () => {
    const [a, b, x] = await users(3);
    const g = await group(a, [b, x]);
    await send(a, g, 'secret');
    expect((await page(b, g)).status).toBe(200);
    expect((await a.api.delete(`/api/v1/conversations/${g}/members/${b.user.id}`)).status).toBe(204);
    expectError(await page(b, g), 404, 'not_found');
  });

  it('an edit or delete through another instance shows on this instance’s already-read page', async () => {
    const other = await startTestServer({ database: srv.database });
    try {
      const [a, b] = await users(2);
      const c = await direct(a, b);
      const m1 = await send(a, c, 'original');
      const m2 = await send(a, c, 'to delete');
      expect((await page(b, c)).body.messages.map((m: any) => m.content)).toEqual(['original', 'to delete']);
      const a2 = await signIn(other.baseUrl, a.wallet);
      expect((await a2.api.patch(`/api/v1/messages/${m1.id}`, { content: 'edited elsewhere' })).status).toBe(200);
      expect((await a2.api.delete(`/api/v1/messages/${m2.id}`)).status).toBe(200);
      const seen = (await page(b, c)).body.messages;
      expect(seen.map((m: any) => [m.content, m.deleted])).toEqual([
        ['edited elsewhere', false],
        [null, true],
      ]);
    } finally {
      await other.close();
    }
  });
});

// ---------------------------------------------------------------- edit

describe('PATCH /messages/{id}', () => {
  it('the sender edits: new content, edited_at set, re-encrypted with a new nonce', async () => {
    const [a, b] = await users(2);
    const c = await direct(a, b);
    const m = await send(a, c, 'original text');
    const before = await srv.pool.query(
      'SELECT m.content, e.nonce, e.tag FROM messages m JOIN message_encryption_metadata e ON e.message_id = m.id WHERE m.id = $1',
      [m.id],
    );
    const res = await a.api.patch(`/api/v1/messages/${m.id}`, { content: 'edited text' });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expectMessageShape(res.body.message);
    expect(res.body.message).toMatchObject({ id: m.id, seq: m.seq, content: 'edited text', deleted: false, sender_id: a.user.id, conversation_id: c });
    expect(res.body.message.edited_at).toMatch(ISO_UTC);
    expect(res.body.message.created_at).toBe(m.created_at);
    const after = await srv.pool.query(
      'SELECT m.content, m.edited_at, e.nonce, e.tag FROM messages m JOIN message_encryption_metadata e ON e.message_id = m.id WHERE m.id = $1',
      [m.id],
    );
    expect(after.rows).toHaveLength(1);
    expect(after.rows[0].edited_at).not.toBeNull();
    expect(Buffer.compare(after.rows[0].nonce, before.rows[0].nonce)).not.toBe(0);
    expect(Buffer.compare(after.rows[0].content, before.rows[0].content)).not.toBe(0);
    const seen = (await page(b, c)).body.messages[0];
    expect(seen.content).toBe('edited text');
    expect(seen.edited_at).toBe(res.body.message.edited_at);
    // editing twice gives yet another nonce
    await a.api.patch(`/api/v1/messages/${m.id}`, { content: 'edited text' });
    const third = await srv.pool.query('SELECT nonce FROM message_encryption_metadata WHERE message_id = $1', [m.id]);
    expect(Buffer.compare(third.rows[0].nonce, after.rows[0].nonce)).not.toBe(0);
    expect(await countRows('SELECT count(*) AS n FROM messages WHERE conversation_id = $1', [c])).toBe(1);
  });

  it('another member → 403 and the message is unchanged', async () => {
    const [a, b] = await users(2);
    const c = await direct(a, b);
    const m = await send(a, c, 'mine');
    expectError(await b.api.patch(`/api/v1/messages/${m.id}`, { content: 'hijacked' }), 403, 'forbidden');
    const seen = (await page(a, c)).body.messages[0];
    expect(seen.content).toBe('mine');
    expect(seen.edited_at).toBeNull();
  });

  it('a deleted message → 409', async () => {
    const [a, b] = await users(2);
    const c = await direct(a, b);
    const m = await send(a, c, 'soon gone');
    expect((await a.api.delete(`/api/v1/messages/${m.id}`)).status).toBe(200);
    expectError(await a.api.patch(`/api/v1/messages/${m.id}`, { content: 'resurrect' }), 409, 'conflict');
    const seen = (await page(b, c)).body.messages[0];
    expect(seen.deleted).toBe(true);
    expect(seen.content).toBeNull();
    expect(await countRows('SELECT count(*) AS n FROM message_encryption_metadata WHERE message_id = $1', [m.id])).toBe(0);
  });

  it('empty content → 400 field content; unknown id → 404; bad id → 400 field id; outsider → 404', async () => {
    const [a, b, outsider] = await users(3);
    const c = await direct(a, b);
    const m = await send(a, c, 'x');
    expectError(await a.api.patch(`/api/v1/messages/${m.id}`, { content: '' }), 400, 'invalid_request', 'content');
    expectError(await a.api.patch(`/api/v1/messages/${m.id}`, {}), 400, 'invalid_request', 'content');
    expectError(await a.api.patch(`/api/v1/messages/${randomUUID()}`, { content: 'y' }), 404, 'not_found');
    expectError(await a.api.patch('/api/v1/messages/nope', { content: 'y' }), 400, 'invalid_request', 'id');
    expectError(await outsider.api.patch(`/api/v1/messages/${m.id}`, { content: 'y' }), 404, 'not_found');
  });
});

// ---------------------------------------------------------------- delete

describe('DELETE /messages/{id}', () => {
  it('leaves a tombstone: content null, deleted true; ciphertext and metadata gone', async () => {
    const [a, b] = await users(2);
    const c = await direct(a, b);
    const keep1 = await send(a, c, 'keep 1');
    const m = await send(a, c, 'delete me', { client_message_id: 'del-1', signature: 'sig' });
    const keep2 = await send(b, c, 'keep 2', { reply_to_id: m.id });
    const res = await a.api.delete(`/api/v1/messages/${m.id}`);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expectMessageShape(res.body.message);
    expect(res.body.message).toMatchObject({ id: m.id, seq: m.seq, conversation_id: c, sender_id: a.user.id, content: null, deleted: true });
    expect(res.body.message.integrity_error).toBeUndefined();

    const { rows } = await srv.pool.query('SELECT content, deleted_at FROM messages WHERE id = $1', [m.id]);
    expect(rows).toHaveLength(1);
    expect(rows[0].content === null || rows[0].content.length === 0 || rows[0].content.every((x: number) => x === 0)).toBe(true);
    expect(rows[0].deleted_at).not.toBeNull();
    expect(await countRows('SELECT count(*) AS n FROM message_encryption_metadata WHERE message_id = $1', [m.id])).toBe(0);

    const msgs = (await page(b, c)).body.messages;
    expect(msgs.map((x: any) => x.seq)).toEqual([keep1.seq, m.seq, keep2.seq]);
    expect(msgs[1]).toMatchObject({ id: m.id, content: null, deleted: true });
    expect(msgs[1].integrity_error).toBeUndefined();
    expect(msgs[0].content).toBe('keep 1');
    expect(msgs[2].content).toBe('keep 2');
    expect(msgs[2].reply_to_id).toBe(m.id);
    // deleting again changes nothing and still answers with the tombstone
    const again = await a.api.delete(`/api/v1/messages/${m.id}`);
    expect(again.status).toBe(200);
    expect(again.body.message).toMatchObject({ id: m.id, content: null, deleted: true });
  });

  it('another member → 403 and the message survives', async () => {
    const [a, b] = await users(2);
    const c = await direct(a, b);
    const m = await send(a, c, 'not yours');
    expectError(await b.api.delete(`/api/v1/messages/${m.id}`), 403, 'forbidden');
    const seen = (await page(a, c)).body.messages[0];
    expect(seen.deleted).toBe(false);
    expect(seen.content).toBe('not yours');
  });

  it('unknown id → 404; bad id → 400 field id; outsider → 404', async () => {
    const [a, b, outsider] = await users(3);
    const c = await direct(a, b);
    const m = await send(a, c, 'x');
    expectError(await a.api.delete(`/api/v1/messages/${randomUUID()}`), 404, 'not_found');
    expectError(await a.api.delete('/api/v1/messages/nope'), 400, 'invalid_request', 'id');
    expectError(await outsider.api.delete(`/api/v1/messages/${m.id}`), 404, 'not_found');
    expect((await page(a, c)).body.messages[0].deleted).toBe(false);
  });

  it('an idempotent replay of a deleted message does not resurrect it or create another', async () => {
    const [a, b] = await users(2);
    const c = await direct(a, b);
    const body = { conversation_id: c, content: 'then deleted', client_message_id: 'gone-1' };
    const first = await a.api.post('/api/v1/messages', body);
    await a.api.delete(`/api/v1/messages/${first.body.message.id}`);
    const again = await a.api.post('/api/v1/messages', body);
    expect(again.status).toBe(200);
    expect(again.body.message.id).toBe(first.body.message.id);
    expect(again.body.message.deleted).toBe(true);
    expect(again.body.message.content).toBeNull();
    expect(await countRows('SELECT count(*) AS n FROM messages WHERE conversation_id = $1', [c])).toBe(1);
  });
});
