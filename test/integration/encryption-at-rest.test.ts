// Integration tests: encryption at rest (docs/design.md, Crypto and Data), tamper detection, clock independence, decryption audit.
import { execFile } from 'node:child_process';
import { createDecipheriv, createHmac, hkdfSync, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { messageAad, open } from '../../src/crypto/aead.js';
import { deriveConversationKey, keyFingerprint } from '../../src/crypto/kdf.js';
import { createTestDatabase } from '../helpers/db.js';
import type { ApiResponse } from '../helpers/http.js';
import { signIn, startTestServer, TEST_MASTER_KEY_B64, type SignedInUser, type TestServer } from '../helpers/server.js';

const CACHE_TTL_MS = 300;

// ---------------------------------------------------------------- local helpers

const MASTER = Buffer.from(TEST_MASTER_KEY_B64, 'base64');

/** docs/design.md "Crypto", derived here from its text (not through src/). */
function handDerivedKey(master: Buffer, conversationId: string, createdUnixSeconds: number, version: number): Buffer {
  return Buffer.from(
    hkdfSync('sha256', master, Buffer.from(`${conversationId.toLowerCase()}:${createdUnixSeconds}:${version}`, 'utf8'), Buffer.from('sotalk-conversation-encryption-v1', 'utf8'), 32),
  );
}
const handFingerprint = (key: Buffer) => createHmac('sha256', key).update('sotalk-key-fingerprint').digest('hex').slice(0, 16);

function handDecrypt(key: Buffer, nonce: Buffer, ciphertext: Buffer, tag: Buffer, aad: string): Buffer | null {
  const d = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: 16 });
  d.setAAD(Buffer.from(aad, 'utf8'));
  d.setAuthTag(tag);
  const body = d.update(ciphertext);
  try {
    return Buffer.concat([body, d.final()]);
  } catch {
    return null;
  }
}

function expectError(res: ApiResponse, status: number, code: string): void {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.body?.error?.code).toBe(code);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let srv: TestServer;

beforeAll(async () => {
  // A short history-cache lifetime, so that tampering behind the server's back shows within the test.
  srv = await startTestServer({ env: { HISTORY_CACHE_TTL_MS: String(CACHE_TTL_MS) } });
});

afterAll(async () => {
  await srv?.close();
});

type Tuple<T, N extends number, R extends T[] = []> = R['length'] extends N ? R : Tuple<T, N, [T, ...R]>;
const users = <N extends number>(n: N, s: TestServer = srv) =>
  Promise.all(Array.from({ length: n }, () => signIn(s.baseUrl))) as unknown as Promise<Tuple<SignedInUser, N>>;

async function direct(a: SignedInUser, b: SignedInUser): Promise<string> {
  const res = await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] });
  expect([200, 201]).toContain(res.status);
  return res.body.conversation.id;
}

async function group(owner: SignedInUser, members: SignedInUser[], title = 'g'): Promise<string> {
  const res = await owner.api.post('/api/v1/conversations', { type: 'group', title, member_ids: members.map((m) => m.user.id) });
  expect(res.status).toBe(201);
  return res.body.conversation.id;
}

async function send(u: SignedInUser, conversationId: string, content: string, extra: Record<string, unknown> = {}): Promise<any> {
  const res = await u.api.post('/api/v1/messages', { conversation_id: conversationId, content, ...extra });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.message;
}

async function history(u: SignedInUser, conversationId: string, query = 'limit=200'): Promise<any[]> {
  const res = await u.api.get(`/api/v1/conversations/${conversationId}/messages?${query}`);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.messages;
}

const quoteIdent = (s: string) => `"${s.replace(/"/g, '""')}"`;

interface Hit {
  table: string;
  column: string;
  how: string;
  count: number;
}

/**
 * Looks for `needle` everywhere in the database: every column of every user table (cast to text),
 * every bytea column byte-wise (raw bytes and the `escape` encoding), and every whole row as text.
 */
