import type { QueryToken } from '../keys/search-keys.js';
import type { MessageRow } from './messages.js';
import type { Queryable } from './transaction.js';

export interface SearchRow extends MessageRow {
  created_us: number;
}

/**
 * Live messages that have a token of every query word, newest first, keyset-paged on
 * (created_at, id), with their encryption metadata. Tokens are keyed per conversation (and master
 * key), so a message matches when its token array overlaps each word's tokens — one GIN index
 * condition per word, ANDed.
 */
export async function selectSearchPage(
  db: Queryable,
  tokens: QueryToken[],
  wordCount: number,
  before: { createdUs: number; id: string } | undefined,
  limit: number,
): Promise<SearchRow[]> {
  const perWord: Buffer[][] = Array.from({ length: wordCount }, () => []);
  for (const t of tokens) perWord[t.word]!.push(t.token);
  const conversations = [...new Set(tokens.map((t) => t.conversationId))];
  const params: unknown[] = [conversations, before?.createdUs ?? null, before?.id ?? null, limit];
  const overlaps = perWord.map((words) => {
    params.push(Buffer.concat(words));
    // each word's tokens travel as one binary bytea, split into a bytea[] server-side
    return `s.tokens && ARRAY(SELECT substring($${params.length}::bytea FROM 1 + 16 * g FOR 16) FROM generate_series(0, ${words.length - 1}) AS g)`;
  });
  const { rows } = await db.query<SearchRow>(
    `SELECT m.id, m.conversation_id, m.sender_id, m.seq, m.content, m.content_type, m.signature, m.reply_to_id,
            m.client_message_id, m.created_at, m.updated_at, m.edited_at, m.deleted_at,
            e.nonce, e.tag, e.key_version, k.created_unix_seconds, k.master_key_fingerprint,
            (extract(epoch FROM m.created_at) * 1000000)::bigint AS created_us
     FROM message_search_index s
     JOIN messages m ON m.id = s.message_id
     LEFT JOIN message_encryption_metadata e ON e.message_id = m.id
     LEFT JOIN conversation_keys k ON k.conversation_id = m.conversation_id AND k.version = e.key_version
     WHERE ${overlaps.join(' AND ')}
       AND s.conversation_id = ANY($1::uuid[])
       AND m.deleted_at IS NULL
       AND ($2::bigint IS NULL OR ((extract(epoch FROM m.created_at) * 1000000)::bigint, m.id) < ($2::bigint, $3::uuid))
     ORDER BY m.created_at DESC, m.id DESC
     LIMIT $4`,
    params,
  );
  return rows;
}

export async function memberConversationIds(db: Queryable, userId: string): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>('SELECT conversation_id AS id FROM conversation_members WHERE user_id = $1', [userId]);
  return rows.map((r) => r.id);
}
