// Integration tests: key lifecycle inside the server (README.md, Configuration; docs/design.md, Crypto).
// Two master keys from the crypto vectors, the lazy new key version on a master-key change
// (also under concurrent senders), automatic rotation by message count and by age, and a key
// version whose master key the server does not hold. The CLI jobs are in key-lifecycle-cli.test.ts.
import { createDecipheriv, createHmac, hkdfSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { apiClient, type ApiClient } from '../helpers/http.js';
import { signIn, startTestServer, type SignedInUser, type TestServer } from '../helpers/server.js';

// ---------------------------------------------------------------- keys and hand-made crypto (docs/design.md, Crypto)

const VECTORS = JSON.parse(readFileSync(new URL('../fixtures/crypto-vectors.json', import.meta.url), 'utf8'));
const KEY_A_B64: string = VECTORS.fingerprints[0].master_key_b64;
const KEY_B_B64: string = VECTORS.fingerprints[1].master_key_b64;
const KEY_A = Buffer.from(KEY_A_B64, 'base64');
const KEY_B = Buffer.from(KEY_B_B64, 'base64');
const FP_A: string = VECTORS.fingerprints[0].fingerprint;
const FP_B: string = VECTORS.fingerprints[1].fingerprint;
const MASTER_BY_FP = new Map([
  [FP_A, KEY_A],
  [FP_B, KEY_B],
]);

/** Tokens must survive a restart with another master key (the default secret derives from it). */
const COMMON = { AUTH_TOKEN_SECRET: 'key-lifecycle-tests-token-secret-0123456789abcdef', RATE_LIMIT_SEND_PER_MIN: '0' };
const ON_A = { ...COMMON, ENCRYPTION_MASTER_KEY: KEY_A_B64, ENCRYPTION_OLD_MASTER_KEYS: '' };
const ON_B_WITH_A = { ...COMMON, ENCRYPTION_MASTER_KEY: KEY_B_B64, ENCRYPTION_OLD_MASTER_KEYS: KEY_A_B64 };
const ONLY_B = { ...COMMON, ENCRYPTION_MASTER_KEY: KEY_B_B64, ENCRYPTION_OLD_MASTER_KEYS: '' };

const handFingerprint = (key: Buffer) => createHmac('sha256', key).update('sotalk-key-fingerprint').digest('hex').slice(0, 16);

function handDerivedKey(master: Buffer, conversationId: string, createdUnixSeconds: number, version: number): Buffer {
  return Buffer.from(
    hkdfSync('sha256', master, Buffer.from(`${conversationId.toLowerCase()}:${createdUnixSeconds}:${version}`, 'utf8'), Buffer.from('sotalk-conversation-encryption-v1', 'utf8'), 32),
  );
}

function handDecrypt(key: Buffer, nonce: Buffer, ciphertext: Buffer, tag: Buffer, aad: string): string | null {
  const d = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: 16 });
  d.setAAD(Buffer.from(aad, 'utf8'));
  d.setAuthTag(tag);
  const body = d.update(ciphertext);
  try {
    return Buffer.concat([body, d.final()]).toString('utf8');
  } catch {
    return null;
  }
}

interface StoredRow {
  id: string;
  conversation_id: string;
  sender_id: string;
  content: Buffer;
  nonce: Buffer;
  tag: Buffer;
  algorithm: string;
  key_version: number;
  created_unix_seconds: number;
  master_key_fingerprint: string;
}

const STORED_SQL = `
  SELECT m.id, m.conversation_id, m.sender_id, m.content, e.nonce, e.tag, e.algorithm, e.key_version,
         k.created_unix_seconds::float8 AS created_unix_seconds, k.master_key_fingerprint
  FROM messages m
  JOIN message_encryption_metadata e ON e.message_id = m.id
  JOIN conversation_keys k ON k.conversation_id = m.conversation_id AND k.version = e.key_version`;

async function storedRow(s: TestServer, messageId: string): Promise<StoredRow> {
  const { rows } = await s.pool.query<StoredRow>(`${STORED_SQL} WHERE m.id = $1`, [messageId]);
  expect(rows, `stored row of ${messageId}`).toHaveLength(1);
  return rows[0]!;
}

