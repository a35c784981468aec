import type { Queryable } from './transaction.js';

export interface MessageRow {
  id: string;
  conversation_id: string;
  sender_id: string;
  seq: number;
  content: Buffer | null;
  content_type: string;
  signature: string | null;
  reply_to_id: string | null;
  client_message_id: string | null;
  created_at: Date;
  updated_at: Date;
  edited_at: Date | null;
  deleted_at: Date | null;
  nonce: Buffer | null;
  tag: Buffer | null;
  key_version: number | null;
  created_unix_seconds: number | null;
  master_key_fingerprint: string | null;
}

/** Message columns with their encryption metadata and key version, fetched in the same query. */
const SELECT_WITH_METADATA = `
  SELECT m.id, m.conversation_id, m.sender_id, m.seq, m.content, m.content_type, m.signature, m.reply_to_id,
         m.client_message_id, m.created_at, m.updated_at, m.edited_at, m.deleted_at,
         e.nonce, e.tag, e.key_version, k.created_unix_seconds, k.master_key_fingerprint
  FROM messages m
  LEFT JOIN message_encryption_metadata e ON e.message_id = m.id
  LEFT JOIN conversation_keys k ON k.conversation_id = m.conversation_id AND k.version = e.key_version`;

export type PageCursor = { kind: 'latest' } | { kind: 'before'; seq: number } | { kind: 'after'; seq: number };

/** Up to `limit` messages of one conversation in the cursor's direction (not yet ordered ascending). */
export async function selectPage(db: Queryable, conversationId: string, cursor: PageCursor, limit: number): Promise<MessageRow[]> {
  const [where, order] =
    cursor.kind === 'after' ? ['m.seq > $2', 'ASC'] : cursor.kind === 'before' ? ['m.seq < $2', 'DESC'] : ['$2::bigint IS NULL', 'DESC'];
  const seq = cursor.kind === 'latest' ? null : cursor.seq;
  const { rows } = await db.query<MessageRow>(
    `${SELECT_WITH_METADATA} WHERE m.conversation_id = $1 AND ${where} ORDER BY m.seq ${order} LIMIT $3`,
    [conversationId, seq, limit],
  );
  return rows;
}

export async function selectMessagesBySeq(db: Queryable, pairs: { conversationId: string; seq: number }[]): Promise<MessageRow[]> {
  if (pairs.length === 0) return [];
  const { rows } = await db.query<MessageRow>(
    `${SELECT_WITH_METADATA} JOIN unnest($1::uuid[], $2::bigint[]) AS p(cid, seq) ON m.conversation_id = p.cid AND m.seq = p.seq`,
    [pairs.map((p) => p.conversationId), pairs.map((p) => p.seq)],
  );
  return rows;
}

export async function selectByClientMessageId(
  db: Queryable,
  conversationId: string,
  senderId: string,
  clientMessageId: string,
): Promise<MessageRow | undefined> {
  const { rows } = await db.query<MessageRow>(
    `${SELECT_WITH_METADATA} WHERE m.conversation_id = $1 AND m.sender_id = $2 AND m.client_message_id = $3`,
    [conversationId, senderId, clientMessageId],
  );
  return rows[0];
}

export interface MessageAccessRow {
  id: string;
  conversation_id: string;
  sender_id: string;
  deleted_at: Date | null;
  current_key_version: number;
  is_member: boolean;
}

/** Who sent a message and whether `userId` may see its conversation. */
export async function selectMessageAccess(db: Queryable, messageId: string, userId: string): Promise<MessageAccessRow | undefined> {
  const { rows } = await db.query<MessageAccessRow>(
    `SELECT m.id, m.conversation_id, m.sender_id, m.deleted_at, c.current_key_version,
            EXISTS (SELECT 1 FROM conversation_members cm WHERE cm.conversation_id = m.conversation_id AND cm.user_id = $2) AS is_member
     FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.id = $1`,
    [messageId, userId],
  );
  return rows[0];
}

