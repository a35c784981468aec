// Bare-Postgres ceilings measured in the same run as the server numbers: what a plain `pg`
// client gets from the same database for the same rows / pages, with the same concurrency.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { v7 as uuidv7 } from 'uuid';
import { Errors, Latency, now, sleep } from './common.js';

export interface CeilingResult {
  /** Connections actually used (capped by what Postgres has free). */
  connections: number;
  ops: number;
  per_s: number;
  latency: Latency;
  errors: Errors;
  seconds: number;
}

/**
 * Inserts rows shaped like a send — messages + message_encryption_metadata, random bytea content
 * of `size` bytes, 12-byte nonce, 16-byte tag — in `batch`-row statements (unnest), each assigning
 * seqs by bumping conversations.last_seq (rows locked in id order, as the server's group commit
 * does). One autocommit statement per batch; `concurrency` connections; for `seconds`.
 * `ops` counts rows.
 */
export async function insertCeiling(
  pgUrl: string,
  conversations: { id: string; senderId: string }[],
  o: { seconds: number; concurrency: number; batch: number; size: number; searchTokens?: number },
): Promise<CeilingResult & { search_layout: string | null }> {
  const connections = await freeConnections(pgUrl, o.concurrency);
  const pool = new pg.Pool({ connectionString: pgUrl, max: connections });
  // The same rows the server writes: with search on, each message's blind-index tokens too, in
  // whichever layout the database has (one row per message, or one row per word before).
  const k = o.searchTokens ?? 0;
  const { rows: layoutRows } = await pool.query<{ index: string | null; tokens: string | null }>(
    `SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('message_search_index')) AS index,
            (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('message_search_tokens')) AS tokens`,
  );
  const layout = k === 0 ? null : layoutRows[0]?.index === 'r' ? 'per-message' : layoutRows[0]?.tokens === 'r' ? 'per-word' : null;
  const searchSql =
    layout === 'per-message'
      ? `, idx AS (INSERT INTO message_search_index (message_id, conversation_id, master_key_fingerprint, tokens, created_at)
           SELECT id, cid, 'bench', ($10::bytea[])[(n - 1) * ${k} + 1 : n * ${k}], now() FROM rows)`
      : layout === 'per-word'
        ? `, idx AS (INSERT INTO message_search_tokens (conversation_id, token, message_id)
             SELECT r.cid, t.tok, r.id FROM rows r, unnest(($10::bytea[])[(r.n - 1) * ${k} + 1 : r.n * ${k}]) AS t(tok))
           , st AS (INSERT INTO message_search_state (message_id, master_key_fingerprint) SELECT id, 'bench' FROM rows)`
        : '';
  const sql = `
    WITH counts AS (SELECT * FROM unnest($1::uuid[], $2::int[]) AS n(id, cnt)),
    locked AS (SELECT id, last_seq FROM conversations WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE),
    bumped AS (
      UPDATE conversations c SET last_seq = l.last_seq + n.cnt, last_activity_at = now(), updated_at = now()
      FROM locked l JOIN counts n ON n.id = l.id WHERE c.id = l.id),
    rows AS (
      SELECT r.id, r.cid, r.sender, l.last_seq + r.ord AS seq, r.content, r.nonce, r.tag, r.n
      FROM unnest($3::uuid[], $4::uuid[], $5::uuid[], $6::int[], $7::bytea[], $8::bytea[], $9::bytea[]) WITH ORDINALITY
             AS r(id, cid, sender, ord, content, nonce, tag, n)
      JOIN locked l ON l.id = r.cid),
    ins AS (INSERT INTO messages (id, conversation_id, sender_id, seq, content) SELECT id, cid, sender, seq, content FROM rows)${searchSql}
    INSERT INTO message_encryption_metadata (message_id, nonce, tag, key_version) SELECT id, nonce, tag, 1 FROM rows`;
  const latency = new Latency();
  const errors = new Errors();
  let rows = 0;
  let cursor = Math.floor(Math.random() * conversations.length);
  const random = randomBytes(1 << 20); // content is sliced from here: random, not compressible
  let offset = 0;
  const slice = (n: number) => {
    if (offset + n > random.length) offset = 0;
    const b = random.subarray(offset, offset + n);
    offset += n;
    return b;
  };
  const makeBatch = () => {
    const perConv = new Map<string, number>();
    const ids: string[] = [];
    const cids: string[] = [];
    const senders: string[] = [];
    const ords: number[] = [];
    const contents: Buffer[] = [];
    const nonces: Buffer[] = [];
    const tags: Buffer[] = [];
    for (let i = 0; i < o.batch; i++) {
      const c = conversations[cursor++ % conversations.length]!;
      const ord = (perConv.get(c.id) ?? 0) + 1;
      perConv.set(c.id, ord);
      ids.push(uuidv7());
      cids.push(c.id);
      senders.push(c.senderId);
      ords.push(ord);
      contents.push(slice(o.size));
      nonces.push(slice(12));
      tags.push(slice(16));
    }
    const params: unknown[] = [[...perConv.keys()], [...perConv.values()], ids, cids, senders, ords, contents, nonces, tags];
    if (layout) params.push(Array.from({ length: o.batch * k }, () => slice(16)));
    return params;
  };
  // Warm the connections (and the plan) before the clock starts.
  await Promise.all(Array.from({ length: connections }, () => pool.query('SELECT 1')));
  const started = now();
  const end = started + o.seconds * 1000;
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (now() < end) {
        const params = makeBatch();
        const t0 = now();
        try {
          await pool.query({ name: 'bench_insert_batch', text: sql, values: params });
          rows += o.batch;
          latency.record(now() - t0);
        } catch (err) {
          errors.add(`pg:${(err as { code?: string }).code ?? 'error'}`);
          if (errors.total > 100) throw new Error(`insert ceiling: too many errors (${(err as Error).message})`, { cause: err });
          await sleep(10);
        }
      }
    }),
  );
  const seconds = (now() - started) / 1000;
  await pool.end();
  return { connections, ops: rows, per_s: rows / seconds, latency, errors, seconds, search_layout: layout };
}