/** Decrypts a stored row by hand (docs/design.md, Crypto) with the given master key. */
function handOpen(master: Buffer, r: StoredRow): string | null {
  const key = handDerivedKey(master, r.conversation_id, r.created_unix_seconds, r.key_version);
  return handDecrypt(key, r.nonce, r.content, r.tag, `${r.conversation_id}:${r.id}:${r.sender_id}`);
}

async function keyVersions(s: TestServer, conversationId: string): Promise<{ version: number; master_key_fingerprint: string; created_unix_seconds: number }[]> {
  const { rows } = await s.pool.query(
    'SELECT version, master_key_fingerprint, created_unix_seconds::float8 AS created_unix_seconds FROM conversation_keys WHERE conversation_id = $1 ORDER BY version',
    [conversationId],
  );
  return rows;
}

// ---------------------------------------------------------------- API helpers

/** The same user (same token) against another server instance. */
const on = (s: TestServer, u: SignedInUser): ApiClient => apiClient(s.baseUrl, u.token);

async function send(api: ApiClient, conversationId: string, content: string): Promise<any> {
  const res = await api.post('/api/v1/messages', { conversation_id: conversationId, content });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.message;
}

async function history(api: ApiClient, conversationId: string): Promise<any[]> {
  const res = await api.get(`/api/v1/conversations/${conversationId}/messages?limit=200`);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.messages;
}

async function group(owner: ApiClient, members: SignedInUser[], title = 'keys'): Promise<string> {
  const res = await owner.post('/api/v1/conversations', { type: 'group', title, member_ids: members.map((m) => m.user.id) });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.conversation.id;
}

async function currentKeyVersion(api: ApiClient, conversationId: string): Promise<number> {
  const res = await api.get(`/api/v1/conversations/${conversationId}`);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.conversation.current_key_version;
}