export async function messageInConversation(db: Queryable, messageId: string, conversationId: string): Promise<boolean> {
  const { rowCount } = await db.query('SELECT 1 FROM messages WHERE id = $1 AND conversation_id = $2', [messageId, conversationId]);
  return rowCount === 1;
}

export interface NewMessage {
  id: string;
  conversationId: string;
  senderId: string;
  ciphertext: Buffer;
  nonce: Buffer;
  tag: Buffer;
  keyVersion: number;
  contentType: string;
  signature: string | null;
  replyToId: string | null;
  clientMessageId: string | null;
}

export interface InsertedMessage {
  id: string;
  seq: number;
  created_at: Date;
  updated_at: Date;
}

/**
 * Assigns the next seq (row lock on the conversation, so seqs are gap-free), inserts the message
 * and its metadata: one statement, one transaction. Undefined when the sender is not a member.
 */
export async function insertMessage(db: Queryable, m: NewMessage): Promise<InsertedMessage | undefined> {
  const { rows } = await db.query<InsertedMessage>(
    `WITH c AS (
       UPDATE conversations SET last_seq = last_seq + 1, last_activity_at = now(), updated_at = now()
       WHERE id = $1 AND EXISTS (SELECT 1 FROM conversation_members WHERE conversation_id = $1 AND user_id = $3)
       RETURNING last_seq
     ), m AS (
       INSERT INTO messages (id, conversation_id, sender_id, seq, content, content_type, signature, reply_to_id, client_message_id)
       SELECT $2, $1, $3, c.last_seq, $4, $5, $6, $7, $8 FROM c
       RETURNING id, seq, created_at, updated_at
     ), e AS (
       INSERT INTO message_encryption_metadata (message_id, nonce, tag, algorithm, key_version)
       SELECT id, $9, $10, 'AES-256-GCM', $11 FROM m
     )
     SELECT * FROM m`,
    [m.conversationId, m.id, m.senderId, m.ciphertext, m.contentType, m.signature, m.replyToId, m.clientMessageId, m.nonce, m.tag, m.keyVersion],
  );
  return rows[0];
}

/** Replaces a live message's ciphertext and metadata; undefined when it was deleted meanwhile. */
export async function updateMessageContent(
  db: Queryable,
  id: string,
  sealed: { ciphertext: Buffer; nonce: Buffer; tag: Buffer; keyVersion: number },
): Promise<MessageRow | undefined> {
  const { rows } = await db.query<{ id: string }>(
    `WITH m AS (
       UPDATE messages SET content = $2, edited_at = now(), updated_at = now()
       WHERE id = $1 AND deleted_at IS NULL RETURNING id
     ), e AS (
       INSERT INTO message_encryption_metadata (message_id, nonce, tag, algorithm, key_version)
       SELECT id, $3, $4, 'AES-256-GCM', $5 FROM m
       ON CONFLICT (message_id) DO UPDATE
         SET nonce = EXCLUDED.nonce, tag = EXCLUDED.tag, algorithm = EXCLUDED.algorithm,
             key_version = EXCLUDED.key_version, created_at = now()
     )
     SELECT id FROM m`,
    [id, sealed.ciphertext, sealed.nonce, sealed.tag, sealed.keyVersion],
  );
  if (rows.length === 0) return undefined;
  return selectMessageRow(db, id);
}

export async function selectMessageRow(db: Queryable, id: string): Promise<MessageRow | undefined> {
  const { rows } = await db.query<MessageRow>(`${SELECT_WITH_METADATA} WHERE m.id = $1`, [id]);
  return rows[0];
}

/** Destroys the ciphertext and its metadata; the row stays as a tombstone. */
export async function tombstoneMessage(db: Queryable, id: string): Promise<MessageRow | undefined> {
  await db.query(
    `WITH m AS (
       UPDATE messages SET content = NULL, deleted_at = COALESCE(deleted_at, now()), updated_at = now()
       WHERE id = $1 RETURNING id
     )
     DELETE FROM message_encryption_metadata WHERE message_id IN (SELECT id FROM m)`,
    [id],
  );
  return selectMessageRow(db, id);
}