async function scanDatabase(pool: TestServer['pool'], needle: string): Promise<Hit[]> {
  const { rows: cols } = await pool.query<{ table_schema: string; table_name: string; column_name: string; data_type: string }>(
    `SELECT c.table_schema, c.table_name, c.column_name, c.data_type
     FROM information_schema.columns c
     JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE'
     WHERE c.table_schema NOT IN ('pg_catalog', 'information_schema') AND c.table_schema NOT LIKE 'pg_toast%'
     ORDER BY c.table_schema, c.table_name, c.ordinal_position`,
  );
  expect(cols.length).toBeGreaterThan(10);
  const hits: Hit[] = [];
  const needleBytes = Buffer.from(needle, 'utf8');
  const tables = new Set<string>();
  for (const col of cols) {
    const table = `${quoteIdent(col.table_schema)}.${quoteIdent(col.table_name)}`;
    tables.add(table);
    const column = quoteIdent(col.column_name);
    const checks: [string, string, unknown][] = [['text', `SELECT count(*)::int AS n FROM ${table} WHERE strpos(${column}::text, $1) > 0`, needle]];
    if (col.data_type === 'bytea') {
      checks.push(['bytes', `SELECT count(*)::int AS n FROM ${table} WHERE position($1::bytea IN ${column}) > 0`, needleBytes]);
      checks.push(['escape', `SELECT count(*)::int AS n FROM ${table} WHERE strpos(encode(${column}, 'escape'), $1) > 0`, needle]);
      checks.push(['hex', `SELECT count(*)::int AS n FROM ${table} WHERE strpos(encode(${column}, 'hex'), $1) > 0`, needleBytes.toString('hex')]);
    }
    for (const [how, sql, param] of checks) {
      const { rows } = await pool.query(sql, [param]);
      if (rows[0].n > 0) hits.push({ table: col.table_name, column: col.column_name, how, count: rows[0].n });
    }
  }
  for (const table of tables) {
    const { rows } = await pool.query(`SELECT count(*)::int AS n FROM ${table} AS r WHERE strpos(r::text, $1) > 0`, [needle]);
    if (rows[0].n > 0) hits.push({ table, column: '(whole row)', how: 'row', count: rows[0].n });
  }
  return hits;
}

/** Every bytea column that contains `bytes` anywhere. */
async function scanBytes(pool: TestServer['pool'], bytes: Buffer): Promise<Hit[]> {
  const { rows: cols } = await pool.query<{ table_schema: string; table_name: string; column_name: string }>(
    `SELECT table_schema, table_name, column_name FROM information_schema.columns
     WHERE data_type = 'bytea' AND table_schema NOT IN ('pg_catalog', 'information_schema')`,
  );
  expect(cols.length).toBeGreaterThan(0);
  const hits: Hit[] = [];
  for (const c of cols) {
    const { rows } = await pool.query(
      `SELECT count(*)::int AS n FROM ${quoteIdent(c.table_schema)}.${quoteIdent(c.table_name)} WHERE position($1::bytea IN ${quoteIdent(c.column_name)}) > 0`,
      [bytes],
    );
    if (rows[0].n > 0) hits.push({ table: c.table_name, column: c.column_name, how: 'bytes', count: rows[0].n });
  }
  return hits;
}

async function pollAudit(sql: string, params: unknown[], expected: number, timeoutMs = 5000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let value = -1;
  while (Date.now() < deadline) {
    const { rows } = await srv.pool.query(sql, params);
    value = Number(rows[0].n ?? 0);
    if (value === expected) return value;
    if (value > expected) return value;
    await sleep(25);
  }
  return value;
}

// ---------------------------------------------------------------- hand derivation sanity

describe('hand derivation per docs/design.md (Crypto)', () => {
  it('matches the project’s crypto vectors (so the derivation below is the documented one)', () => {
    const vectors = JSON.parse(readFileSync(new URL('../fixtures/crypto-vectors.json', import.meta.url), 'utf8'));
    for (const f of vectors.fingerprints) expect(handFingerprint(Buffer.from(f.master_key_b64, 'base64'))).toBe(f.fingerprint);
    for (const v of vectors.conversation_keys) {
      expect(handDerivedKey(Buffer.from(v.master_key_b64, 'base64'), v.conversation_id, v.created_unix_seconds, v.version).toString('hex')).toBe(v.key);
    }
  });
});

// ---------------------------------------------------------------- canary