const nowS = () => Math.floor(Date.now() / 1000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function eventually<T>(fn: () => Promise<T>, ok: (t: T) => boolean, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: last value ${JSON.stringify(value)}`);
    await sleep(50);
  }
}

// ---------------------------------------------------------------- tests

describe('the two vector master keys (docs/design.md, Crypto)', () => {
  it('fingerprints and conversation keys of both vector keys are reproduced by hand from the text of docs/design.md', () => {
    expect(handFingerprint(KEY_A)).toBe(FP_A);
    expect(handFingerprint(KEY_B)).toBe(FP_B);
    expect(FP_A).not.toBe(FP_B);
    const masters = new Set<string>();
    for (const v of VECTORS.conversation_keys) {
      masters.add(v.master_key_b64);
      const key = handDerivedKey(Buffer.from(v.master_key_b64, 'base64'), v.conversation_id, v.created_unix_seconds, v.version);
      expect(key.toString('hex'), v.salt_utf8).toBe(v.key);
    }
    expect(masters).toEqual(new Set([KEY_A_B64, KEY_B_B64]));
  });
});

describe('master key change A → B (A kept in ENCRYPTION_OLD_MASTER_KEYS)', () => {
  let db: TestDatabase;
  let s: TestServer;
  let a: SignedInUser, b: SignedInUser, c: SignedInUser;
  let direct: string; // 3 messages under A, then one under B
  let crowded: string; // 1 message under A, then 20 concurrent sends under B
  const underA: { id: string; content: string }[] = [];
  let startedS: number;

  beforeAll(async () => {
    startedS = nowS();
    db = await createTestDatabase();
    s = await startTestServer({ database: db, env: ON_A });
    [a, b, c] = await Promise.all([signIn(s.baseUrl), signIn(s.baseUrl), signIn(s.baseUrl)]);
    const res = await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] });
    expect(res.status).toBe(201);
    direct = res.body.conversation.id;
    for (const content of ['written under A: one', 'written under A: two ✓', 'written under A: drei ü']) {
      const m = await send(a.api, direct, content);
      underA.push({ id: m.id, content });
    }
    crowded = await group(a.api, [b, c], 'crowded');
    await send(a.api, crowded, 'the only message under A');
  }, 120_000);

  afterAll(async () => {
    await s?.close();
    await db?.drop();
  });

  it('a row written under master key A decrypts by hand with the key derived from A (and not with B)', async () => {
    const versions = await keyVersions(s, direct);
    expect(versions.map((v) => [v.version, v.master_key_fingerprint])).toEqual([[1, FP_A]]);
    expect(versions[0]!.created_unix_seconds).toBeGreaterThanOrEqual(startedS - 1);
    expect(versions[0]!.created_unix_seconds).toBeLessThanOrEqual(nowS() + 1);
    for (const { id, content } of underA) {
      const row = await storedRow(s, id);
      expect(row.key_version).toBe(1);
      expect(row.algorithm).toBe('AES-256-GCM');
      expect(row.nonce).toHaveLength(12);
      expect(row.tag).toHaveLength(16);
      expect(handOpen(KEY_A, row)).toBe(content);
      expect(handOpen(KEY_B, row)).toBeNull();
    }
  });

  it('on key B, a new message gets a new key version created under B; its row decrypts by hand with B; old messages still read fine', async () => {
    await s.close();
    s = await startTestServer({ database: db, env: ON_B_WITH_A });
    const api = on(s, a);

    const before = nowS();
    const fresh = await send(api, direct, 'written under B');
    const versions = await keyVersions(s, direct);
    expect(versions.map((v) => [v.version, v.master_key_fingerprint])).toEqual([
      [1, FP_A],
      [2, FP_B],
    ]);
    expect(versions[1]!.created_unix_seconds).toBeGreaterThanOrEqual(before - 1);
    expect(versions[1]!.created_unix_seconds).toBeLessThanOrEqual(nowS() + 1);

    const row = await storedRow(s, fresh.id);
    expect(row.key_version).toBe(2);
    expect(row.master_key_fingerprint).toBe(FP_B);
    expect(handOpen(KEY_B, row)).toBe('written under B');
    expect(handOpen(KEY_A, row)).toBeNull();
    // The old rows are untouched: still version 1 under A.
    for (const { id } of underA) expect((await storedRow(s, id)).key_version).toBe(1);

    expect(await currentKeyVersion(api, direct)).toBe(2);
    for (const viewer of [a, b]) {
      const page = await history(on(s, viewer), direct);
      expect(page.map((m) => m.content)).toEqual([...underA.map((m) => m.content), 'written under B']);
      expect(page.map((m) => m.seq)).toEqual([1, 2, 3, 4]);
      expect(page.some((m) => m.integrity_error)).toBe(false);
    }
  }, 120_000);

  it('an edit of a message written under A re-encrypts it under the current version (B)', async () => {
    const target = underA[0]!;
    const res = await on(s, a).patch(`/api/v1/messages/${target.id}`, { content: 'edited under B' });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.message.content).toBe('edited under B');
    const row = await storedRow(s, target.id);
    expect(row.master_key_fingerprint).toBe(FP_B);
    expect(row.key_version).toBe(2);
    expect(handOpen(KEY_B, row)).toBe('edited under B');
    target.content = 'edited under B';
    const page = await history(on(s, b), direct);
    expect(page[0].content).toBe('edited under B');
    expect((await keyVersions(s, direct)).map((v) => v.version)).toEqual([1, 2]);
  });

  it('20 concurrent senders into a conversation created under A create exactly ONE new key version, and all 20 messages use it', async () => {
    const senders = [a, b, c].map((u) => on(s, u));
    const contents = Array.from({ length: 20 }, (_, i) => `concurrent #${i}`);
    const sent = await Promise.all(contents.map((content, i) => send(senders[i % 3]!, crowded, content)));

    const versions = await keyVersions(s, crowded);
    expect(versions.map((v) => [v.version, v.master_key_fingerprint])).toEqual([
      [1, FP_A],
      [2, FP_B],
    ]);
    const { rows } = await s.pool.query<{ key_version: number; n: number }>(
      `SELECT e.key_version, count(*)::int AS n FROM messages m JOIN message_encryption_metadata e ON e.message_id = m.id
       WHERE m.id = ANY($1::uuid[]) GROUP BY 1`,
      [sent.map((m) => m.id)],
    );
    expect(rows).toEqual([{ key_version: 2, n: 20 }]);
    for (const m of sent.slice(0, 3)) expect(handOpen(KEY_B, await storedRow(s, m.id))).toBe(m.content);
    expect(await currentKeyVersion(senders[0]!, crowded)).toBe(2);

    const page = await history(senders[1]!, crowded);
    expect(page).toHaveLength(21);
    expect(page[0].content).toBe('the only message under A');
    expect(new Set(page.slice(1).map((m) => m.content))).toEqual(new Set(contents));
    expect(page.some((m) => m.integrity_error)).toBe(false);
  });
});

