// Integration tests: the blind index stores no plaintext (docs/design.md; docs/operations.md: keys and plaintext
// never appear in logs). Canary words go through send, edit, search (hits, misses, rejected queries),
// delete; afterwards no column of any table and no log line (captured at debug level) holds them in
// any encoding, and the token rows are exactly the documented HMACs, computed here by hand.
import { createHash, createHmac, hkdfSync, randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { signIn, startTestServer, TEST_MASTER_KEY_B64, type SignedInUser, type TestServer } from '../helpers/server.js';

let srv: TestServer;
const logChunks: string[] = [];

// Canaries: random, so no fixture or earlier run can hold them by accident.
const letters = (alphabet: string, n: number) => Array.from(randomBytes(n), (b) => [...alphabet][b % [...alphabet].length]).join('');
const LATIN = `zqcanary${letters('bcdfghjklmnpqrstvwxz', 10)}`;
const CYRILLIC = `канарейка${letters('бвгджзклмнпрстфхцчшщ', 8)}`;
const GERMAN = `kanarienvögel${letters('bcdfghjklmnpqrstvwxz', 6)}`; // with ö, sent decomposed once
const HAN = `金丝雀${letters('鹦鹉螺号潜艇海洋深处秘密', 4)}`;
const EDITED_IN = `zqeditcanary${letters('bcdfghjklmnpqrstvwxz', 10)}`;
const ALL = [LATIN, CYRILLIC, GERMAN, HAN, EDITED_IN];
const SIGNATURE_CONTROL = `zqcontrol${letters('bcdfghjklmnpqrstvwxz', 10)}`;

/** Every form a careless implementation might store or log a word in. */
function needles(word: string): { label: string; text: string }[] {
  const forms = new Set([word, word.normalize('NFC'), word.normalize('NFD'), word.toUpperCase(), word.toLowerCase()]);
  const out: { label: string; text: string }[] = [];
  for (const f of forms) {
    const bytes = Buffer.from(f, 'utf8');
    out.push({ label: `${word} as text (${f})`, text: f });
    out.push({ label: `${word} as hex`, text: bytes.toString('hex') });
    out.push({ label: `${word} as base64`, text: bytes.toString('base64').replace(/=+$/, '') });
    out.push({ label: `${word} as base64url`, text: bytes.toString('base64url') });
    out.push({ label: `${word} URL-encoded`, text: encodeURIComponent(f) });
    out.push({ label: `${word} JSON-escaped`, text: JSON.stringify(f).slice(1, -1).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`) });
  }
  // Han text is indexed in pairs: no pair may be stored either.
  if (/\p{Script=Han}/u.test(word)) {
    const chars = [...word];
    for (let i = 0; i + 1 < chars.length; i++) out.push({ label: `${word} pair ${chars[i]}${chars[i + 1]}`, text: chars[i]! + chars[i + 1]! });
  }
  return out;
}

beforeAll(async () => {
  const logger = createLogger('debug', { write: (s: string) => void logChunks.push(s) });
  srv = await startTestServer({ deps: { logger }, env: { LOG_LEVEL: 'debug' } });
});

afterAll(async () => {
  await srv?.close();
});

async function group(owner: SignedInUser, members: SignedInUser[]): Promise<string> {
  const res = await owner.api.post('/api/v1/conversations', { type: 'group', title: 'privacy', member_ids: members.map((m) => m.user.id) });
  expect(res.status).toBe(201);
  return res.body.conversation.id;
}

async function send(u: SignedInUser, conversationId: string, content: string): Promise<any> {
  const res = await u.api.post('/api/v1/messages', { conversation_id: conversationId, content });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.message;
}

const handSearchKey = (conversationId: string) =>
  Buffer.from(hkdfSync('sha256', Buffer.from(TEST_MASTER_KEY_B64, 'base64'), Buffer.from(conversationId, 'utf8'), Buffer.from('sotalk-search-v1', 'utf8'), 32));
const handToken = (conversationId: string, word: string) => createHmac('sha256', handSearchKey(conversationId)).update(Buffer.from(word, 'utf8')).digest().subarray(0, 16);

async function tokensOf(messageId: string): Promise<{ conversation_id: string; token: Buffer }[]> {
  const { rows } = await srv.pool.query('SELECT conversation_id, token FROM message_search_tokens WHERE message_id = $1', [messageId]);
  return rows;
}

const hexSet = (tokens: Buffer[]) => [...new Set(tokens.map((t) => t.toString('hex')))].sort();

/** Every (table.column: form) of a public table in which one of the words appears, in any form of `needles`. */
async function scanDatabase(words: string[]): Promise<string[]> {
  const { rows: columns } = await srv.pool.query<{ table_name: string; column_name: string; data_type: string }>(
    `SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c
     JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE'
     WHERE c.table_schema = 'public' ORDER BY 1, 2`,
  );
  const found: string[] = [];
  for (const c of columns) {
    const col = `"${c.column_name}"`;
    const table = `"${c.table_name}"`;
    for (const word of words) {
      for (const n of needles(word)) {
        if (c.data_type === 'bytea') {
          // Raw bytes (UTF-8 and UTF-16) and the textual forms as bytes.
          for (const bytes of [Buffer.from(n.text, 'utf8'), Buffer.from(n.text, 'utf16le')]) {
            const { rows } = await srv.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE position($1::bytea IN ${col}) > 0`, [bytes]);
            if (rows[0]!.n > 0) found.push(`${c.table_name}.${c.column_name}: ${n.label} (${rows[0]!.n} rows)`);
          }
        } else {
          const { rows } = await srv.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE position(lower($1) IN lower(${col}::text)) > 0`, [n.text]);
          if (rows[0]!.n > 0) found.push(`${c.table_name}.${c.column_name}: ${n.label} (${rows[0]!.n} rows)`);
        }
      }
    }
  }
  return found;
}

describe('canary words never reach a table or a log line', () => {
  let a: SignedInUser;
  let b: SignedInUser;
  let outsider: SignedInUser;
  let g: string;
  let d: string;
  let plain: any;
  let plainInDirect: any;

  beforeAll(async () => {
    [a, b, outsider] = await Promise.all([signIn(srv.baseUrl), signIn(srv.baseUrl), signIn(srv.baseUrl)]);
    g = await group(a, [b]);
    const dres = await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] });
    d = dres.body.conversation.id;

    // A message of known words only, for the hand-computed token check.
    plain = await send(a, g, `hello ${LATIN} there`);
    expect((await a.api.post('/api/v1/messages', { conversation_id: g, content: 'with a signature', signature: SIGNATURE_CONTROL })).status).toBe(201);
    plainInDirect = await send(b, d, `hello ${LATIN} there`);
    await send(b, g, `Привет ${CYRILLIC}, как дела? ${GERMAN.normalize('NFD')} und ${HAN}！`);
    await send(a, g, `${GERMAN} 🎉 ${LATIN.toUpperCase()}`);
    const toEdit = await send(a, g, 'nothing special yet');
    expect((await a.api.patch(`/api/v1/messages/${toEdit.id}`, { content: `now with ${EDITED_IN} inside` })).status).toBe(200);
    const toDelete = await send(b, g, `soon gone ${LATIN} ${EDITED_IN}`);
    const editAway = await send(a, g, `temporary ${CYRILLIC}`);
    expect((await a.api.patch(`/api/v1/messages/${editAway.id}`, { content: 'nothing left to see' })).status).toBe(200);

    // Searches: hits, misses, filters, rejected queries that carry the canaries.
    for (const q of [LATIN, CYRILLIC, GERMAN, GERMAN.normalize('NFD'), HAN, EDITED_IN, `${LATIN} ${GERMAN}`, `${CYRILLIC} ${HAN}`, `${HAN.slice(0, 2)}`]) {
      const res = await b.api.get(`/api/v1/search?q=${encodeURIComponent(q)}`);
      expect(res.status, q).toBe(200);
      expect(res.body.results.length, q).toBeGreaterThan(0);
      const filtered = await a.api.get(`/api/v1/search?q=${encodeURIComponent(q)}&conversation_id=${g}&limit=1`);
      expect(filtered.status).toBe(200);
      if (filtered.body.next_cursor) expect((await a.api.get(`/api/v1/search?q=${encodeURIComponent(q)}&before=${encodeURIComponent(filtered.body.next_cursor)}`)).status).toBe(200);
      expect((await outsider.api.get(`/api/v1/search?q=${encodeURIComponent(q)}`)).body.results).toEqual([]);
      expect((await outsider.api.get(`/api/v1/search?q=${encodeURIComponent(q)}&conversation_id=${g}`)).status).toBe(404);
    }
    const tooLong = `${LATIN} ${'y'.repeat(300)}`;
    expect((await b.api.get(`/api/v1/search?q=${encodeURIComponent(tooLong)}`)).status).toBe(400);
    expect((await b.api.get(`/api/v1/search?q=${encodeURIComponent(LATIN)}&before=${encodeURIComponent(LATIN)}`)).status).toBe(400);
    expect((await b.api.get(`/api/v1/search?q=${encodeURIComponent(LATIN)}&limit=${encodeURIComponent(LATIN)}`)).status).toBe(400);
    expect((await b.api.get(`/api/v1/search?q=${encodeURIComponent(LATIN)}&conversation_id=${encodeURIComponent(LATIN)}`)).status).toBe(400);
    expect((await b.api.get(`/api/v1/search?q=${encodeURIComponent(LATIN + '\u0000')}`)).status).toBe(400);

    expect((await b.api.delete(`/api/v1/messages/${toDelete.id}`)).status).toBe(200);
    // Audit rows are written in batches: a last search, then give the buffer time to flush.
    await b.api.get(`/api/v1/search?q=${encodeURIComponent(LATIN)}`);
    await new Promise((r) => setTimeout(r, 500));
  }, 120_000);

  it('the logger captured debug output (the check below means something)', () => {
    const text = logChunks.join('');
    expect(text).toMatch(/"level":20/);
    expect(text).toContain('/api/v1/search');
  });

  it('no text, varchar, json, array or bytea column of any public table holds a canary in any encoding', async () => {
    const { rows: columns } = await srv.pool.query<{ table_name: string; column_name: string; data_type: string }>(
      `SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c
       JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE'
       WHERE c.table_schema = 'public' ORDER BY 1, 2`,
    );
    const tables = new Set(columns.map((c) => c.table_name));
    for (const t of ['messages', 'message_encryption_metadata', 'message_search_index', 'decryption_audit', 'conversations', 'users']) {
      expect(tables, t).toContain(t);
    }
    // Sanity: the scan sees a word stored in clear (a signature is stored as given, by design).
    const control = await scanDatabase([SIGNATURE_CONTROL]);
    expect(control).toContain(`messages.signature: ${SIGNATURE_CONTROL} as text (${SIGNATURE_CONTROL}) (1 rows)`);
    const found = await scanDatabase(ALL);
    expect(found).toEqual([]);
  }, 120_000);

  it('no log line holds a canary in any encoding (nor does /metrics)', async () => {
    const metrics = await (await fetch(`${srv.baseUrl}/metrics`)).text();
    const logs = logChunks.join('');
    const hits: string[] = [];
    for (const word of ALL) {
      for (const n of needles(word)) {
        if (logs.toLowerCase().includes(n.text.toLowerCase())) hits.push(`log: ${n.label}`);
        if (metrics.toLowerCase().includes(n.text.toLowerCase())) hits.push(`metrics: ${n.label}`);
      }
    }
    expect(hits).toEqual([]);
  });

  it('the token rows are HMAC-SHA256(HKDF(master, conversation id, "sotalk-search-v1"), word)[0:16], never the word itself', async () => {
    const rows = await tokensOf(plain.id);
    expect(rows.every((r) => r.conversation_id === g)).toBe(true);
    const stored = rows.map((r) => r.token);
    expect(stored.every((t) => t.length === 16)).toBe(true);
    const words = ['hello', LATIN, 'there'];
    expect(hexSet(stored)).toEqual(hexSet(words.map((w) => handToken(g, w))));
    const canaryBytes = Buffer.from(LATIN, 'utf8');
    const master = Buffer.from(TEST_MASTER_KEY_B64, 'base64');
    for (const t of stored) {
      expect(t.equals(Buffer.concat([canaryBytes, Buffer.alloc(16)]).subarray(0, 16))).toBe(false);
      expect(t.includes(canaryBytes.subarray(0, 6))).toBe(false);
      // Keyed, and with the search key (not the master key, not a bare hash).
      expect(t.equals(createHash('sha256').update(LATIN).digest().subarray(0, 16))).toBe(false);
      expect(t.equals(createHmac('sha256', master).update(LATIN).digest().subarray(0, 16))).toBe(false);
    }
    const state = await srv.pool.query('SELECT master_key_fingerprint FROM message_search_state WHERE message_id = $1', [plain.id]);
    expect(state.rows).toEqual([{ master_key_fingerprint: createHmac('sha256', master).update('sotalk-key-fingerprint').digest('hex').slice(0, 16) }]);
  });

  it('the same word in two conversations has unrelated tokens (the database cannot link them)', async () => {
    const inGroup = hexSet((await tokensOf(plain.id)).map((r) => r.token));
    const inDirect = hexSet((await tokensOf(plainInDirect.id)).map((r) => r.token));
    expect(inDirect).toEqual(hexSet(['hello', LATIN, 'there'].map((w) => handToken(d, w))));
    expect(inGroup.filter((t) => inDirect.includes(t))).toEqual([]);
  });

  it('no token row of the database can be told apart from random by matching a bare hash of any word', async () => {
    // Every token stored is the hand-computed HMAC of some word of a live message, under its own conversation.
    const { rows } = await srv.pool.query<{ conversation_id: string; token: Buffer; message_id: string }>('SELECT conversation_id, token, message_id FROM message_search_tokens');
    expect(rows.length).toBeGreaterThan(10);
    const bare = new Set(['hello', 'there', ...ALL].map((w) => createHash('sha256').update(w.toLowerCase()).digest().subarray(0, 16).toString('hex')));
    for (const r of rows) expect(bare.has(r.token.toString('hex'))).toBe(false);
    const { rows: dead } = await srv.pool.query(
      'SELECT t.message_id FROM message_search_tokens t JOIN messages m ON m.id = t.message_id WHERE m.deleted_at IS NOT NULL OR m.conversation_id <> t.conversation_id',
    );
    expect(dead).toEqual([]);
  });
});

describe('errors never echo the query', () => {
  it('400 answers for q, before, limit and conversation_id do not repeat what was sent', async () => {
    const u = await signIn(srv.baseUrl);
    const secret = `zqsecret${randomUUID().replace(/-/g, '').replace(/\d/g, 'k')}`;
    const answers = await Promise.all([
      u.api.get(`/api/v1/search?q=${encodeURIComponent(secret + ' ' + 'z'.repeat(300))}`),
      u.api.get(`/api/v1/search?q=${encodeURIComponent(secret)}&before=${secret}`),
      u.api.get(`/api/v1/search?q=${encodeURIComponent(secret)}&limit=${secret}`),
      u.api.get(`/api/v1/search?q=${encodeURIComponent(secret)}&conversation_id=${secret}`),
    ]);
    for (const res of answers) {
      expect(res.status).toBe(400);
      expect(JSON.stringify(res.body)).not.toContain(secret);
    }
  });
});
