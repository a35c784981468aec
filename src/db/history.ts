import { SELECT_WITH_METADATA, historyVersion, type ConversationState, type MessageRow, type PageCursor } from './messages.js';
import type { Queryable } from './transaction.js';

type Row = MessageRow & { kind: 'member' | 'message'; v_last_seq: number; v_edit_version: number; user_id: string; delivered_seq: number; read_seq: number };

/**
 * A history page in one query and one snapshot: the conversation's history version and every
 * member's receipts, then up to `limit` messages in the cursor's direction (not yet ordered
 * ascending) with their encryption metadata — or nothing at all when `viewerId` is not a member,
 * so nobody decrypts a page for a non-member.
 */
export async function selectMemberPage(
  db: Queryable,
  conversationId: string,
  viewerId: string,
  cursor: PageCursor,
  limit: number,
): Promise<{ state: ConversationState; rows: MessageRow[] } | undefined> {
  const [where, order] =
    cursor.kind === 'after' ? ['m.seq > $2', 'ASC'] : cursor.kind === 'before' ? ['m.seq < $2', 'DESC'] : ['$2::bigint IS NULL', 'DESC'];
  const { rows } = await db.query<Row>(
    `WITH v AS (
       SELECT c.last_seq, c.edit_version FROM conversations c
       WHERE c.id = $1 AND EXISTS (SELECT 1 FROM conversation_members cm WHERE cm.conversation_id = $1 AND cm.user_id = $4)
     )
     SELECT 'member' AS kind, v.last_seq AS v_last_seq, v.edit_version AS v_edit_version, cm.user_id, cm.delivered_seq, cm.read_seq,
            NULL::uuid AS id, NULL::uuid AS conversation_id, NULL::uuid AS sender_id, NULL::bigint AS seq, NULL::bytea AS content,
            NULL::text AS content_type, NULL::text AS signature, NULL::uuid AS reply_to_id, NULL::text AS client_message_id,
            NULL::timestamptz AS created_at, NULL::timestamptz AS updated_at, NULL::timestamptz AS edited_at, NULL::timestamptz AS deleted_at,
            NULL::bytea AS nonce, NULL::bytea AS tag, NULL::int AS key_version, NULL::bigint AS created_unix_seconds, NULL::text AS master_key_fingerprint
     FROM v JOIN conversation_members cm ON cm.conversation_id = $1
     UNION ALL
     SELECT 'message', NULL, NULL, NULL, NULL, NULL, p.* FROM v, LATERAL (
       ${SELECT_WITH_METADATA}
       WHERE m.conversation_id = $1 AND ${where}
       ORDER BY m.seq ${order} LIMIT $3
     ) p`,
    [conversationId, cursor.kind === 'latest' ? null : cursor.seq, limit, viewerId],
  );
  if (rows.length === 0) return undefined;
  const members: ConversationState['members'] = [];
  const messages: MessageRow[] = [];
  let version: string | undefined;
  for (const r of rows) {
    if (r.kind === 'member') {
      version ??= historyVersion(r.v_last_seq, r.v_edit_version);
      members.push({ user_id: r.user_id, delivered_seq: r.delivered_seq, read_seq: r.read_seq });
    } else messages.push(r);
  }
  if (version === undefined) return undefined;
  messages.sort(order === 'ASC' ? (a, b) => a.seq - b.seq : (a, b) => b.seq - a.seq);
  return { state: { version, members }, rows: messages };
}
