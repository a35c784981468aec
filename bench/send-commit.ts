// The group commit alone: `sotalk_send_batch` called the way the server's SendBatcher calls it
// (src/db/send-commit.ts), against a database of its own, with no HTTP, crypto or event path in
// the way — what Postgres costs per message, and whether any check scans a whole table.
//
//   npm run bench:commit                                    # fresh database, no client_message_id
//   npm run bench:commit -- --client-message-ids --replies  # what a careful client sends
//   npm run bench:commit -- --prefill 200000 --analyze      # a grown, analysed database
import { randomBytes, randomUUID } from 'node:crypto';
import pg from 'pg';
import '../src/db/database.js'; // int8 parser, as the server
import { migrateUp } from '../src/db/migrations.js';
import type { NewMessage } from '../src/db/messages.js';
import { commitSendBatch } from '../src/db/send-commit.js';
import { newId } from '../src/crypto/ids.js';
import { postgresSeconds } from './lib/costs.js';
import { adminQuery } from './lib/target.js';
import { Latency, bool, fmt, machineInfo, now, num, parseArgs, round, type OptionSpec } from './lib/common.js';

const SPEC: Record<string, OptionSpec> = {
  flushes: { default: '2000', help: 'measured calls of sotalk_send_batch' },
  batch: { default: '16', help: 'messages per call (the server flushes what arrived in one turn)' },
  connections: { default: '4', help: 'calls in flight, one connection each (SEND_FLUSH_CONCURRENCY is 4)' },
  conversations: { default: '128', help: 'direct conversations the messages go to, round robin' },
  prefill: { default: '0', help: 'messages stored before the measured calls (batches of 200)' },
  analyze: { default: 'false', boolean: true, help: 'VACUUM ANALYZE after the prefill (default: the tables have no statistics, as on a fresh database)' },
  'client-message-ids': { default: 'false', boolean: true, help: 'a fresh client_message_id on every message' },
  replies: { default: 'false', boolean: true, help: 'every other message replies to the newest stored one of its conversation' },
  size: { default: '256', help: 'ciphertext bytes per message' },
  tokens: { default: '44', help: 'search tokens per message (44 ≈ 256 B of chat text; 0: not indexed)' },
};

const USAGE = `usage: npm run bench:commit -- [options]
Creates a database of its own on DATABASE_URL / BENCH_DATABASE_URL's server (default
postgresql://postgres@127.0.0.1:5432), migrates it, and calls sotalk_send_batch as the server does.
Prints messages/s, µs of wall time per message, call latency, WAL bytes per message and the
sequential scans per call of the tables the checks read, then ONE JSON line.
options:`;

const a = parseArgs(process.argv.slice(2), SPEC, USAGE);
const O = {
  flushes: num(a, 'flushes', 1, 10_000_000),
  batch: num(a, 'batch', 1, 10_000),
  connections: num(a, 'connections', 1, 64),
  conversations: num(a, 'conversations', 1, 100_000),
  prefill: num(a, 'prefill', 0, 100_000_000),
  analyze: bool(a, 'analyze'),
  clientMessageIds: bool(a, 'client-message-ids'),
  replies: bool(a, 'replies'),
  size: num(a, 'size', 1, 1 << 20),
  tokens: num(a, 'tokens', 0, 10_000),
};

const admin = process.env.BENCH_DATABASE_URL || process.env.DATABASE_URL || 'postgresql://postgres@127.0.0.1:5432/postgres';
const dbName = `sotalk_bench_commit_${randomBytes(5).toString('hex')}`;
const POLICY = { maxMessagesPerKey: 2 ** 24, activeFingerprint: 'fp', nowUnixSeconds: Math.floor(Date.now() / 1000) };
const CHECKED = ['messages', 'conversation_members', 'conversation_keys', 'conversations'];

async function seqScans(pool: pg.Pool): Promise<Record<string, number>> {
  // each connection's counts reach the shared statistics at most once a second: wait them out
  await new Promise((r) => setTimeout(r, 1100));
  const { rows } = await pool.query<{ relname: string; seq_scan: string }>('SELECT relname, seq_scan FROM pg_stat_user_tables WHERE relname = ANY ($1)', [CHECKED]);
  return Object.fromEntries(rows.map((r) => [r.relname, Number(r.seq_scan)]));
}

