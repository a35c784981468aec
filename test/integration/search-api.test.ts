// Integration tests: GET /api/v1/search over the blind index (docs/design.md, search) through the real HTTP API.
// Exactness against a brute-force scan of the plaintexts, paging and ordering, validation and
// cursors, the conversation filter, the message objects returned, edits and deletes reflected at
// once, membership as the only gate, the `search` audit, and multilingual text end to end.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { searchWords } from '../../src/crypto/search-tokens.js';
import type { ApiResponse } from '../helpers/http.js';
import { signIn, startTestServer, type SignedInUser, type TestServer } from '../helpers/server.js';
import { openSocket } from '../helpers/socket.js';

// ---------------------------------------------------------------- local helpers

const MESSAGE_KEYS = [
  'client_message_id', 'content', 'content_type', 'conversation_id', 'created_at', 'deleted', 'edited_at', 'id',
  'reply_to_id', 'sender_id', 'seq', 'signature', 'status', 'updated_at',
].sort();
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

let srv: TestServer;

beforeAll(async () => {
  // bursts of searches, edits and deletes far beyond a person's: the per-user limits are off here
  srv = await startTestServer({ env: { RATE_LIMIT_SEND_PER_MIN: '0', RATE_LIMIT_SEARCH_PER_MIN: '0', RATE_LIMIT_EDIT_PER_MIN: '0', RATE_LIMIT_DELETE_PER_MIN: '0' } });
});

afterAll(async () => {
  await srv?.close();
});

function expectError(res: ApiResponse, status: number, code: string, field?: string): void {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.body?.error?.code, JSON.stringify(res.body)).toBe(code);
  expect(typeof res.body.error.message).toBe('string');
  if (field !== undefined) expect(res.body.error.field, JSON.stringify(res.body)).toBe(field);
}

const users = (n: number) => Promise.all(Array.from({ length: n }, () => signIn(srv.baseUrl)));

async function group(owner: SignedInUser, members: SignedInUser[], title = 'search'): Promise<string> {
  const res = await owner.api.post('/api/v1/conversations', { type: 'group', title, member_ids: members.map((m) => m.user.id) });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.conversation.id;
}

async function direct(a: SignedInUser, b: SignedInUser): Promise<string> {
  const res = await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] });
  expect([200, 201]).toContain(res.status);
  return res.body.conversation.id;
}

async function send(u: SignedInUser, conversationId: string, content: string, extra: Record<string, unknown> = {}): Promise<any> {
  const res = await u.api.post('/api/v1/messages', { conversation_id: conversationId, content, ...extra });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.message;
}

async function edit(u: SignedInUser, id: string, content: string): Promise<any> {
  const res = await u.api.patch(`/api/v1/messages/${id}`, { content });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.message;
}

async function remove(u: SignedInUser, id: string): Promise<any> {
  const res = await u.api.delete(`/api/v1/messages/${id}`);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.message;
}

function searchPath(q: string, params: Record<string, string | number | undefined> = {}): string {
  let path = `/api/v1/search?q=${encodeURIComponent(q)}`;
  for (const [k, v] of Object.entries(params)) if (v !== undefined) path += `&${k}=${encodeURIComponent(String(v))}`;
  return path;
}

function search(u: SignedInUser, q: string, params: Record<string, string | number | undefined> = {}): Promise<ApiResponse> {
  return u.api.get(searchPath(q, params));
}

/** One page, asserted to be a well-formed 200. */
async function searchOk(u: SignedInUser, q: string, params: Record<string, string | number | undefined> = {}): Promise<{ results: any[]; next_cursor: string | null }> {
  const res = await search(u, q, params);
  expect(res.status, `${q}: ${JSON.stringify(res.body)}`).toBe(200);
  expect(Object.keys(res.body).sort()).toEqual(['next_cursor', 'results']);
  expect(Array.isArray(res.body.results)).toBe(true);
  for (const r of res.body.results) expect(Object.keys(r)).toEqual(['message']);
  expect(res.body.next_cursor === null || typeof res.body.next_cursor === 'string').toBe(true);
  return res.body;
}

/** Pages through every result with `next_cursor`; checks page sizes and that no id repeats. */
async function searchAll(u: SignedInUser, q: string, limit: number, conversationId?: string): Promise<{ messages: any[]; pages: number }> {
  const messages: any[] = [];
  let before: string | undefined;
  let pages = 0;
  for (;;) {
    const page = await searchOk(u, q, { limit, before, conversation_id: conversationId });
    pages++;
    if (page.next_cursor !== null) expect(page.results, `non-final page of "${q}" (limit ${limit})`).toHaveLength(limit);
    else expect(page.results.length).toBeLessThanOrEqual(limit);
    messages.push(...page.results.map((r) => r.message));
    if (page.next_cursor === null) break;
    before = page.next_cursor;
    expect(pages, 'runaway paging').toBeLessThan(1000);
  }
  const ids = messages.map((m) => m.id);
  expect(new Set(ids).size, `duplicate ids across pages of "${q}"`).toBe(ids.length);
  return { messages, pages };
}

const ids = (messages: any[]) => messages.map((m) => m.id);
const idSet = (messages: any[]) => [...ids(messages)].sort();

/** Creation time of messages in microseconds, from the database (responses only carry ms). */
async function createdUs(messageIds: string[]): Promise<Map<string, bigint>> {
  const { rows } = await srv.pool.query<{ id: string; us: string }>(
    `SELECT id, (extract(epoch FROM created_at) * 1000000)::bigint::text AS us FROM messages WHERE id = ANY($1::uuid[])`,
    [messageIds],
  );
  return new Map(rows.map((r) => [r.id, BigInt(r.us)]));
}

