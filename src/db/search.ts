import type { QueryToken } from '../keys/search-keys.js';
import type { MessageRow } from './messages.js';
import type { Queryable } from './transaction.js';

export interface SearchRow extends MessageRow {
  created_us: number;
}

/**
 * Live messages that have a token for every query word (a message matches when the number of
 * distinct words it has tokens for equals the number of words), newest first, keyset-paged on
 * (created_at, id), with their encryption metadata.
 */
export async function selectSearchPage(
  db: Queryable,
  tokens: QueryToken[],
  wordCount: number,
  before: { createdUs: number; id: string } | undefined,
  limit: number,
): Promise<SearchRow[]> {
  const { rows } = await db.query<SearchRow>(
    `WITH q AS (
       SELECT * FROM unnest($1::uuid[], $2::bytea[], $3::int[]) AS q(conversation_id, token, word)
     ), hits AS (
       SELECT t.message_id FROM message_search_tokens t
       JOIN q ON t.conversation_id = q.conversation_id AND t.token = q.token
       GROUP BY t.message_id HAVING count(DISTINCT q.word) = $4
     )
     SELECT m.id, m.conversation_id, m.sender_id, m.seq, m.content, m.content_type, m.signature, m.reply_to_id,
            m.client_message_id, m.created_at, m.updated_at, m.edited_at, m.deleted_at,
            e.nonce, e.tag, e.key_version, k.created_unix_seconds, k.master_key_fingerprint,
            (extract(epoch FROM m.created_at) * 1000000)::bigint AS created_us
     FROM hits h
     JOIN messages m ON m.id = h.message_id
     LEFT JOIN message_encryption_metadata e ON e.message_id = m.id
     LEFT JOIN conversation_keys k ON k.conversation_id = m.conversation_id AND k.version = e.key_version
     WHERE m.deleted_at IS NULL
       AND ($5::bigint IS NULL OR ((extract(epoch FROM m.created_at) * 1000000)::bigint, m.id) < ($5::bigint, $6::uuid))
     ORDER BY m.created_at DESC, m.id DESC
     LIMIT $7`,
    [
      tokens.map((t) => t.conversationId),
      tokens.map((t) => t.token),
      tokens.map((t) => t.word),
      wordCount,
      before?.createdUs ?? null,
      before?.id ?? null,
      limit,
    ],
  );
  return rows;
}

export async function memberConversationIds(db: Queryable, userId: string): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>('SELECT conversation_id AS id FROM conversation_members WHERE user_id = $1', [userId]);
  return rows.map((r) => r.id);
}