describe('no plaintext at rest', () => {
  it('the scanner finds plaintext where it is stored (positive control)', async () => {
    const [a] = await users(1);
    const control = `control-${randomBytes(8).toString('hex')}`;
    expect((await a.api.patch('/api/v1/users/me', { display_name: control })).status).toBe(200);
    const hits = await scanDatabase(srv.pool, control);
    expect(hits.some((h) => h.table === 'users' && h.column === 'display_name')).toBe(true);
    // and byte-wise inside bytea columns: a scratch table of our own
    await srv.pool.query('CREATE TABLE IF NOT EXISTS zz_scanner_control (b bytea)');
    try {
      await srv.pool.query('INSERT INTO zz_scanner_control VALUES ($1)', [Buffer.concat([randomBytes(7), Buffer.from(control), randomBytes(5)])]);
      const byteHits = await scanDatabase(srv.pool, control);
      expect(byteHits.filter((h) => h.table === 'zz_scanner_control').map((h) => h.how).sort()).toEqual(['bytes', 'escape', 'hex']);
    } finally {
      await srv.pool.query('DROP TABLE zz_scanner_control');
    }
  });

  it('a canary sent, edited, replied to, deleted and read back appears in no column of any table, nor in pg_dump', async () => {
    const [a, b, c] = await users(3);
    const canary = `CANARY-${randomBytes(12).toString('hex')}`;
    const canaryEdited = `EDITED-${randomBytes(12).toString('hex')}`;
    const canaryDeleted = `DELETED-${randomBytes(12).toString('hex')}`;
    const d = await direct(a, b);
    const g = await group(a, [b, c], 'plain title');
    const sent: any[] = [];
    sent.push(await send(a, d, canary));
    sent.push(await send(b, d, `some words before ${canary} and after`, { content_type: 'markdown' }));
    sent.push(await send(c, g, JSON.stringify({ secret: canary, n: 1 }), { content_type: 'json' }));
    sent.push(await send(a, g, `ünïcødé ✓ 😀 ${canary} ✓`, { reply_to_id: sent[2].id }));
    sent.push(await send(b, g, canary, { client_message_id: 'plain-client-id', signature: 'plain-signature' }));
    const viaRecipient = await a.api.post('/api/v1/messages', { recipient_id: c.user.id, content: `to c: ${canary}` });
    expect(viaRecipient.status).toBe(201);
    // an edit: the old content must be gone too
    const toEdit = await send(a, d, `will be edited ${canary}`);
    expect((await a.api.patch(`/api/v1/messages/${toEdit.id}`, { content: `now ${canaryEdited}` })).status).toBe(200);
    const replyEdited = await send(b, d, `reply quoting ${canaryEdited}`, { reply_to_id: toEdit.id });
    expect(replyEdited.reply_to_id).toBe(toEdit.id);
    // a deletion
    const toDelete = await send(c, g, `short-lived ${canaryDeleted}`);
    expect((await c.api.delete(`/api/v1/messages/${toDelete.id}`)).status).toBe(200);
    // idempotent replay
    expect((await b.api.post('/api/v1/messages', { conversation_id: g, content: canary, client_message_id: 'plain-client-id' })).status).toBe(200);
    // read everything back (decryption, audit rows, receipts)
    expect((await history(b, d)).some((m) => m.content === `now ${canaryEdited}`)).toBe(true);
    expect((await history(c, g)).filter((m) => m.content?.includes(canary))).toHaveLength(3);
    expect((await a.api.get('/api/v1/conversations')).status).toBe(200);
    await b.api.post(`/api/v1/conversations/${d}/read`, { seq: 1 });
    await a.api.post(`/api/v1/conversations/${g}/rotate-key`);
    await send(c, g, `after rotation ${canary}`);
    await sleep(200); // let the batched audit writer flush, so its rows are scanned too

    for (const needle of [canary, canaryEdited, canaryDeleted]) {
      expect(await scanDatabase(srv.pool, needle), needle).toEqual([]);
    }
    // sanity: the messages really are there, as ciphertext
    const { rows } = await srv.pool.query('SELECT count(*)::int AS n FROM messages WHERE conversation_id = ANY($1::uuid[]) AND content IS NOT NULL', [[d, g]]);
    expect(rows[0].n).toBeGreaterThanOrEqual(8);

    // the conversation keys themselves (derived by hand) are stored nowhere, in any encoding
    const keyRows = await srv.pool.query('SELECT conversation_id, version, created_unix_seconds FROM conversation_keys WHERE conversation_id = ANY($1::uuid[])', [[d, g]]);
    expect(keyRows.rows.length).toBeGreaterThanOrEqual(3);
    const keys = keyRows.rows.map((r) => handDerivedKey(MASTER, r.conversation_id, Number(r.created_unix_seconds), r.version));
    for (const key of [...keys, MASTER]) {
      for (const encoded of [key.toString('hex'), key.toString('base64'), key.toString('base64url')]) {
        expect(await scanDatabase(srv.pool, encoded), 'encoded key').toEqual([]);
      }
      expect(await scanBytes(srv.pool, key), 'raw key bytes').toEqual([]);
    }

    // pg_dump of the whole database, data and schema
    const dump = await promisify(execFile)('pg_dump', ['--no-owner', srv.database.url], { maxBuffer: 256 * 1024 * 1024 }).then(
      (r) => r.stdout,
      (err) => {
        throw new Error(`pg_dump failed: ${err.message}`);
      },
    );
    expect(dump).toContain('COPY public.messages');
    for (const needle of [canary, canaryEdited, canaryDeleted]) {
      expect(dump.includes(needle), `${needle} in pg_dump`).toBe(false);
      expect(dump.includes(Buffer.from(needle).toString('hex')), `${needle} as hex in pg_dump`).toBe(false);
    }
  });
});

// ---------------------------------------------------------------- nonces, layout