/** Newest first by creation (docs/design.md, search): creation times never increase along the result list. */
async function expectNewestFirst(messages: any[]): Promise<void> {
  const times = await createdUs(ids(messages));
  for (let i = 1; i < messages.length; i++) {
    const prev = times.get(messages[i - 1].id)!;
    const cur = times.get(messages[i].id)!;
    expect(cur <= prev, `result ${i} (${messages[i].id}) is newer than result ${i - 1}`).toBe(true);
    expect(Date.parse(messages[i].created_at)).toBeLessThanOrEqual(Date.parse(messages[i - 1].created_at));
  }
}

function expectMessageShape(m: any): void {
  expect(Object.keys(m).filter((k) => k !== 'integrity_error').sort()).toEqual(MESSAGE_KEYS);
  expect(typeof m.seq).toBe('number');
  expect(m.created_at).toMatch(ISO_UTC);
  expect(m.updated_at).toMatch(ISO_UTC);
  if (m.edited_at !== null) expect(m.edited_at).toMatch(ISO_UTC);
  expect(m.deleted).toBe(false);
  expect(typeof m.content).toBe('string');
  expect(['sent', 'delivered', 'read']).toContain(m.status);
}

async function inParallel<T>(items: T[], concurrency: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Deterministic PRNG (mulberry32), so a failure reproduces. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------- exactness against brute force

describe('search finds exactly the messages holding every query word (brute force over a few hundred messages)', () => {
  // A small vocabulary so that words repeat a lot, multilingual on purpose.
  const VOCAB = [
    'apple', 'banana', 'cherry', 'delta', 'echo', 'foxtrot', 'golf', 'hotel',
    'Привет', 'мир', 'дом', 'Grüße', 'Köln', 'straße', 'über', 'café', 'ñandú',
    '北京', '天安门', '東京', 'タワー', 'สวัสดี', '42', '2024', 'x',
  ];
  const SEPARATORS = [' ', ' ', ' ', ', ', '! ', ' 🎉 ', '\n', ' — ', '-', '', '. '];
  const rnd = prng(0x5eac4);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rnd() * list.length)]!;

  let u: SignedInUser[];
  let conversations: { id: string; members: SignedInUser[] }[];
  /** Live messages: id → { content, conversationId }. Deleted ones are removed. */
  const live = new Map<string, { content: string; conversationId: string; sender: SignedInUser }>();

  function randomText(): string {
    const n = 1 + Math.floor(rnd() * 7);
    let text = '';
    for (let i = 0; i < n; i++) {
      let w = pick(VOCAB);
      const r = rnd();
      if (r < 0.1) w = w.toUpperCase();
      else if (r < 0.2) w = w.normalize('NFD');
      text += (i ? pick(SEPARATORS) : '') + w;
    }
    return text;
  }

  function expected(viewer: SignedInUser, q: string, conversationId?: string): string[] {
    const words = searchWords(q);
    const member = new Set(conversations.filter((c) => c.members.includes(viewer)).map((c) => c.id));
    const out: string[] = [];
    for (const [id, m] of live) {
      if (!member.has(m.conversationId)) continue;
      if (conversationId && m.conversationId !== conversationId) continue;
      const have = new Set(searchWords(m.content));
      if (words.every((w) => have.has(w))) out.push(id);
    }
    return out.sort();
  }

  function randomQuery(): string {
    const n = 1 + Math.floor(rnd() * 3);
    const words: string[] = [];
    // Half of the queries take their words from one existing message, so most have results.
    if (rnd() < 0.5) {
      const all = [...live.values()];
      const source = searchWords(pick(all).content);
      for (let i = 0; i < n && source.length; i++) words.push(pick(source));
    } else {
      for (let i = 0; i < n; i++) words.push(pick(VOCAB));
    }
    const r = rnd();
    const q = words.join(pick([' ', ', ', ' + ', ' 🎉 ']));
    return r < 0.15 ? q.toUpperCase() : r < 0.3 ? q.normalize('NFD') : q;
  }

  beforeAll(async () => {
    u = await users(4);
    const [a, b, c, d] = u as [SignedInUser, SignedInUser, SignedInUser, SignedInUser];
    conversations = [
      { id: await group(a, [b, c], 'g1'), members: [a, b, c] },
      { id: await group(b, [a], 'g2'), members: [a, b] },
      { id: await group(c, [a, d], 'g3'), members: [a, c, d] },
      { id: await direct(a, d), members: [a, d] },
      // `a` is not in this one: its messages must never show up for `a`.
      { id: await group(b, [c, d], 'g5'), members: [b, c, d] },
    ];
    const jobs = Array.from({ length: 300 }, () => {
      const conversation = pick(conversations);
      return { conversation, sender: pick(conversation.members), content: randomText() };
    });
    await inParallel(jobs, 8, async (job) => {
      const m = await send(job.sender, job.conversation.id, job.content);
      live.set(m.id, { content: job.content, conversationId: job.conversation.id, sender: job.sender });
    });
    // Some edits and deletes before the queries: the index must follow them.
    const all = [...live.keys()];
    for (let i = 0; i < 30; i++) {
      const id = all[Math.floor(rnd() * all.length)]!;
      const m = live.get(id);
      if (!m) continue;
      const content = randomText();
      await edit(m.sender, id, content);
      m.content = content;
    }
    for (let i = 0; i < 20; i++) {
      const id = all[Math.floor(rnd() * all.length)]!;
      const m = live.get(id);
      if (!m) continue;
      await remove(m.sender, id);
      live.delete(id);
    }
  }, 300_000);

  it('for 60 random 1–3 word queries of a member of most conversations: the ids over all pages equal the brute-force set, newest first', async () => {
    const viewer = u[0]!;
    let nonEmpty = 0;
    for (let i = 0; i < 60; i++) {
      const q = randomQuery();
      if (searchWords(q).length === 0) continue;
      const limit = pick([3, 7, 20, 50, 100]);
      const want = expected(viewer, q);
      const { messages } = await searchAll(viewer, q, limit);
      expect(idSet(messages), `query "${q}" (limit ${limit})`).toEqual(want);
      for (const m of messages) {
        expect(m.content, m.id).toBe(live.get(m.id)!.content);
        expect(m.conversation_id).toBe(live.get(m.id)!.conversationId);
      }
      await expectNewestFirst(messages);
      if (want.length > 0) nonEmpty++;
    }
    expect(nonEmpty, 'too few queries had results to mean anything').toBeGreaterThan(20);
  }, 300_000);

  it('for another member (of fewer conversations) and with the conversation_id filter: exact as well', async () => {
    let nonEmpty = 0;
    for (let i = 0; i < 30; i++) {
      const viewer = pick(u.slice(1));
      const q = randomQuery();
      if (searchWords(q).length === 0) continue;
      const theirs = conversations.filter((c) => c.members.includes(viewer));
      const filter = rnd() < 0.5 ? pick(theirs).id : undefined;
      const want = expected(viewer, q, filter);
      const { messages } = await searchAll(viewer, q, pick([5, 20, 100]), filter);
      expect(idSet(messages), `query "${q}" by user ${u.indexOf(viewer)}${filter ? ` in ${filter}` : ''}`).toEqual(want);
      await expectNewestFirst(messages);
      if (want.length > 0) nonEmpty++;
    }
    expect(nonEmpty).toBeGreaterThan(8);
  }, 300_000);

  it('one query with many results paged with limit 1, 2, 100: the same ordered list every time', async () => {
    const viewer = u[0]!;
    // The most frequent vocabulary word for this viewer.
    const counts = VOCAB.filter((w) => searchWords(w).length === 1).map((w) => ({ w, n: expected(viewer, w).length }));
    counts.sort((x, y) => y.n - x.n);
    const word = counts[0]!.w;
    const want = expected(viewer, word);
    expect(want.length).toBeGreaterThan(30);
    const big = await searchAll(viewer, word, 100);
    expect(idSet(big.messages)).toEqual(want);
    const small = await searchAll(viewer, word, 2);
    expect(ids(small.messages)).toEqual(ids(big.messages));
    expect(small.pages).toBe(Math.ceil(want.length / 2));
    const one = await searchAll(viewer, word, 1);
    expect(ids(one.messages)).toEqual(ids(big.messages));
  }, 300_000);

  it('deleted messages never come back, whatever the query', async () => {
    const { rows } = await srv.pool.query<{ id: string }>(
      'SELECT id FROM messages WHERE deleted_at IS NOT NULL AND conversation_id = ANY($1::uuid[])',
      [conversations.map((c) => c.id)],
    );
    expect(rows.length).toBeGreaterThan(5);
    const { rows: tokens } = await srv.pool.query('SELECT 1 FROM message_search_tokens WHERE message_id = ANY($1::uuid[])', [rows.map((r) => r.id)]);
    expect(tokens).toHaveLength(0);
    const { rows: state } = await srv.pool.query('SELECT 1 FROM message_search_state WHERE message_id = ANY($1::uuid[])', [rows.map((r) => r.id)]);
    expect(state).toHaveLength(0);
  });
});

