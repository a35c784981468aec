import type { QueryToken } from '../keys/search-keys.js';
import { STREAM_COLUMNS, type MessageRow } from './messages.js';
import type { Queryable } from './transaction.js';

export interface SearchRow extends MessageRow {
  created_us: number;
}

/** Newest index entries a search looks through first (finds a page of common words). */
const RECENT_WINDOW = 2000;
/** Matches a search collects through the GIN index before it walks recent messages instead. */
const PROBE_LIMIT = 4000;

const PAGE_COLUMNS = `${STREAM_COLUMNS}, (extract(epoch FROM h.created_at) * 1000000)::bigint AS created_us`;

const PAGE_JOINS = `JOIN messages m ON m.id = h.message_id
  LEFT JOIN message_encryption_metadata e ON e.message_id = m.id
  LEFT JOIN conversation_keys k ON k.conversation_id = m.conversation_id AND k.version = e.key_version
  WHERE m.deleted_at IS NULL
  ORDER BY h.created_at DESC, h.message_id DESC`;

/**
 * Live messages that have a token of every query word, newest first, keyset-paged on
 * (created_at, id), with their encryption metadata. Tokens are keyed per conversation (and master
 * key), so a message matches when its token array overlaps each word's tokens. Bounded plans,
 * cheapest first: the newest RECENT_WINDOW index entries (a page of common words is there); else
 * the GIN index collects the matches (at most PROBE_LIMIT) and the newest are kept — right for
 * rare words; else the words are common but not recent: walk the recency index until a page is
 * found.
 */
export async function selectSearchPage(
  db: Queryable,
  tokens: QueryToken[],
  wordCount: number,
  before: { createdUs: number; id: string } | undefined,
  limit: number,
  probeLimit = PROBE_LIMIT,
  recentWindow = RECENT_WINDOW,
): Promise<SearchRow[]> {
  const base: unknown[] = [[...new Set(tokens.map((t) => t.conversationId))], before?.createdUs ?? null, before?.id ?? null, limit];
  const cursor = (alias: string) =>
    `($2::bigint IS NULL OR (${alias}.created_at, ${alias}.message_id) < ('epoch'::timestamptz + $2::bigint * interval '1 microsecond', $3::uuid))`;

  // Row by row (window, walk), a message is checked against its own conversation's tokens only:
  // its words × one token each, not words × every conversation searched. The tokenizer emits each
  // (master key, conversation) pair's word tokens together.
  const pairs = tokens.length / wordCount;
  const pairCids: string[] = [];
  const pairWords: Buffer[][] = Array.from({ length: wordCount }, () => []);
  for (let j = 0; j < pairs; j++) {
    pairCids.push(tokens[j * wordCount]!.conversationId);
    for (let w = 0; w < wordCount; w++) pairWords[w]!.push(tokens[j * wordCount + w]!.token);
  }
  const rowParams = [...base, pairCids, ...pairWords.map((list) => Buffer.concat(list))];
  const matches = `EXISTS (SELECT 1 FROM unnest($5::uuid[]) WITH ORDINALITY AS q(cid, i) WHERE q.cid = r.conversation_id AND ${pairWords
    .map((_, w) => `substring($${6 + w}::bytea FROM (16 * (q.i - 1) + 1)::int FOR 16) = ANY(r.tokens)`)
    .join(' AND ')})`;

  const recent = await db.query<SearchRow>(
    `SELECT ${PAGE_COLUMNS} FROM (
       SELECT r.message_id, r.created_at FROM (
         SELECT s.message_id, s.created_at, s.conversation_id, s.tokens FROM message_search_index s
         WHERE ${cursor('s')} ORDER BY s.created_at DESC, s.message_id DESC LIMIT ${recentWindow}
       ) r
       WHERE r.conversation_id = ANY($1::uuid[]) AND ${matches}
       ORDER BY r.created_at DESC, r.message_id DESC
       LIMIT $4
     ) h ${PAGE_JOINS}`,
    rowParams,
  );
  if (recent.rows.length >= limit) return recent.rows;

  // Through the GIN index: each word's tokens (all conversations, all keys) in one binary bytea,
  // split into a bytea[] server-side.
  const perWord: Buffer[][] = Array.from({ length: wordCount }, () => []);
  for (const t of tokens) perWord[t.word]!.push(t.token);
  const probeParams = [...base, ...perWord.map((list) => Buffer.concat(list))];
  const overlaps = perWord
    .map((list, w) => `s.tokens && ARRAY(SELECT substring($${5 + w}::bytea FROM 1 + 16 * g FOR 16) FROM generate_series(0, ${list.length - 1}) AS g)`)
    .join(' AND ');
  const probe = await db.query<SearchRow & { hits: number }>(
    `WITH hits AS MATERIALIZED (
       SELECT s.message_id, s.created_at FROM message_search_index s
       WHERE ${overlaps} AND s.conversation_id = ANY($1::uuid[]) AND ${cursor('s')}
       LIMIT ${probeLimit + 1}
     ), h AS (SELECT * FROM hits ORDER BY created_at DESC, message_id DESC LIMIT $4)
     SELECT ${PAGE_COLUMNS}, (SELECT count(*) FROM hits)::int AS hits FROM h ${PAGE_JOINS}`,
    probeParams,
  );
  if (probe.rows.length === 0 || probe.rows[0]!.hits <= probeLimit) return probe.rows;

  // Common but not recent: walk the recency index (the row-by-row check cannot use the GIN index).
  const { rows } = await db.query<SearchRow>(
    `SELECT ${PAGE_COLUMNS} FROM (
       SELECT r.message_id, r.created_at FROM message_search_index r
       WHERE r.conversation_id = ANY($1::uuid[]) AND ${matches} AND ${cursor('r')}
       ORDER BY r.created_at DESC, r.message_id DESC
       LIMIT $4
     ) h ${PAGE_JOINS}`,
    rowParams,
  );
  return rows;
}

export async function memberConversationIds(db: Queryable, userId: string): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>('SELECT conversation_id AS id FROM conversation_members WHERE user_id = $1', [userId]);
  return rows.map((r) => r.id);
}