describe('ciphertext layout and nonces', () => {
  it('~300 messages (and edits): every nonce unique, 12-byte nonces, 16-byte tags, ciphertext without the tag', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    const contents = Array.from({ length: 300 }, (_, i) => (i % 3 === 0 ? `m${i} é€😀` : `message number ${i}`));
    const sent: any[] = [];
    for (let i = 0; i < contents.length; i += 15) {
      const batch = contents.slice(i, i + 15);
      sent.push(...(await Promise.all(batch.map((content, j) => send((i + j) % 2 ? a : b, d, content)))));
    }
    // 20 edits of the same content add 20 more nonces
    const edited = sent.filter((m) => m.sender_id === a.user.id).slice(0, 20);
    for (const m of edited) expect((await a.api.patch(`/api/v1/messages/${m.id}`, { content: m.content })).status).toBe(200);

    const { rows } = await srv.pool.query(
      `SELECT m.id, m.content, e.nonce, e.tag, e.algorithm, e.key_version
       FROM messages m JOIN message_encryption_metadata e ON e.message_id = m.id WHERE m.conversation_id = $1`,
      [d],
    );
    expect(rows).toHaveLength(300);
    const plainById = new Map(sent.map((m) => [m.id, m.content as string]));
    for (const r of rows) {
      expect(r.nonce.length).toBe(12);
      expect(r.tag.length).toBe(16);
      expect(r.algorithm).toBe('AES-256-GCM');
      expect(r.key_version).toBe(1);
      // GCM: ciphertext as long as the plaintext, the tag stored apart
      expect(r.content.length).toBe(Buffer.byteLength(plainById.get(r.id)!, 'utf8'));
    }
    const all = await srv.pool.query('SELECT count(*)::int AS n, count(DISTINCT nonce)::int AS d FROM message_encryption_metadata');
    expect(all.rows[0].d).toBe(all.rows[0].n);
    expect(new Set(rows.map((r) => r.nonce.toString('hex'))).size).toBe(300);
    // identical plaintexts never give identical ciphertexts
    const same = await Promise.all(Array.from({ length: 10 }, () => send(a, d, 'identical plaintext')));
    const sameRows = await srv.pool.query('SELECT content FROM messages WHERE id = ANY($1::uuid[])', [same.map((m) => m.id)]);
    expect(new Set(sameRows.rows.map((r) => r.content.toString('hex'))).size).toBe(10);

    // and they all read back, in pages big enough to go through the worker pool
    const p1 = await history(b, d, 'limit=200&after_seq=0');
    const p2 = await history(b, d, 'limit=200&after_seq=200');
    const back = [...p1, ...p2].filter((m) => m.content !== 'identical plaintext');
    expect(back).toHaveLength(300);
    for (const m of back) {
      expect(m.integrity_error).toBeUndefined();
      expect(m.content).toBe(plainById.get(m.id));
    }
  });
});

// ---------------------------------------------------------------- hand decryption

describe('a stored row decrypts with a key derived by hand', () => {
  it('version 1 and, after rotation, version 2', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    const plain1 = `hand-check ✓ ${randomUUID()} ünïcødé`;
    const m1 = await send(a, d, plain1);
    expect((await b.api.post(`/api/v1/conversations/${d}/rotate-key`)).status).toBe(200);
    const plain2 = `second key version ${randomUUID()}`;
    const m2 = await send(b, d, plain2);

    for (const [m, plain, version] of [[m1, plain1, 1], [m2, plain2, 2]] as const) {
      const { rows } = await srv.pool.query(
        `SELECT m.content, m.sender_id, m.conversation_id, e.nonce, e.tag, e.key_version, e.algorithm, k.created_unix_seconds, k.master_key_fingerprint
         FROM messages m JOIN message_encryption_metadata e ON e.message_id = m.id
         JOIN conversation_keys k ON k.conversation_id = m.conversation_id AND k.version = e.key_version
         WHERE m.id = $1`,
        [m.id],
      );
      expect(rows).toHaveLength(1);
      const r = rows[0];
      expect(r.key_version).toBe(version);
      expect(r.algorithm).toBe('AES-256-GCM');
      expect(r.master_key_fingerprint).toBe(handFingerprint(MASTER));
      expect(r.master_key_fingerprint).toBe(keyFingerprint(MASTER));
      const created = Number(r.created_unix_seconds);
      expect(Number.isSafeInteger(created)).toBe(true);
      const key = handDerivedKey(MASTER, d, created, version);
      expect(key.equals(deriveConversationKey(MASTER, d, created, version))).toBe(true);
      const aad = `${d}:${m.id}:${m.sender_id}`;
      expect(messageAad(d, m.id, m.sender_id).toString('utf8')).toBe(aad);
      const out = handDecrypt(key, r.nonce, r.content, r.tag, aad);
      expect(out?.toString('utf8')).toBe(plain);
      expect(open(key, r.nonce, r.content, r.tag, Buffer.from(aad))?.toString('utf8')).toBe(plain);
      // the binding is real: any other AAD, timestamp, version or master key fails
      expect(handDecrypt(key, r.nonce, r.content, r.tag, `${d}:${randomUUID()}:${m.sender_id}`)).toBeNull();
      expect(handDecrypt(key, r.nonce, r.content, r.tag, `${d}:${m.id}:${randomUUID()}`)).toBeNull();
      expect(handDecrypt(handDerivedKey(MASTER, d, created + 1, version), r.nonce, r.content, r.tag, aad)).toBeNull();
      expect(handDecrypt(handDerivedKey(MASTER, d, created, version + 1), r.nonce, r.content, r.tag, aad)).toBeNull();
      expect(handDecrypt(handDerivedKey(randomBytes(32), d, created, version), r.nonce, r.content, r.tag, aad)).toBeNull();
    }
  });

  it('an edited message decrypts by hand to the new content', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    const m = await send(a, d, 'before edit');
    expect((await a.api.patch(`/api/v1/messages/${m.id}`, { content: 'after edit ✓' })).status).toBe(200);
    const { rows } = await srv.pool.query(
      `SELECT m.content, e.nonce, e.tag, e.key_version, k.created_unix_seconds
       FROM messages m JOIN message_encryption_metadata e ON e.message_id = m.id
       JOIN conversation_keys k ON k.conversation_id = m.conversation_id AND k.version = e.key_version WHERE m.id = $1`,
      [m.id],
    );
    const key = handDerivedKey(MASTER, d, Number(rows[0].created_unix_seconds), rows[0].key_version);
    expect(handDecrypt(key, rows[0].nonce, rows[0].content, rows[0].tag, `${d}:${m.id}:${a.user.id}`)?.toString()).toBe('after edit ✓');
  });
});