// ---------------------------------------------------------------- ordering, limit, validation, cursors

describe('ordering, limit and paging', () => {
  let a: SignedInUser;
  let b: SignedInUser;
  let g1: string;
  let g2: string;
  const sent: any[] = [];

  beforeAll(async () => {
    [a, b] = (await users(2)) as [SignedInUser, SignedInUser];
    g1 = await group(a, [b]);
    g2 = await direct(a, b);
    // Sequential sends over two conversations: each one is committed before the next starts.
    for (let i = 0; i < 25; i++) sent.push(await send(i % 3 === 0 ? b : a, i % 2 ? g1 : g2, `ordering test item ${i} limitword`));
  }, 120_000);

  it('newest first by creation, across conversations', async () => {
    const page = await searchOk(a, 'limitword', { limit: 100 });
    expect(ids(page.results.map((r) => r.message))).toEqual(ids(sent).reverse());
    expect(page.next_cursor).toBeNull();
  });

  it('limit defaults to 20; next_cursor pages on; null at the end (no empty trailing page)', async () => {
    const first = await searchOk(b, 'limitword');
    expect(first.results).toHaveLength(20);
    expect(typeof first.next_cursor).toBe('string');
    const second = await searchOk(b, 'limitword', { before: first.next_cursor! });
    expect(second.results).toHaveLength(5);
    expect(second.next_cursor).toBeNull();
    expect([...first.results, ...second.results].map((r) => r.message.id)).toEqual(ids(sent).reverse());
    // Exactly `limit` left: the page is full and is the last one.
    const five = await searchOk(b, 'limitword', { limit: 5, before: first.next_cursor! });
    expect(five.results).toHaveLength(5);
    expect(five.next_cursor).toBeNull();
  });

  it('limit 1 and 100 are accepted; 0, 101, -1, 1.5 and "abc" are 400 with field limit', async () => {
    const one = await searchOk(a, 'limitword', { limit: 1 });
    expect(one.results).toHaveLength(1);
    expect(one.results[0].message.id).toBe(sent[sent.length - 1].id);
    expect((await searchOk(a, 'limitword', { limit: 100 })).results).toHaveLength(25);
    for (const limit of ['0', '101', '-1', '1.5', 'abc']) expectError(await search(a, 'limitword', { limit }), 400, 'invalid_request', 'limit');
  });

  it('a cursor from one query pages another consistently (it only marks a position)', async () => {
    const first = await searchOk(a, 'limitword', { limit: 10 });
    const rest = await searchOk(a, 'ordering test', { limit: 100, before: first.next_cursor! });
    expect(ids(rest.results.map((r) => r.message))).toEqual(ids(sent).reverse().slice(10));
  });
});