describe('automatic rotation of conversation key versions', () => {
  it('KEY_ROTATION_MESSAGES=5: 12 sequential messages use versions 1×5, 2×5, 3×2, all readable', async () => {
    const s = await startTestServer({ env: { ...ON_A, KEY_ROTATION_MESSAGES: '5' } });
    try {
      const [a, b] = await Promise.all([signIn(s.baseUrl), signIn(s.baseUrl)]);
      const conv = await group(a.api, [b]);
      const sent: any[] = [];
      for (let i = 1; i <= 12; i++) sent.push(await send(i % 2 ? a.api : b.api, conv, `rotating ${i}`));

      const rows = await Promise.all(sent.map((m) => storedRow(s, m.id)));
      expect(rows.map((r) => r.key_version)).toEqual([1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3]);
      rows.forEach((r, i) => expect(handOpen(KEY_A, r), `message ${i + 1}`).toBe(`rotating ${i + 1}`));
      const versions = await keyVersions(s, conv);
      expect(versions.map((v) => [v.version, v.master_key_fingerprint])).toEqual([
        [1, FP_A],
        [2, FP_A],
        [3, FP_A],
      ]);
      expect(await currentKeyVersion(a.api, conv)).toBe(3);
      const page = await history(b.api, conv);
      expect(page.map((m) => m.content)).toEqual(sent.map((m) => m.content));
      expect(page.some((m) => m.integrity_error)).toBe(false);
    } finally {
      await s.close();
    }
  }, 120_000);

  it('KEY_ROTATION_MESSAGES=3: edits count and retire the version too; the next message and edit use the new one, everything readable', async () => {
    const s = await startTestServer({ env: { ...ON_A, KEY_ROTATION_MESSAGES: '3' } });
    try {
      const [a, b] = await Promise.all([signIn(s.baseUrl), signIn(s.baseUrl)]);
      const conv = await group(a.api, [b]);
      const m = await send(a.api, conv, 'version one');
      for (const text of ['edited once', 'edited twice']) expect((await a.api.patch(`/api/v1/messages/${m.id}`, { content: text })).status).toBe(200);
      expect(await currentKeyVersion(a.api, conv)).toBe(2); // 1 send + 2 edits = 3 encryptions under version 1
      const next = await send(b.api, conv, 'under version two');
      expect((await storedRow(s, next.id)).key_version).toBe(2);
      expect((await a.api.patch(`/api/v1/messages/${m.id}`, { content: 'edited thrice' })).status).toBe(200);
      expect((await storedRow(s, m.id)).key_version).toBe(2);
      const page = await history(b.api, conv);
      expect(page.map((x) => x.content)).toEqual(['edited thrice', 'under version two']);
    } finally {
      await s.close();
    }
  }, 120_000);

  it('KEY_ROTATION_MESSAGES=5 under concurrent senders: every send succeeds (the server\'s own rotation is no reason for a 503)', async () => {
    const s = await startTestServer({ env: { ...ON_A, KEY_ROTATION_MESSAGES: '5' } });
    try {
      const [a, b] = await Promise.all([signIn(s.baseUrl), signIn(s.baseUrl)]);
      const conv = await group(a.api, [b]);
      const statuses: Record<number, number> = {};
      const created: any[] = [];
      for (let round = 0; round < 5; round++) {
        const results = await Promise.all(
          Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).api.post('/api/v1/messages', { conversation_id: conv, content: `burst ${round}/${i}` })),
        );
        for (const r of results) {
          statuses[r.status] = (statuses[r.status] ?? 0) + 1;
          if (r.status === 201) created.push(r.body.message);
        }
      }
      // Whatever was accepted is readable.
      const page = await history(a.api, conv);
      expect(page).toHaveLength(created.length);
      expect(page.some((m) => m.integrity_error)).toBe(false);
      expect(statuses).toEqual({ 201: 200 });
    } finally {
      await s.close();
    }
  }, 180_000);

  it('KEY_ROTATION_MAX_AGE_S: the first message after the current version is that old creates a new version (timestamp from the service clock)', async () => {
    let now = Date.now();
    const s = await startTestServer({ env: { ...ON_A, KEY_ROTATION_MAX_AGE_S: '60' }, deps: { clock: () => new Date(now) } });
    try {
      const [a, b] = await Promise.all([signIn(s.baseUrl), signIn(s.baseUrl)]);
      const conv = await group(a.api, [b]);
      const first = await send(a.api, conv, 'young key');
      now += 30_000;
      const second = await send(b.api, conv, 'still young');
      now += 31_000; // version 1 is now 61 s old
      const third = await send(a.api, conv, 'after expiry');
      const fourth = await send(b.api, conv, 'same new version');

      const rows = await Promise.all([first, second, third, fourth].map((m) => storedRow(s, m.id)));
      expect(rows.map((r) => r.key_version)).toEqual([1, 1, 2, 2]);
      const versions = await keyVersions(s, conv);
      expect(versions).toHaveLength(2);
      expect(versions[1]!.created_unix_seconds).toBe(Math.floor(now / 1000));
      expect(versions[1]!.created_unix_seconds - versions[0]!.created_unix_seconds).toBeGreaterThanOrEqual(60);
      rows.forEach((r, i) => expect(handOpen(KEY_A, r)).toBe([first, second, third, fourth][i].content));
      expect((await history(a.api, conv)).map((m) => m.content)).toEqual(['young key', 'still young', 'after expiry', 'same new version']);
    } finally {
      await s.close();
    }
  }, 120_000);
});