// ---------------------------------------------------------------- tamper

describe('tamper detection', () => {
  it('one flipped ciphertext byte: that message comes back content null + integrity_error, the rest is served', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    const sent = [];
    for (let i = 1; i <= 5; i++) sent.push(await send(i % 2 ? a : b, d, `intact message ${i}`));
    const victim = sent[2];
    await srv.pool.query('UPDATE messages SET content = set_byte(content, 3, get_byte(content, 3) # 1) WHERE id = $1', [victim.id]);
    const res = await b.api.get(`/api/v1/conversations/${d}/messages`);
    expect(res.status).toBe(200);
    const msgs = res.body.messages;
    expect(msgs).toHaveLength(5);
    for (const m of msgs) {
      if (m.id === victim.id) {
        expect(m.content).toBeNull();
        expect(m.integrity_error).toBe(true);
        expect(m.deleted).toBe(false);
        expect(m.seq).toBe(victim.seq);
      } else {
        expect(m.integrity_error).toBeUndefined();
        expect(m.content).toBe(sent.find((s) => s.id === m.id).content);
      }
    }
    // flipping the byte back restores it: the flip was the only cause
    await srv.pool.query('UPDATE messages SET content = set_byte(content, 3, get_byte(content, 3) # 1) WHERE id = $1', [victim.id]);
    const restored = (await history(a, d)).find((m) => m.id === victim.id);
    expect(restored.content).toBe('intact message 3');
    expect(restored.integrity_error).toBeUndefined();
  });

  it('a flipped tag or nonce byte is an integrity error too', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    const m1 = await send(a, d, 'tag victim');
    const m2 = await send(a, d, 'nonce victim');
    const m3 = await send(a, d, 'bystander');
    await srv.pool.query('UPDATE message_encryption_metadata SET tag = set_byte(tag, 15, get_byte(tag, 15) # 128) WHERE message_id = $1', [m1.id]);
    await srv.pool.query('UPDATE message_encryption_metadata SET nonce = set_byte(nonce, 0, get_byte(nonce, 0) # 1) WHERE message_id = $1', [m2.id]);
    const msgs = await history(b, d);
    expect(msgs.map((m) => [m.content, m.integrity_error ?? false])).toEqual([
      [null, true],
      [null, true],
      [m3.content, false],
    ]);
  });

  it('a corrupt last message does not break the conversation list', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    await send(a, d, 'fine');
    const last = await send(a, d, 'corrupt me');
    await srv.pool.query('UPDATE messages SET content = set_byte(content, 0, get_byte(content, 0) # 255) WHERE id = $1', [last.id]);
    const res = await b.api.get('/api/v1/conversations');
    expect(res.status).toBe(200);
    const item = res.body.conversations.find((c: any) => c.id === d);
    expect(item.last_message.id).toBe(last.id);
    expect(item.last_message.content).toBeNull();
    expect(item.last_message.integrity_error).toBe(true);
  });

  it('a missing metadata row is an integrity error, not a failed page', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    const m1 = await send(a, d, 'metadata lost');
    const m2 = await send(a, d, 'still fine');
    await srv.pool.query('DELETE FROM message_encryption_metadata WHERE message_id = $1', [m1.id]);
    const msgs = await history(b, d);
    expect(msgs[0]).toMatchObject({ id: m1.id, content: null, integrity_error: true });
    expect(msgs[1]).toMatchObject({ id: m2.id, content: 'still fine' });
  });

  it('swapping two messages’ ciphertext + metadata makes both integrity errors', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    const m1 = await send(a, d, 'swap A: same length!');
    const m2 = await send(a, d, 'swap B: same length!');
    const m3 = await send(b, d, 'untouched');
    const swap = async () => {
      const client = await srv.pool.connect();
      try {
        await client.query('BEGIN');
        await client.query(
          `WITH x AS (
             SELECT m.id, m.content, e.nonce, e.tag, e.key_version FROM messages m JOIN message_encryption_metadata e ON e.message_id = m.id
             WHERE m.id IN ($1, $2)
           )
           UPDATE messages t SET content = o.content FROM x o WHERE t.id IN ($1, $2) AND o.id <> t.id`,
          [m1.id, m2.id],
        );
        await client.query(
          `WITH x AS (SELECT message_id, nonce, tag, key_version FROM message_encryption_metadata WHERE message_id IN ($1, $2))
           UPDATE message_encryption_metadata t SET nonce = o.nonce, tag = o.tag, key_version = o.key_version
           FROM x o WHERE t.message_id IN ($1, $2) AND o.message_id <> t.message_id`,
          [m1.id, m2.id],
        );
        await client.query('COMMIT');
      } finally {
        client.release();
      }
    };
    await swap();
    const swapped = await history(b, d);
    expect(swapped.map((m) => [m.id, m.content, m.integrity_error ?? false])).toEqual([
      [m1.id, null, true],
      [m2.id, null, true],
      [m3.id, 'untouched', false],
    ]);
  });

  it('a byte flipped after the page was already read is detected once the cached page expires (HISTORY_CACHE_TTL_MS)', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    const m1 = await send(a, d, 'read first, tampered later');
    const m2 = await send(a, d, 'bystander');
    // a client reads the page, as clients do all the time
    expect((await history(b, d)).map((m) => m.content)).toEqual([m1.content, m2.content]);
    await srv.pool.query('UPDATE messages SET content = set_byte(content, 0, get_byte(content, 0) # 1) WHERE id = $1', [m1.id]);
    await new Promise((r) => setTimeout(r, CACHE_TTL_MS + 100));
    const after = await history(b, d);
    expect(after.map((m) => [m.content, m.integrity_error ?? false])).toEqual([
      [null, true],
      [m2.content, false],
    ]);
  });

  it('a repaired row (tampering undone in the database) reads fine again', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    const m1 = await send(a, d, 'flip and flip back');
    await srv.pool.query('UPDATE messages SET content = set_byte(content, 0, get_byte(content, 0) # 1) WHERE id = $1', [m1.id]);
    expect((await history(b, d))[0]).toMatchObject({ content: null, integrity_error: true });
    await srv.pool.query('UPDATE messages SET content = set_byte(content, 0, get_byte(content, 0) # 1) WHERE id = $1', [m1.id]);
    const repaired = (await history(b, d))[0];
    expect(repaired.content).toBe('flip and flip back');
    expect(repaired.integrity_error).toBeUndefined();
  });

  it('a ciphertext moved to a message of another conversation fails to decrypt there', async () => {
    const [a, b, c] = await users(3);
    const d1 = await direct(a, b);
    const d2 = await direct(a, c);
    const src = await send(a, d1, 'moving ciphertext');
    const dst = await send(a, d2, 'destination slot!');
    await srv.pool.query(
      `UPDATE messages SET content = (SELECT content FROM messages WHERE id = $1) WHERE id = $2`,
      [src.id, dst.id],
    );
    await srv.pool.query(
      `UPDATE message_encryption_metadata t SET nonce = s.nonce, tag = s.tag, key_version = s.key_version
       FROM message_encryption_metadata s WHERE s.message_id = $1 AND t.message_id = $2`,
      [src.id, dst.id],
    );
    const msgs = await history(c, d2);
    expect(msgs[0]).toMatchObject({ id: dst.id, content: null, integrity_error: true });
    expect((await history(b, d1))[0].content).toBe('moving ciphertext');
  });
});