async function main(): Promise<void> {
  await adminQuery(admin, `CREATE DATABASE ${dbName}`);
  const url = new URL(admin);
  url.pathname = `/${dbName}`;
  const pool = new pg.Pool({ connectionString: url.toString(), max: O.connections });
  pool.on('error', () => {});
  try {
    await migrateUp(pool);
    const senders: string[] = [];
    const conversations: string[] = [];
    const users = Array.from({ length: 2 * O.conversations }, () => newId());
    await pool.query('INSERT INTO users (id, wallet) SELECT u, u::text FROM unnest($1::uuid[]) AS u', [users]);
    for (let i = 0; i < O.conversations; i++) {
      const [x, y] = [users[2 * i]!, users[2 * i + 1]!];
      const [low, high] = x < y ? [x, y] : [y, x];
      const id = newId();
      await pool.query(`INSERT INTO conversations (id, type, created_by, direct_low, direct_high) VALUES ($1, 'direct', $2, $3, $4)`, [id, x, low, high]);
      await pool.query(`INSERT INTO conversation_members (conversation_id, user_id, role) VALUES ($1, $2, 'owner'), ($1, $3, 'member')`, [id, x, y]);
      await pool.query(`INSERT INTO conversation_keys (conversation_id, version, master_key_fingerprint, created_unix_seconds) VALUES ($1, 1, 'fp', $2)`, [id, POLICY.nowUnixSeconds]);
      conversations.push(id);
      senders.push(x);
    }
    const tokens = Array.from({ length: O.tokens }, () => randomBytes(16));
    /** The newest stored message per conversation: what a reply may name (a message of the same flush is not stored yet). */
    const stored = new Map<string, string>();
    let next = 0;
    const message = (measured: boolean): NewMessage => {
      const k = next++ % O.conversations;
      const conversationId = conversations[k]!;
      const id = newId();
      const replyToId = measured && O.replies && next % 2 === 0 ? (stored.get(conversationId) ?? null) : null;
      return {
        id,
        conversationId,
        senderId: senders[k]!,
        ciphertext: randomBytes(O.size),
        nonce: randomBytes(12),
        tag: randomBytes(16),
        keyVersion: 1,
        keyFingerprint: 'fp',
        contentType: 'text',
        signature: null,
        replyToId,
        clientMessageId: measured && O.clientMessageIds ? randomUUID() : null,
        search: O.tokens > 0 ? { tokens, fingerprint: 'fp' } : null,
      };
    };

    if (O.prefill > 0) {
      const started = now();
      let left = O.prefill;
      await Promise.all(
        Array.from({ length: O.connections }, async () => {
          while (left > 0) {
            const n = Math.min(200, left);
            left -= n;
            const batch = Array.from({ length: n }, () => message(false));
            await commitSendBatch(pool, batch, POLICY);
            for (const m of batch) stored.set(m.conversationId, m.id);
          }
        }),
      );
      console.log(`prefilled ${fmt(O.prefill)} messages in ${((now() - started) / 1000).toFixed(1)} s`);
    }
    if (O.analyze) await pool.query('VACUUM ANALYZE');
    await pool.query('CHECKPOINT'); // full-page images of the measured calls start from a clean slate

    const scansBefore = await seqScans(pool);
    const walBefore = (await pool.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn;
    const pgBefore = postgresSeconds(dbName);
    const latency = new Latency();
    let started = 0;
    let rejected = 0;
    const t0 = now();
    await Promise.all(
      Array.from({ length: O.connections }, async () => {
        while (started < O.flushes) {
          started++;
          const batch = Array.from({ length: O.batch }, () => message(true));
          const t = now();
          const { verdicts } = await commitSendBatch(pool, batch, POLICY);
          latency.record(now() - t);
          verdicts.forEach((v, i) => (v.kind === 'inserted' ? stored.set(batch[i]!.conversationId, batch[i]!.id) : rejected++));
        }
      }),
    );
    const seconds = (now() - t0) / 1000;
    const pgAfter = postgresSeconds(dbName);
    const wal = Number((await pool.query<{ d: string }>('SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn) AS d', [walBefore])).rows[0]!.d);
    const scansAfter = await seqScans(pool);
    const messages = O.flushes * O.batch;
    const scansPerCall = Object.fromEntries(CHECKED.map((t) => [t, round(((scansAfter[t] ?? 0) - (scansBefore[t] ?? 0)) / O.flushes, 3)]));
    const result = {
      bench: 'send-commit',
      ...O,
      messages_per_s: round(messages / seconds, 1),
      // Postgres CPU: this database's backends and the server's own processes (WAL writer, checkpointer…), from /proc
      postgres_cpu_us_per_message: pgBefore && pgAfter ? round(((pgAfter.db - pgBefore.db) * 1e6) / messages, 1) : null,
      ...latency.summary('call_'),
      wal_bytes_per_message: Math.round(wal / messages),
      seq_scans_per_call: scansPerCall,
      rejected,
      machine: machineInfo(),
      at: new Date().toISOString(),
    };
    const setup = [
      `${O.flushes} calls × ${O.batch} messages, ${O.connections} connections`,
      O.prefill ? `${fmt(O.prefill)} stored before` : 'empty tables',
      O.analyze ? 'analysed' : 'no statistics',
      O.clientMessageIds ? 'client_message_ids' : null,
      O.replies ? 'replies' : null,
    ].filter(Boolean);
    console.log(`== send-commit (${setup.join(', ')})`);
    const cpu = result.postgres_cpu_us_per_message === null ? 'Postgres CPU n/a (not a local server)' : `Postgres CPU ${result.postgres_cpu_us_per_message} µs per message`;
    console.log(`  ${fmt(result.messages_per_s)} messages/s, ${cpu}`);
    console.log(`  call latency ${latency.text()}`);
    console.log(`  WAL ${fmt(result.wal_bytes_per_message)} bytes per message`);
    console.log(`  sequential scans per call: ${CHECKED.map((t) => `${t} ${scansPerCall[t]}`).join(', ')}`);
    if (rejected > 0) console.log(`  ${rejected} message(s) rejected (expected none)`);
    console.log(JSON.stringify(result));
  } finally {
    await pool.end();
    await adminQuery(admin, `DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch((err: Error) => console.error(`warning: could not drop ${dbName}: ${err.message}`));
  }
}

await main();