describe('several instances on one database', () => {
  let db: TestDatabase;
  const servers: TestServer[] = [];
  let a: SignedInUser, b: SignedInUser;

  const start = async (env: Record<string, string>) => {
    const s = await startTestServer({ database: db, env });
    servers.push(s);
    return s;
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    const first = await start(ON_A);
    [a, b] = await Promise.all([signIn(first.baseUrl), signIn(first.baseUrl)]);
  }, 120_000);

  afterAll(async () => {
    for (const s of servers) await s.close().catch(() => undefined);
    await db?.drop();
  });

  it('after a master-key change, 20 concurrent senders spread over two instances create exactly one new version', async () => {
    const conv = await group(on(servers[0]!, a), [b]);
    await send(on(servers[0]!, a), conv, 'under A');
    await servers.shift()!.close();
    const [s1, s2] = [await start(ON_B_WITH_A), await start(ON_B_WITH_A)];
    const sent = await Promise.all(Array.from({ length: 20 }, (_, i) => send(on(i % 2 ? s1 : s2, i % 4 < 2 ? a : b), conv, `spread ${i}`)));
    expect((await keyVersions(s1, conv)).map((v) => [v.version, v.master_key_fingerprint])).toEqual([
      [1, FP_A],
      [2, FP_B],
    ]);
    const rows = await Promise.all(sent.map((m) => storedRow(s1, m.id)));
    expect(new Set(rows.map((r) => r.key_version))).toEqual(new Set([2]));
    rows.forEach((r, i) => expect(handOpen(KEY_B, r)).toBe(sent[i].content));
  }, 120_000);

  it('rotate-key through one instance: the next message through another instance (which just used the old version) uses the new one', async () => {
    const [s1, s2] = servers;
    const conv = await group(on(s1!, a), [b]);
    await send(on(s2!, b), conv, 'before rotation'); // s2 now knows version 1 as current
    const rotated = await on(s1!, a).post(`/api/v1/conversations/${conv}/rotate-key`, {});
    expect(rotated.status, JSON.stringify(rotated.body)).toBe(200);
    expect(rotated.body.current_key_version).toBe(2);
    const after = await send(on(s2!, b), conv, 'after rotation');
    expect((await storedRow(s2!, after.id)).key_version).toBe(2);
    expect((await history(on(s1!, a), conv)).map((m) => m.content)).toEqual(['before rotation', 'after rotation']);
  }, 60_000);

  // docs/operations.md: during a rolling deploy an instance may hold the NEXT key in ENCRYPTION_OLD_MASTER_KEYS
  // while others already run with it active (docs/operations.md, phase 2). Both kinds of instances
  // serve the same conversations until the roll completes.
  it('rolling deploy (A active + B next, B active + A old): alternating sends do not create a key version per message', async () => {
    const [s1] = servers; // B active, A old
    const sA = await start({ ...COMMON, ENCRYPTION_MASTER_KEY: KEY_A_B64, ENCRYPTION_OLD_MASTER_KEYS: KEY_B_B64 });
    const conv = await group(on(s1!, a), [b]);
    const sent: any[] = [];
    for (let i = 0; i < 10; i++) sent.push(await send(on(i % 2 ? sA : s1!, a), conv, `rolling ${i}`));
    const page = await history(on(sA, b), conv);
    expect(page.map((m) => m.content)).toEqual(sent.map((m) => m.content));
    const versions = await keyVersions(s1!, conv);
    expect(versions.length, `key versions after 10 alternating messages: ${versions.map((v) => `${v.version}:${v.master_key_fingerprint}`).join(' ')}`).toBeLessThanOrEqual(3);
  }, 120_000);

  it('rolling deploy: concurrent sends through an A-active and a B-active instance all succeed (no 503)', async () => {
    const [s1] = servers;
    const sA = servers[servers.length - 1]!;
    const conv = await group(on(s1!, a), [b]);
    const statuses: Record<number, number> = {};
    for (let round = 0; round < 3; round++) {
      const results = await Promise.all(
        Array.from({ length: 40 }, (_, i) => on(i % 2 ? sA : s1!, i % 4 < 2 ? a : b).post('/api/v1/messages', { conversation_id: conv, content: `mixed ${round}/${i}` })),
      );
      for (const r of results) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
    }
    const versions = await keyVersions(s1!, conv);
    expect(statuses, `statuses over 120 sends; ${versions.length} key versions created`).toEqual({ 201: 120 });
  }, 180_000);
});