// ---------------------------------------------------------------- time

describe('clock independence', () => {
  it('messages written with the clock at day D read fine after a restart with the clock at D+2 days', async () => {
    const database = await createTestDatabase();
    const D = Date.UTC(2025, 0, 15, 12, 0, 0, 250);
    const DAY = 86_400_000;
    try {
      // day D
      const s1 = await startTestServer({ database, deps: { clock: () => new Date(D) } });
      let a: SignedInUser;
      let b: SignedInUser;
      let conv: string;
      const written: string[] = [];
      let oldToken: string;
      try {
        [a, b] = await users(2, s1);
        oldToken = a.token;
        const res = await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] });
        conv = res.body.conversation.id;
        for (let i = 0; i < 5; i++) {
          const content = `written on day D #${i} ✓`;
          written.push(content);
          const r = await (i % 2 ? b : a).api.post('/api/v1/messages', { conversation_id: conv, content });
          expect(r.status).toBe(201);
        }
        const { rows } = await s1.pool.query('SELECT version, created_unix_seconds FROM conversation_keys WHERE conversation_id = $1', [conv]);
        // the timestamp comes from the (injected) service clock and is stored
        expect(rows.map((r) => [r.version, Number(r.created_unix_seconds)])).toEqual([[1, Math.floor(D / 1000)]]);
      } finally {
        await s1.close();
      }

      // day D + 2, a fresh process-level state (caches, pool) on the same data
      const s2 = await startTestServer({ database, deps: { clock: () => new Date(D + 2 * DAY) } });
      try {
        // the day-D token (24 h lifetime) has expired by the new clock
        const stale = await fetch(`${s2.baseUrl}/api/v1/users/me`, { headers: { authorization: `Bearer ${oldToken!}` } });
        expect(stale.status).toBe(401);
        const a2 = await signIn(s2.baseUrl, a!.wallet);
        const b2 = await signIn(s2.baseUrl, b!.wallet);
        expect(a2.user.id).toBe(a!.user.id);
        const msgs = await history(b2, conv!);
        expect(msgs.map((m) => m.content)).toEqual(written);
        expect(msgs.every((m) => m.integrity_error === undefined)).toBe(true);
        // new messages are written (under whichever version is current) and read back
        const later = await send(a2, conv!, 'written on day D+2');
        const meta = await s2.pool.query(
          `SELECT e.key_version FROM message_encryption_metadata e
           JOIN conversation_keys k ON k.conversation_id = $2 AND k.version = e.key_version WHERE e.message_id = $1`,
          [later.id, conv!],
        );
        expect(meta.rows).toHaveLength(1);
        // a rotation at D+2 is stamped D+2 (from the injected clock), version 1 keeps its day-D stamp
        const current = (await a2.api.get(`/api/v1/conversations/${conv!}`)).body.conversation.current_key_version;
        const rotated = await a2.api.post(`/api/v1/conversations/${conv!}/rotate-key`);
        expect(rotated.body.current_key_version).toBe(current + 1);
        const keys = await s2.pool.query('SELECT version, created_unix_seconds FROM conversation_keys WHERE conversation_id = $1 ORDER BY version', [conv!]);
        const stamps = new Map(keys.rows.map((r) => [r.version, Number(r.created_unix_seconds)]));
        expect(stamps.get(1)).toBe(Math.floor(D / 1000));
        expect(stamps.get(current + 1)).toBe(Math.floor((D + 2 * DAY) / 1000));
        await send(b2, conv!, 'written on day D+2 under v2');
        written.push('written on day D+2', 'written on day D+2 under v2');
      } finally {
        await s2.close();
      }

      // and with the real clock, much later
      const s3 = await startTestServer({ database });
      try {
        const a3 = await signIn(s3.baseUrl, a!.wallet);
        const msgs = await history(a3, conv!);
        expect(msgs.map((m) => m.content)).toEqual(written);
        expect(msgs.every((m) => m.integrity_error === undefined)).toBe(true);
      } finally {
        await s3.close();
      }
    } finally {
      await database.drop();
    }
  });
});

