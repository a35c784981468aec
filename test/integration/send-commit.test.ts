// The group commit's database side (migrations 0008 and 0010, src/db/send-commit.ts): one round trip
// per flush, binary bytea, every verdict the batcher relies on, and checks that stay index probes,
// against real Postgres.
import { randomBytes, randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import '../../src/db/database.js'; // int8 parser
import { migrateUp } from '../../src/db/migrations.js';
import type { NewMessage } from '../../src/db/messages.js';
import { commitSendBatch } from '../../src/db/send-commit.js';
import { createLogger } from '../../src/log.js';
import { SendBatcher } from '../../src/services/send-batcher.js';
import { createTestDatabase, type TestDatabase, testPool } from '../helpers/db.js';

let db: TestDatabase;
let pool: pg.Pool;
const policy = { maxMessagesPerKey: 0, activeFingerprint: 'fp', nowUnixSeconds: 1_700_000_000 };

async function conversation(memberCount = 1): Promise<{ id: string; members: string[] }> {
  const members = Array.from({ length: memberCount }, () => randomUUID());
  const id = randomUUID();
  for (const u of members) await pool.query('INSERT INTO users (id, wallet) VALUES ($1, $2)', [u, `w-${u}`]);
  await pool.query(`INSERT INTO conversations (id, type, created_by, current_key_version) VALUES ($1, 'group', $2, 1)`, [id, members[0]]);
  for (const u of members) await pool.query(`INSERT INTO conversation_members (conversation_id, user_id, role) VALUES ($1, $2, 'member')`, [id, u]);
  await pool.query(
    `INSERT INTO conversation_keys (conversation_id, version, master_key_fingerprint, created_unix_seconds, origin) VALUES ($1, 1, 'fp', 1, 'initial')`,
    [id],
  );
  return { id, members };
}

function message(conversationId: string, senderId: string, over: Partial<NewMessage> = {}): NewMessage {
  return {
    id: randomUUID(),
    conversationId,
    senderId,
    ciphertext: randomBytes(1 + Math.floor(Math.random() * 300)),
    nonce: randomBytes(12),
    tag: randomBytes(16),
    keyVersion: 1,
    keyFingerprint: 'fp',
    contentType: 'text',
    signature: null,
    replyToId: null,
    clientMessageId: null,
    search: { tokens: [randomBytes(16), randomBytes(16), randomBytes(16)], fingerprint: 'fp' },
    ...over,
  };
}

beforeAll(async () => {
  db = await createTestDatabase();
  pool = testPool(db.url, 4);
  await migrateUp(pool);
});

afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

describe('sotalk_send_batch', () => {
  it('stores every byte exactly (ciphertext, nonce, tag, tokens) and assigns gap-free seqs per conversation', async () => {
    const a = await conversation();
    const b = await conversation();
    const batch = [message(a.id, a.members[0]!), message(b.id, b.members[0]!), message(a.id, a.members[0]!, { search: null }), message(a.id, a.members[0]!)];
    const { verdicts } = await commitSendBatch(pool, batch, policy);
    expect(verdicts.map((v) => (v.kind === 'inserted' ? v.seq : v.kind))).toEqual([1, 1, 2, 3]);
    for (const m of batch) {
      const { rows } = await pool.query(
        `SELECT m.content, e.nonce, e.tag, e.key_version, s.tokens, s.master_key_fingerprint
         FROM messages m JOIN message_encryption_metadata e ON e.message_id = m.id LEFT JOIN message_search_index s ON s.message_id = m.id WHERE m.id = $1`,
        [m.id],
      );
      expect(rows[0].content.equals(m.ciphertext)).toBe(true);
      expect(rows[0].nonce.equals(m.nonce)).toBe(true);
      expect(rows[0].tag.equals(m.tag)).toBe(true);
      if (m.search) expect(rows[0].tokens.map((t: Buffer) => t.toString('hex'))).toEqual(m.search.tokens.map((t) => t.toString('hex')));
      else expect(rows[0].tokens).toBeNull();
    }
    const { rows } = await pool.query('SELECT last_seq FROM conversations WHERE id = $1', [a.id]);
    expect(rows[0].last_seq).toBe(3);
  });

  it('judges each message on its own: not a member, reply elsewhere, duplicate (stored and within the flush), stale key', async () => {
    const a = await conversation(2);
    const other = await conversation();
    const [first] = (await commitSendBatch(pool, [message(other.id, other.members[0]!)], policy)).verdicts;
    expect(first!.kind).toBe('inserted');
    const stored = message(a.id, a.members[0]!, { clientMessageId: 'k1' });
    await commitSendBatch(pool, [stored], policy);
    await pool.query(`UPDATE conversations SET current_key_version = 2 WHERE id = $1`, [a.id]);
    await pool.query(`INSERT INTO conversation_keys (conversation_id, version, master_key_fingerprint, created_unix_seconds, origin) VALUES ($1, 2, 'fp', 2, 'explicit')`, [a.id]);
    const replyTarget = (await pool.query('SELECT id FROM messages WHERE conversation_id = $1', [other.id])).rows[0].id;
    const batch = [
      message(a.id, randomUUID(), { keyVersion: 2 }), // not a member
      message(a.id, a.members[0]!, { replyToId: replyTarget, keyVersion: 2 }), // reply to another conversation
      message(a.id, a.members[0]!, { clientMessageId: 'k1', keyVersion: 2 }), // stored duplicate
      message(a.id, a.members[1]!, { clientMessageId: 'k2', keyVersion: 2 }),
      message(a.id, a.members[1]!, { clientMessageId: 'k2', keyVersion: 2 }), // duplicate within the flush
      message(a.id, a.members[1]!, { keyVersion: 1 }), // sealed before an explicit rotation
      message(randomUUID(), a.members[0]!), // no such conversation
    ];
    const { verdicts } = await commitSendBatch(pool, batch, policy);
    expect(verdicts.map((v) => v.kind)).toEqual(['not_member', 'bad_reply', 'duplicate', 'inserted', 'duplicate', 'stale_key', 'not_member']);
    expect(verdicts[5]).toEqual({ kind: 'stale_key', currentVersion: 2 });
    expect(verdicts[3]).toMatchObject({ kind: 'inserted', seq: 2 });
  });

  it('retires a full key version inside the commit and reports the conversation', async () => {
    const a = await conversation();
    const { verdicts, retired } = await commitSendBatch(pool, [message(a.id, a.members[0]!), message(a.id, a.members[0]!), message(a.id, a.members[0]!)], {
      ...policy,
      maxMessagesPerKey: 2,
      activeFingerprint: 'fp-next',
    });
    expect(verdicts.every((v) => v.kind === 'inserted')).toBe(true);
    expect(retired).toEqual([a.id]);
    const { rows } = await pool.query('SELECT version, master_key_fingerprint, origin, message_count FROM conversation_keys WHERE conversation_id = $1 ORDER BY version', [a.id]);
    expect(rows).toEqual([
      { version: 1, master_key_fingerprint: 'fp', origin: 'initial', message_count: 3 },
      { version: 2, master_key_fingerprint: 'fp-next', origin: 'count', message_count: 0 },
    ]);
  });

  it('a flush is one query with the bytes in one binary parameter (no bytea arrays, no BEGIN/COMMIT trips)', async () => {
    const a = await conversation();
    const calls: unknown[][] = [];
    const counting = new Proxy(pool, {
      get(target, prop, receiver) {
        if (prop === 'query' || prop === 'connect') {
          return (...args: any[]) => {
            calls.push([prop, ...args]);
            return (target as any)[prop](...args);
          };
        }
        return Reflect.get(target, prop, receiver);
      },
    });
    const batcher = new SendBatcher({ pool: counting as pg.Pool, logger: createLogger('silent'), keyPolicy: () => policy });
    const outcomes = await Promise.all(Array.from({ length: 50 }, () => batcher.submit(message(a.id, a.members[0]!))));
    expect(outcomes.map((o) => (o.kind === 'inserted' ? o.seq : 0)).sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    expect(calls.map((c) => c[0])).toEqual(['query']);
    const values = (calls[0]![1] as { values: unknown[] }).values;
    const buffers = values.filter((v) => Buffer.isBuffer(v));
    expect(buffers).toHaveLength(1);
    expect(values.some((v) => Array.isArray(v) && v.some((x) => Buffer.isBuffer(x)))).toBe(false);
  });
});

describe('sotalk_send_batch on a database without statistics yet (a fresh deployment, a benchmark)', () => {
  // Migration 0008's checks were EXISTS sub-selects; after five calls a connection's cached generic
  // plan evaluated them as hashed sub-plans, reading all of messages and conversation_members into a
  // hash on every call, so a flush cost time in proportion to the table (`npm run bench:commit --
  // --client-message-ids --replies`: 3,100 against 150 µs of Postgres CPU per message, BENCHMARKS.md).
  // Migration 0010 makes each check, the conversation locks and the key retirement index probes.
  let fresh: TestDatabase;
  let one: pg.Pool;

  beforeAll(async () => {
    fresh = await createTestDatabase();
    one = testPool(fresh.url, 1); // one backend: its plan cache is what is measured
    await migrateUp(one);
  });

  afterAll(async () => {
    await one?.end();
    await fresh?.drop();
  });

  /** Sequential scans so far, this backend's counts flushed first (pg_stat_force_next_flush, PG 15+). */
  async function seqScans(): Promise<Record<string, number>> {
    await one.query('SELECT pg_stat_force_next_flush()');
    const { rows } = await one.query<{ relname: string; seq_scan: number }>(
      `SELECT relname, seq_scan FROM pg_stat_user_tables WHERE relname IN ('messages', 'conversation_members', 'conversation_keys', 'conversations') ORDER BY relname`,
    );
    return Object.fromEntries(rows.map((r) => [r.relname, Number(r.seq_scan)]));
  }

  it('60 flushes of idempotent sends and replies read no table whole: every check is an index probe', async () => {
    const convs: { id: string; members: string[] }[] = [];
    for (let i = 0; i < 8; i++) {
      const members = [randomUUID(), randomUUID()];
      const id = randomUUID();
      for (const u of members) await one.query('INSERT INTO users (id, wallet) VALUES ($1, $2)', [u, `w-${u}`]);
      await one.query(`INSERT INTO conversations (id, type, created_by) VALUES ($1, 'group', $2)`, [id, members[0]]);
      for (const u of members) await one.query(`INSERT INTO conversation_members (conversation_id, user_id, role) VALUES ($1, $2, 'member')`, [id, u]);
      await one.query(`INSERT INTO conversation_keys (conversation_id, version, master_key_fingerprint, created_unix_seconds) VALUES ($1, 1, 'fp', 1)`, [id]);
      convs.push({ id, members });
    }
    const last = new Map<string, string>();
    const before = await seqScans();
    for (let flush = 0; flush < 60; flush++) {
      const batch = Array.from({ length: 16 }, (_, i) => {
        const c = convs[(flush + i) % convs.length]!;
        return message(c.id, c.members[i % 2]!, { clientMessageId: randomUUID(), replyToId: i % 2 ? (last.get(c.id) ?? null) : null });
      });
      const { verdicts } = await commitSendBatch(one, batch, { ...policy, maxMessagesPerKey: 2 ** 24 });
      expect(verdicts.every((v) => v.kind === 'inserted')).toBe(true);
      for (const m of batch) last.set(m.conversationId, m.id);
    }
    const after = await seqScans();
    const grown = Object.fromEntries(Object.keys(after).map((t) => [t, after[t]! - (before[t] ?? 0)]));
    // Each call locked, probed and retired by index. (Under 0008, once the generic plan was in use,
    // every call scanned messages and conversation_members several times, and conversations.)
    expect({ messages: grown.messages, conversation_members: grown.conversation_members }).toEqual({ messages: 0, conversation_members: 0 });
    expect(grown.conversations).toBeLessThanOrEqual(5); // at most the first calls' custom plans
    expect(grown.conversation_keys).toBeLessThanOrEqual(5);
  });
});