describe('validation of q, before and conversation_id', () => {
  let a: SignedInUser;
  let outsider: SignedInUser;
  let g: string;
  let other: string;
  let cursor: string;

  beforeAll(async () => {
    [a, outsider] = (await users(2)) as [SignedInUser, SignedInUser];
    g = await group(a, []);
    other = await group(outsider, []);
    for (let i = 0; i < 4; i++) await send(a, g, `validation message ${i} cursorword`);
    await send(outsider, other, 'cursorword from elsewhere');
    const page = await searchOk(a, 'cursorword', { limit: 2 });
    expect(page.next_cursor).toEqual(expect.any(String));
    cursor = page.next_cursor!;
  });

  it('q missing, empty, 257 characters, without an indexable word: 400 with field q', async () => {
    expectError(await a.api.get('/api/v1/search'), 400, 'invalid_request', 'q');
    expectError(await a.api.get('/api/v1/search?limit=5'), 400, 'invalid_request', 'q');
    expectError(await search(a, ''), 400, 'invalid_request', 'q');
    const long = 'cursorword '.repeat(30).slice(0, 257);
    expect([...long]).toHaveLength(257);
    expectError(await search(a, long), 400, 'invalid_request', 'q');
    // 257 characters of which none is a word: still the length that is at fault.
    expectError(await search(a, '!'.repeat(257)), 400, 'invalid_request', 'q');
    for (const q of [' ', 'a', 'a b c', '. , ! ?', '🎉🎉🎉', '7', '北', 'x'.repeat(65), '--- 1 2 3 ---']) {
      expectError(await search(a, q), 400, 'invalid_request', 'q');
    }
  });

  it('q of exactly 256 characters (code points, even outside the BMP) is accepted', async () => {
    const q = ('cursorword ' + ' '.repeat(256)).slice(0, 256);
    expect([...q]).toHaveLength(256);
    expect((await searchOk(a, q, { limit: 100 })).results).toHaveLength(4);
    const emoji = 'cursorword ' + '🎉'.repeat(245);
    expect([...emoji]).toHaveLength(256);
    expect((await searchOk(a, emoji, { limit: 100 })).results).toHaveLength(4);
  });

  it('a word no message has: 200 with no results and next_cursor null', async () => {
    const page = await searchOk(a, 'neverusedwordqq');
    expect(page).toEqual({ results: [], next_cursor: null });
  });

  it('garbage and forged cursors: 400 with field before', async () => {
    const forgedPayload = Buffer.from(`${Date.now() * 1000}:${randomUUID()}`).toString('base64url');
    const [body, mac] = cursor.split('.') as [string, string];
    const bad = [
      'garbage',
      '0',
      '.',
      'a.b',
      `${forgedPayload}.${'A'.repeat(22)}`,
      // the payload of a real cursor with another (forged) timestamp, keeping its MAC
      `${Buffer.from(Buffer.from(body, 'base64url').toString('utf8').replace(/^\d/, (d) => String((Number(d) + 1) % 10))).toString('base64url')}.${mac}`,
      // a real MAC with a flipped character in its middle
      `${body}.${mac.slice(0, 5)}${mac[5] === 'A' ? 'B' : 'A'}${mac.slice(6)}`,
      // the MAC alone, the payload alone
      `.${mac}`,
      body,
      // a real cursor's payload signed by nobody
      `${body}.`,
      '%00',
      'x'.repeat(5000),
    ];
    for (const before of bad) {
      expectError(await search(a, 'cursorword', { before }), 400, 'invalid_request', 'before');
    }
    // The genuine cursor still works.
    expect((await searchOk(a, 'cursorword', { before: cursor })).results).toHaveLength(2);
  });

  it('a cursor string the server did not issue, but that decodes like one (junk appended, a stray character), is 400', async () => {
    const [body, mac] = cursor.split('.') as [string, string];
    const variants = [`${cursor}.junk`, `${body}!!.${mac}`, `${body}.${mac}.${mac}`, ` ${cursor}`, `${body}====.${mac}`];
    const accepted: string[] = [];
    for (const before of variants) {
      const res = await search(a, 'cursorword', { before });
      if (res.status !== 400 || res.body?.error?.field !== 'before') accepted.push(`${JSON.stringify(before)} → ${res.status}`);
    }
    expect(accepted, 'cursor variants the server never issued but accepted').toEqual([]);
  });

  it('conversation_id: a bad UUID is 400 (field conversation_id); one the caller is not in, or that does not exist, is 404', async () => {
    expectError(await search(a, 'cursorword', { conversation_id: 'nope' }), 400, 'invalid_request', 'conversation_id');
    expectError(await search(a, 'cursorword', { conversation_id: other }), 404, 'not_found');
    expectError(await search(a, 'cursorword', { conversation_id: randomUUID() }), 404, 'not_found');
    const mine = await searchOk(a, 'cursorword', { conversation_id: g.toUpperCase(), limit: 100 });
    expect(mine.results).toHaveLength(4);
    for (const r of mine.results) expect(r.message.conversation_id).toBe(g);
    const theirs = await searchOk(outsider, 'cursorword', { conversation_id: other });
    expect(theirs.results.map((r) => r.message.content)).toEqual(['cursorword from elsewhere']);
  });

  it('needs authentication (401)', async () => {
    const res = await fetch(`${srv.baseUrl}/api/v1/search?q=cursorword`);
    expect(res.status).toBe(401);
  });
});

