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

/** Columns of a message with its encryption metadata and key version (aliases m, e, k). */
export const STREAM_COLUMNS = `
  m.id, m.conversation_id, m.sender_id, m.seq, m.content, m.content_type, m.signature, m.reply_to_id,
  m.client_message_id, m.created_at, m.updated_at, m.edited_at, m.deleted_at,
  e.nonce, e.tag, e.key_version, k.created_unix_seconds, k.master_key_fingerprint`;

/** Message columns with their encryption metadata and key version, fetched in the same query. */
export const SELECT_WITH_METADATA = `
  SELECT ${STREAM_COLUMNS}
  FROM messages m
  LEFT JOIN message_encryption_metadata e ON e.message_id = m.id
  LEFT JOIN conversation_keys k ON k.conversation_id = m.conversation_id AND k.version = e.key_version`;

export type PageCursor = { kind: 'latest' } | { kind: 'before'; seq: number } | { kind: 'after'; seq: number };

/** A conversation's history version: changes with every send (last_seq), edit and delete. */
export type HistoryVersion = string;
export const historyVersion = (lastSeq: number, editVersion: number): HistoryVersion => `${lastSeq}:${editVersion}`;

export interface ConversationState {
  version: HistoryVersion;
  members: { user_id: string; delivered_seq: number; read_seq: number }[];
}