// ---------------------------------------------------------------- audit

describe('decryption audit', () => {
  const SUM = `SELECT COALESCE(sum(message_count), 0)::int AS n FROM decryption_audit WHERE actor_id = $1 AND conversation_id = $2 AND purpose = 'fetch'`;

  /** Everything recorded before this call is flushed once its own row has appeared (FIFO writer). */
  async function barrier(u: SignedInUser): Promise<void> {
    const [peer] = await users(1);
    const conv = await direct(u, peer);
    await send(peer, conv, 'barrier');
    const requestId = `barrier-${randomUUID()}`;
    const res = await u.api.raw('GET', `/api/v1/conversations/${conv}/messages`, { headers: { 'x-request-id': requestId } });
    expect(res.status).toBe(200);
    const n = await pollAudit('SELECT count(*)::int AS n FROM decryption_audit WHERE request_id = $1', [requestId], 1);
    expect(n, 'barrier audit row').toBe(1);
  }

  it('sending creates no audit rows; a fetch counts exactly the decrypted messages for the caller', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    for (let i = 0; i < 7; i++) await send(a, d, `audited ${i}`);
    await barrier(a);
    expect(Number((await srv.pool.query('SELECT count(*)::int AS n FROM decryption_audit WHERE conversation_id = $1', [d])).rows[0].n)).toBe(0);

    const requestId = `fetch-${randomUUID()}`;
    const res = await b.api.raw('GET', `/api/v1/conversations/${d}/messages`, { headers: { 'x-request-id': requestId } });
    expect(res.status).toBe(200);
    expect(res.body.messages).toHaveLength(7);
    expect(await pollAudit(SUM, [b.user.id, d], 7)).toBe(7);
    await barrier(b);
    expect(Number((await srv.pool.query(SUM, [b.user.id, d])).rows[0].n)).toBe(7);
    const { rows } = await srv.pool.query('SELECT actor_id, purpose, request_id, occurred_at FROM decryption_audit WHERE conversation_id = $1', [d]);
    expect(rows.every((r) => r.actor_id === b.user.id && r.purpose === 'fetch' && r.occurred_at instanceof Date)).toBe(true);
    expect(rows.map((r) => r.request_id)).toContain(requestId);
    // nothing for the sender
    expect(Number((await srv.pool.query(SUM, [a.user.id, d])).rows[0].n)).toBe(0);

    // a page of 3 adds 3
    expect((await history(b, d, 'limit=3')).length).toBe(3);
    expect(await pollAudit(SUM, [b.user.id, d], 10)).toBe(10);
    await barrier(b);
    expect(Number((await srv.pool.query(SUM, [b.user.id, d])).rows[0].n)).toBe(10);
  });

  it('integrity failures and tombstones are not counted', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    const sent = [];
    for (let i = 0; i < 6; i++) sent.push(await send(a, d, `m${i}`));
    await srv.pool.query('UPDATE messages SET content = set_byte(content, 0, get_byte(content, 0) # 1) WHERE id = $1', [sent[1].id]);
    expect((await a.api.delete(`/api/v1/messages/${sent[4].id}`)).status).toBe(200);
    const msgs = await history(b, d);
    expect(msgs.filter((m) => m.content !== null)).toHaveLength(4);
    expect(await pollAudit(SUM, [b.user.id, d], 4)).toBe(4);
    await barrier(b);
    expect(Number((await srv.pool.query(SUM, [b.user.id, d])).rows[0].n)).toBe(4);
  });

  it('an idempotent replay answers the stored message decrypted, audited like a fetch (one message each)', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    const body = { conversation_id: d, content: 'replayed', client_message_id: 'audit-replay' };
    expect((await a.api.post('/api/v1/messages', body)).status).toBe(201);
    for (let i = 0; i < 3; i++) expect((await a.api.post('/api/v1/messages', body)).status).toBe(200);
    await barrier(a);
    const { rows } = await srv.pool.query('SELECT actor_id, purpose, sum(message_count)::int AS n FROM decryption_audit WHERE conversation_id = $1 GROUP BY 1, 2', [d]);
    expect(rows).toEqual([{ actor_id: a.user.id, purpose: 'fetch', n: 3 }]);
  });

  it('the conversation list counts each decrypted last_message for the caller', async () => {
    const [a, b] = await users(2);
    const g1 = await group(a, [b], 'one');
    const g2 = await group(a, [b], 'two');
    await group(a, [b], 'empty');
    await send(a, g1, 'last in one');
    await send(a, g2, 'first in two');
    await send(a, g2, 'last in two');
    const list = await b.api.get('/api/v1/conversations');
    expect(list.status).toBe(200);
    expect(list.body.conversations.filter((c: any) => c.last_message).map((c: any) => c.last_message.content).sort()).toEqual(['last in one', 'last in two']);
    expect(await pollAudit(SUM, [b.user.id, g1], 1)).toBe(1);
    expect(await pollAudit(SUM, [b.user.id, g2], 1)).toBe(1);
    await barrier(b);
    expect(Number((await srv.pool.query(SUM, [b.user.id, g2])).rows[0].n)).toBe(1);
  });

  it('a 150-message page (worker pool path) is decrypted and audited as 150', async () => {
    const [a, b] = await users(2);
    const d = await direct(a, b);
    for (let i = 0; i < 150; i += 15) {
      await Promise.all(Array.from({ length: 15 }, (_, j) => send(a, d, `bulk ${i + j}`)));
    }
    const msgs = await history(b, d, 'limit=150');
    expect(msgs).toHaveLength(150);
    expect(new Set(msgs.map((m) => m.content))).toEqual(new Set(Array.from({ length: 150 }, (_, i) => `bulk ${i}`)));
    expect(await pollAudit(SUM, [b.user.id, d], 150)).toBe(150);
  });

  it('a non-member’s refused fetch is not audited', async () => {
    const [a, b, outsider] = await users(3);
    const d = await direct(a, b);
    await send(a, d, 'private');
    expectError(await outsider.api.get(`/api/v1/conversations/${d}/messages`), 404, 'not_found');
    await barrier(outsider);
    expect(Number((await srv.pool.query('SELECT count(*)::int AS n FROM decryption_audit WHERE conversation_id = $1', [d])).rows[0].n)).toBe(0);
  });
});