// ---------------------------------------------------------------- results are §5 message objects

describe('results wrap the message objects of §5', () => {
  it('same object as in the history (decrypted content, status, reply_to_id, signature, client_message_id, edited_at)', async () => {
    const [a, b] = (await users(2)) as [SignedInUser, SignedInUser];
    const g = await group(a, [b]);
    const first = await send(a, g, 'shapeword first', { client_message_id: 'cm-1', signature: 'sig-xyz' });
    const second = await send(b, g, 'shapeword reply in **markdown**', { reply_to_id: first.id, content_type: 'markdown' });
    const third = await send(a, g, 'shapeword to be edited');
    await edit(a, third.id, 'shapeword edited now');
    // b reads everything: a's messages become `read`.
    const read = await b.api.post(`/api/v1/conversations/${g}/read`, { seq: 3 });
    expect(read.status).toBe(200);
    const history = await a.api.get(`/api/v1/conversations/${g}/messages?limit=200`);
    expect(history.status).toBe(200);
    const byId = new Map<string, any>(history.body.messages.map((m: any) => [m.id, m]));
    const page = await searchOk(a, 'shapeword', { limit: 10 });
    expect(page.results).toHaveLength(3);
    for (const { message } of page.results) {
      expectMessageShape(message);
      expect(message).toEqual(byId.get(message.id));
    }
    const got = new Map<string, any>(page.results.map((r) => [r.message.id, r.message]));
    expect(got.get(first.id)).toMatchObject({ content: 'shapeword first', client_message_id: 'cm-1', signature: 'sig-xyz', status: 'read', seq: 1, sender_id: a.user.id });
    expect(got.get(second.id)).toMatchObject({ reply_to_id: first.id, content_type: 'markdown', sender_id: b.user.id });
    expect(got.get(third.id).content).toBe('shapeword edited now');
    expect(got.get(third.id).edited_at).toMatch(ISO_UTC);
    // Seen by b: the same objects as b's history.
    const historyB = await b.api.get(`/api/v1/conversations/${g}/messages?limit=200`);
    const byIdB = new Map<string, any>(historyB.body.messages.map((m: any) => [m.id, m]));
    const fromB = await searchOk(b, 'shapeword', { limit: 10 });
    expect(fromB.results).toHaveLength(3);
    for (const { message } of fromB.results) expect(message).toEqual(byIdB.get(message.id));
  });
});

// ---------------------------------------------------------------- edits and deletes