describe('a key version whose master key the server does not hold', () => {
  let db: TestDatabase;
  let s: TestServer;
  let a: SignedInUser, b: SignedInUser;
  let small: string; // 3 messages under A
  let big: string; // 70 messages under A: a page large enough for the worker pool
  const smallIds: string[] = [];
  const logLines: string[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    s = await startTestServer({ database: db, env: ON_A });
    [a, b] = await Promise.all([signIn(s.baseUrl), signIn(s.baseUrl)]);
    const res = await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] });
    small = res.body.conversation.id;
    for (let i = 1; i <= 3; i++) smallIds.push((await send(a.api, small, `secret small ${i}`)).id);
    big = await group(a.api, [b], 'big');
    for (let i = 0; i < 70; i += 10) await Promise.all(Array.from({ length: 10 }, (_, j) => send(j % 2 ? a.api : b.api, big, `secret big ${i + j}`)));
    await s.close();
    // Restart with ONLY key B: A is neither active nor old (operator forgot it before rotate-master).
    const logger = createLogger('debug', { write: (line: string) => void logLines.push(line) });
    s = await startTestServer({ database: db, env: ONLY_B, deps: { logger } });
  }, 180_000);

  afterAll(async () => {
    await s?.close();
    await db?.drop();
  });

  it('such messages come back with content null and integrity_error true; the rest of the page is served', async () => {
    const api = on(s, b);
    const before = await history(api, small);
    expect(before).toHaveLength(3);
    for (const [i, m] of before.entries()) {
      expect(m.id).toBe(smallIds[i]);
      expect(m.seq).toBe(i + 1);
      expect(m.content).toBeNull();
      expect(m.integrity_error).toBe(true);
      expect(m.deleted).toBe(false);
      expect(m.sender_id).toBe(a.user.id);
    }
    // Sending still works: a new version under B is created; the page mixes both outcomes.
    const fresh = await send(on(s, a), small, 'readable under B');
    expect((await keyVersions(s, small)).map((v) => [v.version, v.master_key_fingerprint])).toEqual([
      [1, FP_A],
      [2, FP_B],
    ]);
    const page = await history(api, small);
    expect(page.map((m) => m.content)).toEqual([null, null, null, 'readable under B']);
    expect(page.map((m) => Boolean(m.integrity_error))).toEqual([true, true, true, false]);
    expect(page[3].id).toBe(fresh.id);
  });

  it('a large page (worker pool path) degrades the same way, and the conversation list still answers', async () => {
    const page = await history(on(s, a), big);
    expect(page).toHaveLength(70);
    expect(page.every((m) => m.content === null && m.integrity_error === true)).toBe(true);
    const list = await on(s, a).get('/api/v1/conversations?limit=20');
    expect(list.status, JSON.stringify(list.body)).toBe(200);
    const entry = list.body.conversations.find((c: any) => c.id === big);
    expect(entry).toBeDefined();
    if (entry.last_message) {
      expect(entry.last_message.content).toBeNull();
      expect(entry.last_message.integrity_error).toBe(true);
    }
    expect((await on(s, a).get('/healthz')).status).toBe(200);
  });

  it('the failures are logged with the message ids and the missing fingerprint only (no plaintext, no key)', async () => {
    await history(on(s, a), small); // one more read, so the log surely has lines for every small id
    const text = logLines.join('');
    const failures = logLines.filter((l) => l.includes(FP_A));
    expect(failures.length, 'log lines naming the missing fingerprint').toBeGreaterThan(0);
    for (const id of smallIds) expect(failures.some((l) => l.includes(id)), `a log line names ${id} and ${FP_A}`).toBe(true);
    expect(text).not.toContain('secret small');
    expect(text).not.toContain('secret big');
    expect(text).not.toContain('readable under B');
    for (const k of [KEY_A, KEY_B]) {
      expect(text).not.toContain(k.toString('base64'));
      expect(text).not.toContain(k.toString('hex'));
    }
    const metrics = await on(s, a).get('/metrics');
    const count = Number(/^sotalk_integrity_errors_total(?:\{[^}]*\})? (\d+(?:\.\d+)?)/m.exec(metrics.body)?.[1] ?? NaN);
    expect(count).toBeGreaterThanOrEqual(3 + 70);
  });

  it('undecryptable messages are not audited as served; the readable one is', async () => {
    const audited = async () =>
      (await s.pool.query<{ n: number }>(`SELECT coalesce(sum(message_count), 0)::int AS n FROM decryption_audit WHERE conversation_id = $1 AND purpose = 'fetch'`, [small])).rows[0]!.n;
    await sleep(300); // let earlier reads' buffered audit rows land
    const base = await audited();
    await history(on(s, b), small); // 3 failures + 1 served
    await eventually(audited, (n) => n >= base + 1, 'the fetch audit row');
    await sleep(200);
    expect(await audited()).toBe(base + 1);
  });

  it('restarted with A back in ENCRYPTION_OLD_MASTER_KEYS, the same messages read fine again (nothing was damaged)', async () => {
    await s.close();
    s = await startTestServer({ database: db, env: ON_B_WITH_A });
    const page = await history(on(s, b), small);
    expect(page.map((m) => m.content)).toEqual(['secret small 1', 'secret small 2', 'secret small 3', 'readable under B']);
    expect(page.some((m) => m.integrity_error)).toBe(false);
    const bigPage = await history(on(s, a), big);
    expect(new Set(bigPage.map((m) => m.content))).toEqual(new Set(Array.from({ length: 70 }, (_, i) => `secret big ${i}`)));
  }, 120_000);

  it('every stored row is still exactly the ciphertext written under A (the failed reads changed nothing)', async () => {
    for (const id of smallIds) {
      const row = await storedRow(s, id);
      expect(row.master_key_fingerprint).toBe(FP_A);
      expect(handOpen(MASTER_BY_FP.get(row.master_key_fingerprint)!, row)).toMatch(/^secret small \d$/);
    }
  });
});