/** The history version and every member's receipts: what a cached page needs to be served. */
export async function selectConversationState(db: Queryable, conversationId: string): Promise<ConversationState | undefined> {
  const { rows } = await db.query<{ last_seq: number; edit_version: number; user_id: string; delivered_seq: number; read_seq: number }>(
    `SELECT c.last_seq, c.edit_version, m.user_id, m.delivered_seq, m.read_seq
     FROM conversations c JOIN conversation_members m ON m.conversation_id = c.id WHERE c.id = $1`,
    [conversationId],
  );
  if (rows.length === 0) return undefined;
  return { version: historyVersion(rows[0]!.last_seq, rows[0]!.edit_version), members: rows };
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

export interface NewMessage {
  id: string;
  conversationId: string;
  senderId: string;
  ciphertext: Buffer;
  nonce: Buffer;
  tag: Buffer;
  keyVersion: number;
  /** Master key of that version (an explicit rotation under the same key makes it stale). */
  keyFingerprint: string;
  contentType: string;
  signature: string | null;
  replyToId: string | null;
  clientMessageId: string | null;
  /** Blind-index tokens of the content (null when search is off) and the master key they are under. */
  search: { tokens: Buffer[]; fingerprint: string } | null;
}

/**
 * Replaces a live message's ciphertext, metadata and search tokens; undefined when it was
 * deleted meanwhile. `keyMessageCount`: encryptions now counted under the key version used
 * (an edit is one: it may fill the version).
 */
export async function updateMessageContent(
  db: Queryable,
  id: string,
  sealed: { ciphertext: Buffer; nonce: Buffer; tag: Buffer; keyVersion: number },
  search: { tokens: Buffer[]; fingerprint: string } | null,
): Promise<{ row: MessageRow; keyMessageCount: number } | undefined> {
  const { rows } = await db.query<{ id: string; key_message_count: number | null }>(
    `WITH m AS (
       UPDATE messages SET content = $2, edited_at = now(), updated_at = now()
       WHERE id = $1 AND deleted_at IS NULL RETURNING id, conversation_id, created_at
     ), v AS (
       UPDATE conversations SET edit_version = edit_version + 1 WHERE id IN (SELECT conversation_id FROM m)
     ), counted AS (
       UPDATE conversation_keys SET message_count = message_count + 1
       WHERE conversation_id IN (SELECT conversation_id FROM m) AND version = $5
       RETURNING message_count
     ), e AS (
       INSERT INTO message_encryption_metadata (message_id, nonce, tag, algorithm, key_version)
       SELECT id, $3, $4, 'AES-256-GCM', $5 FROM m
       ON CONFLICT (message_id) DO UPDATE
         SET nonce = EXCLUDED.nonce, tag = EXCLUDED.tag, algorithm = EXCLUDED.algorithm,
             key_version = EXCLUDED.key_version, created_at = now()
     ), indexed AS (
       INSERT INTO message_search_index (message_id, conversation_id, master_key_fingerprint, tokens, created_at)
       SELECT id, conversation_id, $7, $6::bytea[], created_at FROM m WHERE $7::text IS NOT NULL
       ON CONFLICT (message_id) DO UPDATE
         SET tokens = EXCLUDED.tokens, master_key_fingerprint = EXCLUDED.master_key_fingerprint, conversation_id = EXCLUDED.conversation_id
     ), unindexed AS (
       -- search off: the message is no longer indexed at all, so a later reindex picks it up
       DELETE FROM message_search_index WHERE $7::text IS NULL AND message_id IN (SELECT id FROM m)
     )
     SELECT id, (SELECT message_count FROM counted) AS key_message_count FROM m`,
    [id, sealed.ciphertext, sealed.nonce, sealed.tag, sealed.keyVersion, search?.tokens ?? [], search?.fingerprint ?? null],
  );
  if (rows.length === 0) return undefined;
  const row = await selectMessageRow(db, id);
  return row && { row, keyMessageCount: Number(rows[0]!.key_message_count ?? 0) };
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
       WHERE id = $1 RETURNING id, conversation_id
     ), v AS (
       UPDATE conversations SET edit_version = edit_version + 1 WHERE id IN (SELECT conversation_id FROM m)
     ), unindexed AS (
       DELETE FROM message_search_index WHERE message_id IN (SELECT id FROM m)
     )
     DELETE FROM message_encryption_metadata WHERE message_id IN (SELECT id FROM m)`,
    [id],
  );
  return selectMessageRow(db, id);
}

/**
 * Locks a message and, first, its conversation — the order sends lock in (conversation, then
 * message rows, then key rows), so edits, deletes and sends never deadlock. Later statements of
 * the transaction see every write committed before. NO KEY UPDATE leaves replies to it free.
 */
export async function lockMessage(db: Queryable, id: string): Promise<void> {
  await db.query(
    `SELECT c.id FROM conversations c WHERE c.id = (SELECT conversation_id FROM messages WHERE id = $1) FOR UPDATE`,
    [id],
  );
  await db.query('SELECT id FROM messages WHERE id = $1 FOR NO KEY UPDATE', [id]);
}

export const STREAM_FROM = `
  FROM messages m
  JOIN message_encryption_metadata e ON e.message_id = m.id
  LEFT JOIN conversation_keys k ON k.conversation_id = m.conversation_id AND k.version = e.key_version`;

export interface Reencrypted {
  id: string;
  oldNonce: Buffer;
  ciphertext: Buffer;
  nonce: Buffer;
  tag: Buffer;
  keyVersion: number;
}

/**
 * Swaps in re-encrypted ciphertexts, each only if the message still has the ciphertext that was
 * decrypted (same nonce): an edit or delete that committed meanwhile wins. Message rows are locked
 * first, in id order — the order edits and deletes lock them — so the two never deadlock.
 * Returns the ids replaced.
 */
export async function replaceCiphertexts(db: Queryable, items: Reencrypted[]): Promise<string[]> {
  if (items.length === 0) return [];
  const ids = items.map((i) => i.id);
  await db.query('SELECT id FROM messages WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE', [ids]);
  const { rows } = await db.query<{ id: string }>(
    `WITH v AS (
       SELECT * FROM unnest($1::uuid[], $2::bytea[], $3::bytea[], $4::bytea[], $5::bytea[], $6::int[])
         AS v(id, old_nonce, content, nonce, tag, key_version)
     ), meta AS (
       UPDATE message_encryption_metadata e
       SET nonce = v.nonce, tag = v.tag, key_version = v.key_version, created_at = now()
       FROM v WHERE e.message_id = v.id AND e.nonce = v.old_nonce
       RETURNING e.message_id
     ), msg AS (
       UPDATE messages m SET content = v.content FROM v, meta WHERE m.id = v.id AND meta.message_id = v.id
       RETURNING m.id, m.conversation_id, v.key_version
     ), counted AS (
       -- re-encryptions are encryptions under the key too: they count toward its retirement
       UPDATE conversation_keys k SET message_count = k.message_count + c.n
       FROM (SELECT conversation_id, key_version, count(*) AS n FROM msg GROUP BY 1, 2) c
       WHERE k.conversation_id = c.conversation_id AND k.version = c.key_version
     )
     SELECT id FROM msg`,
    [
      ids,
      items.map((i) => i.oldNonce),
      items.map((i) => i.ciphertext),
      items.map((i) => i.nonce),
      items.map((i) => i.tag),
      items.map((i) => i.keyVersion),
    ],
  );
  return rows.map((r) => r.id);
}

export interface SearchIndexEntry {
  messageId: string;
  conversationId: string;
  tokens: Buffer[];
  fingerprint: string;
}

/** Replaces the blind-index row of messages (reindex, master-key rotation): one statement. */
export async function replaceSearchTokens(db: Queryable, entries: SearchIndexEntry[]): Promise<void> {
  if (entries.length === 0) return;
  // tokens of all entries in one binary bytea (16 bytes each), split server-side: no hex arrays
  const blob = Buffer.concat(entries.flatMap((e) => e.tokens));
  const counts = entries.map((e) => e.tokens.length);
  const offsets: number[] = [];
  let at = 0;
  for (const n of counts) {
    offsets.push(at);
    at += n * 16;
  }
  await db.query(
    `INSERT INTO message_search_index (message_id, conversation_id, master_key_fingerprint, tokens, created_at)
     SELECT e.id, e.cid, e.fp, ARRAY(SELECT substring($6::bytea FROM e.off + 1 + 16 * g FOR 16) FROM generate_series(0, e.n - 1) AS g), m.created_at
     FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::int[]) AS e(id, cid, fp, off, n) JOIN messages m ON m.id = e.id
     ON CONFLICT (message_id) DO UPDATE
       SET tokens = EXCLUDED.tokens, master_key_fingerprint = EXCLUDED.master_key_fingerprint, conversation_id = EXCLUDED.conversation_id`,
    [entries.map((e) => e.messageId), entries.map((e) => e.conversationId), entries.map((e) => e.fingerprint), offsets, counts, blob],
  );
}

/** Stored tokens per message (for verify). */
export async function selectSearchTokens(db: Queryable, messageIds: string[]): Promise<Map<string, { tokens: Set<string>; fingerprint: string | null }>> {
  const { rows } = await db.query<{ id: string; fingerprint: string | null; tokens: Buffer[] | null }>(
    `SELECT ids.id, s.master_key_fingerprint AS fingerprint, s.tokens
     FROM unnest($1::uuid[]) AS ids(id)
     LEFT JOIN message_search_index s ON s.message_id = ids.id`,
    [messageIds],
  );
  const out = new Map<string, { tokens: Set<string>; fingerprint: string | null }>();
  for (const r of rows) out.set(r.id, { tokens: new Set((r.tokens ?? []).map((t) => t.toString('hex'))), fingerprint: r.fingerprint });
  return out;
}