describe('edits and deletes are reflected as soon as they are answered', () => {
  let a: SignedInUser;
  let b: SignedInUser;
  let g: string;

  beforeAll(async () => {
    [a, b] = (await users(2)) as [SignedInUser, SignedInUser];
    g = await group(a, [b]);
  });

  const found = async (u: SignedInUser, q: string) => ids((await searchOk(u, q, { limit: 100 })).results.map((r) => r.message));

  it('a send is searchable as soon as its 201 arrives', async () => {
    for (let i = 0; i < 10; i++) {
      const m = await send(a, g, `immediate${i} check`);
      expect(await found(b, `immediate${i}`)).toEqual([m.id]);
    }
  });

  it('a socket send is searchable as soon as its ack arrives (direct conversation created by recipient_id included)', async () => {
    const socket = await openSocket(srv.baseUrl, a.token);
    try {
      for (let i = 0; i < 5; i++) {
        socket.send({ type: 'send', request_id: `r${i}`, conversation_id: g, content: `socketword${i} via ws` });
        const ack = await socket.next((f) => f.type === 'ack' && f.request_id === `r${i}`);
        expect(await found(b, `socketword${i}`)).toEqual([ack.message.id]);
      }
      const [c] = (await users(1)) as [SignedInUser];
      socket.send({ type: 'send', request_id: 'direct', recipient_id: c.user.id, content: 'socketdirect hello' });
      const ack = await socket.next((f) => f.type === 'ack' && f.request_id === 'direct');
      expect(await found(c, 'socketdirect')).toEqual([ack.message.id]);
    } finally {
      await socket.close();
    }
  });

  it('"hello world" → "hello there": hello still found, world gone, there found (unchanged words kept)', async () => {
    const m = await send(a, g, 'hello world');
    const other = await send(b, g, 'world peace');
    expect(await found(b, 'hello')).toEqual([m.id]);
    expect(await found(b, 'world')).toEqual([other.id, m.id]);
    const { rows: before } = await srv.pool.query<{ token: Buffer }>('SELECT token FROM message_search_tokens WHERE message_id = $1', [m.id]);
    expect(before).toHaveLength(2);
    await edit(a, m.id, 'hello there');
    expect(await found(b, 'hello')).toEqual([m.id]);
    expect(await found(b, 'world')).toEqual([other.id]);
    expect(await found(b, 'there')).toEqual([m.id]);
    expect(await found(b, 'hello there')).toEqual([m.id]);
    expect(await found(b, 'hello world')).toEqual([]);
    const { rows: after } = await srv.pool.query<{ token: Buffer; conversation_id: string }>(
      'SELECT token, conversation_id FROM message_search_tokens WHERE message_id = $1',
      [m.id],
    );
    expect(after).toHaveLength(2);
    for (const r of after) expect(r.conversation_id).toBe(g);
    // The token of the kept word is the same row value as before.
    const hex = (rows: { token: Buffer }[]) => new Set(rows.map((r) => r.token.toString('hex')));
    expect([...hex(before)].filter((t) => hex(after).has(t))).toHaveLength(1);
  });

  it('edit chains and edits to a text without words', async () => {
    const m = await send(a, g, 'chain alpha');
    await edit(a, m.id, 'chain beta');
    await edit(a, m.id, 'chain gamma beta');
    expect(await found(a, 'alpha')).toEqual([]);
    expect(await found(a, 'chain beta gamma')).toEqual([m.id]);
    await edit(a, m.id, '👍 !');
    expect(await found(a, 'chain')).toEqual([]);
    expect(await found(a, 'gamma')).toEqual([]);
    const { rows } = await srv.pool.query('SELECT 1 FROM message_search_tokens WHERE message_id = $1', [m.id]);
    expect(rows).toHaveLength(0);
    await edit(a, m.id, 'chain is back');
    expect(await found(a, 'chain back')).toEqual([m.id]);
  });

  it('delete: gone from results at once, its token and state rows removed', async () => {
    const keep = await send(a, g, 'deleteword stays');
    const m = await send(a, g, 'deleteword goes');
    expect(await found(b, 'deleteword')).toEqual([m.id, keep.id]);
    await remove(a, m.id);
    expect(await found(b, 'deleteword')).toEqual([keep.id]);
    expect(await found(b, 'goes')).toEqual([]);
    const { rows } = await srv.pool.query(
      'SELECT (SELECT count(*) FROM message_search_tokens WHERE message_id = $1)::int AS t, (SELECT count(*) FROM message_search_state WHERE message_id = $1)::int AS s',
      [m.id],
    );
    expect(rows[0]).toEqual({ t: 0, s: 0 });
  });

  it('edits racing other edits of the same message: the index ends matching the content that won', async () => {
    // Each PATCH is answered only after its transaction committed; once all are answered, the
    // index must hold exactly the words of the stored content, none of an overwritten version.
    const stale: string[] = [];
    await Promise.all(
      Array.from({ length: 6 }, async (_, round) => {
        const m = await send(a, g, `race${round} start`);
        const contents = Array.from({ length: 10 }, (_, i) => `race${round} r${round}version${i} common`);
        const answers = await Promise.all(contents.map((c) => a.api.patch(`/api/v1/messages/${m.id}`, { content: c })));
        for (const r of answers) expect(r.status).toBe(200);
        const history = await a.api.get(`/api/v1/conversations/${g}/messages?limit=200`);
        const final = history.body.messages.find((x: any) => x.id === m.id).content as string;
        const winner = new RegExp(`r${round}version\\d`).exec(final)![0];
        expect(await found(a, `race${round} common`)).toEqual([m.id]);
        expect(await found(a, winner)).toEqual([m.id]);
        for (let i = 0; i < 10; i++) {
          const word = `r${round}version${i}`;
          if (word !== winner && (await found(a, word)).length > 0) stale.push(`${word} (content is "${final}")`);
        }
        if ((await found(a, `race${round} start`)).length > 0) stale.push(`race${round} start`);
      }),
    );
    expect(stale, 'words of overwritten versions still found').toEqual([]);
  });

  it('an edit racing a delete of the same message: once both are answered, a deleted message has no token rows left', async () => {
    const leftovers: string[] = [];
    for (let i = 0; i < 6; i++) {
      const m = await send(a, g, `editdelete${i} original`);
      const [e, d] = await Promise.all([a.api.patch(`/api/v1/messages/${m.id}`, { content: `editdelete${i} replacement words` }), a.api.delete(`/api/v1/messages/${m.id}`)]);
      expect([200, 409]).toContain(e.status);
      expect(d.status).toBe(200);
      const { rows } = await srv.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM message_search_tokens WHERE message_id = $1', [m.id]);
      if (rows[0]!.n > 0) leftovers.push(`${m.id}: ${rows[0]!.n} token rows (edit answered ${e.status})`);
      expect(await found(a, `editdelete${i}`)).toEqual([]);
    }
    expect(leftovers, 'tombstones that kept token rows').toEqual([]);
  });
});

// ---------------------------------------------------------------- membership

describe('membership is the only gate', () => {
  it('non-members see nothing; a removed member finds nothing there any more; a member added later finds earlier messages', async () => {
    const [owner, member, leaver, late, stranger] = (await users(5)) as [SignedInUser, SignedInUser, SignedInUser, SignedInUser, SignedInUser];
    const g = await group(owner, [member, leaver]);
    const sent = [await send(owner, g, 'gateword one'), await send(member, g, 'gateword two'), await send(leaver, g, 'gateword three')];
    const want = ids(sent).reverse();
    const found = async (u: SignedInUser) => ids((await searchOk(u, 'gateword', { limit: 100 })).results.map((r) => r.message));

    expect(await found(leaver)).toEqual(want);
    expect(await found(stranger)).toEqual([]);
    expectError(await search(stranger, 'gateword', { conversation_id: g }), 404, 'not_found');

    const removed = await owner.api.delete(`/api/v1/conversations/${g}/members/${leaver.user.id}`);
    expect(removed.status).toBe(204);
    expect(await found(leaver)).toEqual([]);
    expect(await found(leaver)).toEqual([]);
    expectError(await search(leaver, 'gateword', { conversation_id: g }), 404, 'not_found');
    // Its own old messages included.
    expect(ids((await searchOk(leaver, 'three')).results.map((r) => r.message))).toEqual([]);

    const added = await member.api.post(`/api/v1/conversations/${g}/members`, { user_id: late.user.id });
    expect(added.status).toBe(200);
    expect(await found(late)).toEqual(want);
    expect(ids((await searchOk(late, 'gateword', { conversation_id: g })).results.map((r) => r.message))).toEqual(want);

    const back = await owner.api.post(`/api/v1/conversations/${g}/members`, { user_id: leaver.user.id });
    expect(back.status).toBe(200);
    expect(await found(leaver)).toEqual(want);
  });

  it('a direct conversation is searched by its two members only', async () => {
    const [a, b, c] = (await users(3)) as [SignedInUser, SignedInUser, SignedInUser];
    const d = await direct(a, b);
    const m = await send(a, d, 'directword secret');
    expect(ids((await searchOk(b, 'directword')).results.map((r) => r.message))).toEqual([m.id]);
    expect((await searchOk(c, 'directword')).results).toEqual([]);
  });

  it('a user in no conversation at all gets an empty page', async () => {
    const [lonely] = (await users(1)) as [SignedInUser];
    expect(await searchOk(lonely, 'gateword')).toEqual({ results: [], next_cursor: null });
  });
});