/**
 * Reads history pages with the bare query of the brief (messages ⋈ metadata, 100 rows):
 * `pick()` says which conversation and which before_seq (null = the latest page).
 */
export async function readCeiling(
  pgUrl: string,
  pick: () => { conversationId: string; beforeSeq: number | null },
  o: { seconds: number; concurrency: number; limit: number },
): Promise<CeilingResult> {
  // `concurrency` readers at once, as many on their own connection as Postgres has room for.
  const connections = await freeConnections(pgUrl, o.concurrency);
  const pool = new pg.Pool({ connectionString: pgUrl, max: connections });
  const before = `SELECT m.*, e.* FROM messages m JOIN message_encryption_metadata e ON e.message_id = m.id
    WHERE m.conversation_id = $1 AND m.seq < $2 ORDER BY m.seq DESC LIMIT ${o.limit}`;
  const latest = `SELECT m.*, e.* FROM messages m JOIN message_encryption_metadata e ON e.message_id = m.id
    WHERE m.conversation_id = $1 ORDER BY m.seq DESC LIMIT ${o.limit}`;
  const latency = new Latency();
  const errors = new Errors();
  let pages = 0;
  const run = async (measure: boolean, until: number) => {
    await Promise.all(
      Array.from({ length: o.concurrency }, async () => {
        while (now() < until) {
          const p = pick();
          const t0 = now();
          try {
            const r =
              p.beforeSeq === null
                ? await pool.query({ name: 'bench_latest', text: latest, values: [p.conversationId] })
                : await pool.query({ name: 'bench_before', text: before, values: [p.conversationId, p.beforeSeq] });
            if (!measure) continue;
            if (r.rowCount === 0) errors.add('empty_page');
            pages++;
            latency.record(now() - t0);
          } catch (err) {
            errors.add(`pg:${(err as { code?: string }).code ?? 'error'}`);
            if (errors.total > 100) throw new Error(`read ceiling: too many errors (${(err as Error).message})`, { cause: err });
          }
        }
      }),
    );
  };
  await run(false, now() + Math.min(1000, o.seconds * 200)); // warm-up: connections, plans, cache
  const started = now();
  await run(true, started + o.seconds * 1000);
  const seconds = (now() - started) / 1000;
  await pool.end();
  return { connections, ops: pages, per_s: pages / seconds, latency, errors, seconds };
}

/** `wanted`, or fewer when Postgres has fewer free connections (minus a margin of 5 for others). */
async function freeConnections(pgUrl: string, wanted: number): Promise<number> {
  const c = new pg.Client({ connectionString: pgUrl });
  await c.connect();
  try {
    const { rows } = await c.query<{ free: number }>(
      `SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int - (SELECT count(*) FROM pg_stat_activity)::int AS free`,
    );
    const free = Math.max(1, (rows[0]?.free ?? wanted) - 5);
    if (free < wanted) console.log(`  note: Postgres has ${free + 5} free connections: the bare-pg client uses ${free} for ${wanted} concurrent queries`);
    return Math.min(wanted, free);
  } finally {
    await c.end();
  }
}