// ---------------------------------------------------------------- audit

describe('audit: results returned are audited with purpose search', () => {
  async function auditRows(requestId: string, settleMs = 300): Promise<{ actor_id: string | null; conversation_id: string; message_count: number; purpose: string }[]> {
    // Audit rows are written in batches off the request path: wait until they are there and stable.
    const read = async () =>
      (
        await srv.pool.query(
          'SELECT actor_id, conversation_id, message_count, purpose FROM decryption_audit WHERE request_id = $1 ORDER BY conversation_id, purpose',
          [requestId],
        )
      ).rows;
    let rows = await read();
    const deadline = Date.now() + 10_000;
    while (rows.length === 0 && Date.now() < deadline) {
      await sleep(25);
      rows = await read();
    }
    await sleep(settleMs);
    return read();
  }

  async function searchWithId(u: SignedInUser, q: string, params: Record<string, string | number | undefined> = {}) {
    const requestId = `search-audit-${randomUUID()}`;
    const res = await u.api.raw('GET', searchPath(q, params), { headers: { 'x-request-id': requestId } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return { requestId, results: res.body.results.map((r: any) => r.message) as any[], next_cursor: res.body.next_cursor as string | null };
  }

  it('one row per conversation, actor = caller, counting exactly the results returned (not the candidate beyond the page)', async () => {
    const [a, b] = (await users(2)) as [SignedInUser, SignedInUser];
    const g1 = await group(a, [b]);
    const g2 = await group(b, [a]);
    for (let i = 0; i < 4; i++) await send(a, g1, `auditword g1 ${i}`);
    for (let i = 0; i < 3; i++) await send(b, g2, `auditword g2 ${i}`);

    const all = await searchWithId(b, 'auditword', { limit: 100 });
    expect(all.results).toHaveLength(7);
    const rows = await auditRows(all.requestId);
    const expected = [
      { actor_id: b.user.id, conversation_id: g1, message_count: 4, purpose: 'search' },
      { actor_id: b.user.id, conversation_id: g2, message_count: 3, purpose: 'search' },
    ];
    const byConversation = (x: { conversation_id: string }, y: { conversation_id: string }) => (x.conversation_id < y.conversation_id ? -1 : 1);
    expect(rows.map((r) => ({ ...r, message_count: Number(r.message_count) })).sort(byConversation)).toEqual(expected.sort(byConversation));

    // A page of 2 out of 7 (the server looks one further to know there is more): 2 audited.
    const page = await searchWithId(a, 'auditword', { limit: 2 });
    expect(page.results).toHaveLength(2);
    expect(page.next_cursor).not.toBeNull();
    const pageRows = await auditRows(page.requestId);
    expect(pageRows.every((r) => r.purpose === 'search' && r.actor_id === a.user.id)).toBe(true);
    expect(pageRows.reduce((n, r) => n + Number(r.message_count), 0)).toBe(2);
    const perConversation = new Map<string, number>();
    for (const m of page.results) perConversation.set(m.conversation_id, (perConversation.get(m.conversation_id) ?? 0) + 1);
    expect(new Map(pageRows.map((r) => [r.conversation_id, Number(r.message_count)]))).toEqual(perConversation);

    // The conversation filter: only that conversation's results.
    const filtered = await searchWithId(a, 'auditword', { conversation_id: g2 });
    expect(filtered.results).toHaveLength(3);
    expect((await auditRows(filtered.requestId)).map((r) => [r.conversation_id, Number(r.message_count), r.purpose])).toEqual([[g2, 3, 'search']]);
  });

  it('a search with no results writes no audit row; neither does a rejected one', async () => {
    const [a] = (await users(1)) as [SignedInUser];
    const g = await group(a, []);
    await send(a, g, 'lonely auditword');
    const none = await searchWithId(a, 'nothingmatcheshere');
    expect(none.results).toHaveLength(0);
    const rejected = `search-audit-${randomUUID()}`;
    const bad = await a.api.raw('GET', searchPath('auditword', { before: 'garbage' }), { headers: { 'x-request-id': rejected } });
    expect(bad.status).toBe(400);
    // A later search with a result: once its row is written, rows recorded before it are too.
    const later = await searchWithId(a, 'lonely');
    expect(later.results).toHaveLength(1);
    expect((await auditRows(later.requestId)).map((r) => Number(r.message_count))).toEqual([1]);
    const { rows } = await srv.pool.query('SELECT request_id FROM decryption_audit WHERE request_id = ANY($1::text[])', [[none.requestId, rejected]]);
    expect(rows).toEqual([]);
  });
});

// ---------------------------------------------------------------- multilingual, end to end

describe('multilingual text end to end (expectations written by hand from docs/design.md)', () => {
  let a: SignedInUser;
  let b: SignedInUser;
  const m: Record<string, string> = {};

  const TEXTS: Record<string, string> = {
    en: 'The quick brown Fox jumps over the lazy dog, 42 times!',
    ru: 'Съешь же ещё этих мягких французских булок, да выпей чаю',
    deComposed: 'Grüße aus Köln — schöne Straße!',
    deDecomposed: 'Mu\u0308ller fa\u0308hrt u\u0308ber die Bru\u0308cke',
    zh: '我爱北京天安门',
    ja: '東京タワーに行きました',
    mixed: 'Meeting in 東京 tomorrow 🗼 at 10',
    th: 'สวัสดีครับ',
    emoji: '🎉🎉 Party time!!! 🥳 Let’s celebrate 🍾🍾 with 👩‍💻coders and 👍🏽great friends',
    fullwidth: 'ＡＢＣ ｄｅｆ ﬁnal',
  };

  beforeAll(async () => {
    [a, b] = (await users(2)) as [SignedInUser, SignedInUser];
    const g = await group(a, [b], 'multilingual');
    for (const [k, text] of Object.entries(TEXTS)) m[k] = (await send(a, g, text)).id;
  });

  const found = async (q: string) => {
    const page = await searchOk(b, q, { limit: 100 });
    return page.results.map((r) => r.message.id).sort();
  };
  const of = (...keys: string[]) => keys.map((k) => m[k]!).sort();

  it('English: case-insensitive whole words, digits', async () => {
    expect(await found('fox')).toEqual(of('en'));
    expect(await found('QUICK DOG')).toEqual(of('en'));
    expect(await found('42')).toEqual(of('en'));
    expect(await found('qui')).toEqual([]);
    expect(await found('fox cat')).toEqual([]);
  });

  it('Russian: lower-casing of Cyrillic (ЕЩЁ finds ещё)', async () => {
    expect(await found('ЕЩЁ')).toEqual(of('ru'));
    expect(await found('мягких булок')).toEqual(of('ru'));
    expect(await found('Французских')).toEqual(of('ru'));
    expect(await found('булка')).toEqual([]);
  });

  it('German with diacritics: composed and decomposed queries find composed and decomposed texts', async () => {
    expect(await found('Grüße')).toEqual(of('deComposed'));
    expect(await found('Gru\u0308ße')).toEqual(of('deComposed'));
    expect(await found('KÖLN')).toEqual(of('deComposed'));
    expect(await found('straße')).toEqual(of('deComposed'));
    expect(await found('Müller')).toEqual(of('deDecomposed'));
    expect(await found('mu\u0308ller bru\u0308cke')).toEqual(of('deDecomposed'));
    expect(await found('über')).toEqual(of('deDecomposed'));
    expect(await found('fährt')).toEqual(of('deDecomposed'));
    // A different letter is a different word.
    expect(await found('muller')).toEqual([]);
  });

  it('Chinese: character pairs ("北京" finds "我爱北京天安门")', async () => {
    expect(await found('北京')).toEqual(of('zh'));
    expect(await found('天安门')).toEqual(of('zh'));
    expect(await found('北京天安门')).toEqual(of('zh'));
    expect(await found('我爱')).toEqual(of('zh'));
    expect(await found('京北')).toEqual([]);
    expect(await found('上海')).toEqual([]);
  });

  it('Japanese: kanji and kana pairs, half-width katakana folded by NFKC', async () => {
    expect(await found('東京')).toEqual(of('ja', 'mixed'));
    expect(await found('タワー')).toEqual(of('ja'));
    expect(await found('ﾀﾜｰ')).toEqual(of('ja'));
    expect(await found('行きました')).toEqual(of('ja'));
    expect(await found('東京 meeting')).toEqual(of('mixed'));
    expect(await found('大阪')).toEqual([]);
  });

  it('Thai: character pairs', async () => {
    expect(await found('สวัสดี')).toEqual(of('th'));
    expect(await found('ครับ')).toEqual(of('th'));
  });

  it('emoji-laden text: emoji separate words and are never words themselves', async () => {
    expect(await found('party')).toEqual(of('emoji'));
    expect(await found('celebrate TIME')).toEqual(of('emoji'));
    expect(await found('coders')).toEqual(of('emoji'));
    expect(await found('great friends')).toEqual(of('emoji'));
    expect(await found('let')).toEqual(of('emoji'));
    expectError(await search(b, '🎉'), 400, 'invalid_request', 'q');
    expectError(await search(b, '🎉🥳🍾'), 400, 'invalid_request', 'q');
  });

  it('NFKC compatibility forms: full-width letters and ligatures', async () => {
    expect(await found('abc')).toEqual(of('fullwidth'));
    expect(await found('DEF')).toEqual(of('fullwidth'));
    expect(await found('final')).toEqual(of('fullwidth'));
  });

  it('emoji with a variation selector (❤️, ☀️) written right before a word: the word is still found', async () => {
    // U+FE0F (VARIATION SELECTOR-16, category Mn) belongs to the emoji before it, not to the word
    // after it. A user who writes "I ❤️love you" or "☀️sunny" expects "love" / "sunny" to find it.
    const [c] = (await users(1)) as [SignedInUser];
    const g = await group(c, []);
    const love = await send(c, g, 'I ❤️love you');
    const sunny = await send(c, g, 'Good morning ☀️sunny day');
    const got = async (q: string) => ids((await searchOk(c, q)).results.map((r) => r.message));
    expect({ love: await got('love'), sunny: await got('sunny') }).toEqual({ love: [love.id], sunny: [sunny.id] });
  });
});
