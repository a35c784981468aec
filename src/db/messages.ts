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

/** A conversation's history version: changes with every send (last_seq), edit and delete. */
export type HistoryVersion = string;
const historyVersion = (lastSeq: number, editVersion: number): HistoryVersion => `${lastSeq}:${editVersion}`;

/**
 * Up to `limit` messages of one conversation in the cursor's direction (not yet ordered
 * ascending), with the history version read in the same statement (same snapshot).
 */
export async function selectPage(
  db: Queryable,
  conversationId: string,
  cursor: PageCursor,
  limit: number,
): Promise<{ rows: MessageRow[]; version: HistoryVersion | undefined }> {
  const [where, order] =
    cursor.kind === 'after' ? ['m.seq > $2', 'ASC'] : cursor.kind === 'before' ? ['m.seq < $2', 'DESC'] : ['$2::bigint IS NULL', 'DESC'];
  const seq = cursor.kind === 'latest' ? null : cursor.seq;
  const { rows } = await db.query<MessageRow & { v_last_seq: number; v_edit_version: number }>(
    `SELECT v.last_seq AS v_last_seq, v.edit_version AS v_edit_version, p.*
     FROM (SELECT last_seq, edit_version FROM conversations WHERE id = $1) v
     LEFT JOIN LATERAL (${SELECT_WITH_METADATA} WHERE m.conversation_id = $1 AND ${where} ORDER BY m.seq ${order} LIMIT $3) p ON true
     ORDER BY p.seq ${order}`,
    [conversationId, seq, limit],
  );
  const first = rows[0];
  if (!first) return { rows: [], version: undefined };
  return { rows: first.id === null ? [] : rows, version: historyVersion(first.v_last_seq, first.v_edit_version) };
}

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
 * deleted meanwhile.
 */
export async function updateMessageContent(
  db: Queryable,
  id: string,
  sealed: { ciphertext: Buffer; nonce: Buffer; tag: Buffer; keyVersion: number },
  search: { tokens: Buffer[]; fingerprint: string } | null,
): Promise<MessageRow | undefined> {
  const { rows } = await db.query<{ id: string }>(
    `WITH m AS (
       UPDATE messages SET content = $2, edited_at = now(), updated_at = now()
       WHERE id = $1 AND deleted_at IS NULL RETURNING id, conversation_id
     ), v AS (
       UPDATE conversations SET edit_version = edit_version + 1 WHERE id IN (SELECT conversation_id FROM m)
     ), counted AS (
       UPDATE conversation_keys SET message_count = message_count + 1
       WHERE conversation_id IN (SELECT conversation_id FROM m) AND version = $5
     ), e AS (
       INSERT INTO message_encryption_metadata (message_id, nonce, tag, algorithm, key_version)
       SELECT id, $3, $4, 'AES-256-GCM', $5 FROM m
       ON CONFLICT (message_id) DO UPDATE
         SET nonce = EXCLUDED.nonce, tag = EXCLUDED.tag, algorithm = EXCLUDED.algorithm,
             key_version = EXCLUDED.key_version, created_at = now()
     ), old_tokens AS (
       -- only tokens the new text lacks: rows deleted and re-inserted in one statement would be lost
       DELETE FROM message_search_tokens WHERE message_id IN (SELECT id FROM m) AND token <> ALL($6::bytea[])
     ), new_tokens AS (
       INSERT INTO message_search_tokens (conversation_id, token, message_id)
       SELECT m.conversation_id, t.token, m.id FROM m, unnest($6::bytea[]) AS t(token)
       ON CONFLICT (conversation_id, token, message_id) DO NOTHING
     ), search_state AS (
       INSERT INTO message_search_state (message_id, master_key_fingerprint)
       SELECT id, $7 FROM m WHERE $7::text IS NOT NULL
       ON CONFLICT (message_id) DO UPDATE SET master_key_fingerprint = EXCLUDED.master_key_fingerprint
     ), unindexed AS (
       -- search off: the message is no longer indexed at all, so a later reindex picks it up
       DELETE FROM message_search_state WHERE $7::text IS NULL AND message_id IN (SELECT id FROM m)
     )
     SELECT id FROM m`,
    [id, sealed.ciphertext, sealed.nonce, sealed.tag, sealed.keyVersion, search?.tokens ?? [], search?.fingerprint ?? null],
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
       WHERE id = $1 RETURNING id, conversation_id
     ), v AS (
       UPDATE conversations SET edit_version = edit_version + 1 WHERE id IN (SELECT conversation_id FROM m)
     ), tokens AS (
       DELETE FROM message_search_tokens WHERE message_id IN (SELECT id FROM m)
     ), search_state AS (
       DELETE FROM message_search_state WHERE message_id IN (SELECT id FROM m)
     )
     DELETE FROM message_encryption_metadata WHERE message_id IN (SELECT id FROM m)`,
    [id],
  );
  return selectMessageRow(db, id);
}

export interface LockedConversation {
  id: string;
  last_seq: number;
  current_key_version: number;
}

/**
 * First statement of a group commit: locks the batch's conversations, in id order so that
 * concurrent flushes cannot deadlock. Once it returns, every earlier write to them is committed.
 */
export async function lockConversations(db: Queryable, conversationIds: string[]): Promise<LockedConversation[]> {
  const { rows } = await db.query<LockedConversation>(
    // No joins here: a row re-read after waiting for its lock would not find rows committed meanwhile.
    'SELECT id, last_seq, current_key_version FROM conversations WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE',
    [conversationIds],
  );
  return rows;
}

export interface BatchCheckRow {
  kind: 'member' | 'duplicate' | 'reply' | 'key';
  conversation_id: string;
  /** user id, or for `key` the master-key fingerprint of the current version */
  user_id: string | null;
  /** client_message_id, or for `key` the origin of the current version */
  client_message_id: string | null;
  message_id: string | null;
}

/**
 * Second statement of a group commit (a fresh snapshot, taken after the locks): which senders are
 * members, which client_message_ids exist already, which reply targets exist where.
 */
export async function checkBatch(
  db: Queryable,
  senders: { conversationId: string; senderId: string }[],
  clientIds: { conversationId: string; senderId: string; clientMessageId: string }[],
  replyIds: string[],
  currentKeys: { conversationId: string; version: number }[],
): Promise<BatchCheckRow[]> {
  const { rows } = await db.query<BatchCheckRow>(
    `SELECT 'member' AS kind, cm.conversation_id, cm.user_id::text AS user_id, NULL::text AS client_message_id, NULL::uuid AS message_id
       FROM conversation_members cm JOIN unnest($1::uuid[], $2::uuid[]) AS p(c, u) ON cm.conversation_id = p.c AND cm.user_id = p.u
     UNION ALL
     SELECT 'duplicate', m.conversation_id, m.sender_id::text, m.client_message_id, m.id
       FROM messages m JOIN unnest($3::uuid[], $4::uuid[], $5::text[]) AS q(c, u, k)
         ON m.conversation_id = q.c AND m.sender_id = q.u AND m.client_message_id = q.k
     UNION ALL
     SELECT 'reply', m.conversation_id, NULL, NULL, m.id FROM messages m WHERE m.id = ANY($6::uuid[])
     UNION ALL
     SELECT 'key', k.conversation_id, k.master_key_fingerprint, k.origin, NULL
       FROM conversation_keys k JOIN unnest($7::uuid[], $8::int[]) AS c(id, version) ON k.conversation_id = c.id AND k.version = c.version`,
    [
      senders.map((s) => s.conversationId),
      senders.map((s) => s.senderId),
      clientIds.map((c) => c.conversationId),
      clientIds.map((c) => c.senderId),
      clientIds.map((c) => c.clientMessageId),
      replyIds,
      currentKeys.map((k) => k.conversationId),
      currentKeys.map((k) => k.version),
    ],
  );
  return rows;
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

export interface BatchMessage extends NewMessage {
  seq: number;
}

export interface BatchInsertResult {
  times: Map<string, { created_at: Date; updated_at: Date }>;
  /** Messages now counted under each key version the batch used. */
  keyUse: { conversation_id: string; version: number; message_count: number }[];
}

/**
 * Second statement of a group commit: new last_seq per conversation, all messages, all
 * metadata, and the message count of each key version used.
 */
export async function insertMessageBatch(db: Queryable, lastSeqs: Map<string, number>, messages: BatchMessage[]): Promise<BatchInsertResult> {
  const tokenRows = messages.flatMap((m) => (m.search ? m.search.tokens.map((token) => ({ cid: m.conversationId, token, id: m.id })) : []));
  const indexed = messages.filter((m) => m.search);
  const use = new Map<string, { cid: string; version: number; n: number }>();
  for (const m of messages) {
    const k = `${m.conversationId}:${m.keyVersion}`;
    const entry = use.get(k);
    if (entry) entry.n++;
    else use.set(k, { cid: m.conversationId, version: m.keyVersion, n: 1 });
  }
  const { rows } = await db.query<{ id: string | null; created_at: Date; updated_at: Date; conversation_id: string; version: number; message_count: number }>(
    `WITH bumped AS (
       UPDATE conversations c SET last_seq = v.last_seq, last_activity_at = now(), updated_at = now()
       FROM unnest($1::uuid[], $2::bigint[]) AS v(id, last_seq) WHERE c.id = v.id
     ), inserted AS (
       INSERT INTO messages (id, conversation_id, sender_id, seq, content, content_type, signature, reply_to_id, client_message_id)
       SELECT * FROM unnest($3::uuid[], $4::uuid[], $5::uuid[], $6::bigint[], $7::bytea[], $8::text[], $9::text[], $10::uuid[], $11::text[])
       RETURNING id, created_at, updated_at
     ), metadata AS (
       INSERT INTO message_encryption_metadata (message_id, nonce, tag, key_version)
       SELECT * FROM unnest($3::uuid[], $12::bytea[], $13::bytea[], $14::int[])
     ), tokens AS (
       INSERT INTO message_search_tokens (conversation_id, token, message_id)
       SELECT * FROM unnest($18::uuid[], $19::bytea[], $20::uuid[]) ON CONFLICT DO NOTHING
     ), search_state AS (
       INSERT INTO message_search_state (message_id, master_key_fingerprint)
       SELECT * FROM unnest($21::uuid[], $22::text[])
     ), counted AS (
       UPDATE conversation_keys k SET message_count = k.message_count + u.n
       FROM unnest($15::uuid[], $16::int[], $17::int[]) AS u(cid, version, n)
       WHERE k.conversation_id = u.cid AND k.version = u.version
       RETURNING k.conversation_id, k.version, k.message_count
     )
     SELECT id, created_at, updated_at, NULL::uuid AS conversation_id, NULL::int AS version, NULL::bigint AS message_count FROM inserted
     UNION ALL
     SELECT NULL, NULL, NULL, conversation_id, version, message_count FROM counted`,
    [
      [...lastSeqs.keys()],
      [...lastSeqs.values()],
      messages.map((m) => m.id),
      messages.map((m) => m.conversationId),
      messages.map((m) => m.senderId),
      messages.map((m) => m.seq),
      messages.map((m) => m.ciphertext),
      messages.map((m) => m.contentType),
      messages.map((m) => m.signature),
      messages.map((m) => m.replyToId),
      messages.map((m) => m.clientMessageId),
      messages.map((m) => m.nonce),
      messages.map((m) => m.tag),
      messages.map((m) => m.keyVersion),
      [...use.values()].map((u) => u.cid),
      [...use.values()].map((u) => u.version),
      [...use.values()].map((u) => u.n),
      tokenRows.map((t) => t.cid),
      tokenRows.map((t) => t.token),
      tokenRows.map((t) => t.id),
      indexed.map((m) => m.id),
      indexed.map((m) => m.search!.fingerprint),
    ],
  );
  const times = new Map<string, { created_at: Date; updated_at: Date }>();
  const keyUse: BatchInsertResult['keyUse'] = [];
  for (const r of rows) {
    if (r.id !== null) times.set(r.id, { created_at: r.created_at, updated_at: r.updated_at });
    else keyUse.push({ conversation_id: r.conversation_id, version: r.version, message_count: r.message_count });
  }
  return { times, keyUse };
}

/** Columns a streaming job needs to decrypt a message. */
export const STREAM_COLUMNS = `
  m.id, m.conversation_id, m.sender_id, m.seq, m.content, m.content_type, m.signature, m.reply_to_id,
  m.client_message_id, m.created_at, m.updated_at, m.edited_at, m.deleted_at,
  e.nonce, e.tag, e.key_version, k.created_unix_seconds, k.master_key_fingerprint`;

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

/** Replaces the blind-index tokens of messages (reindex, master-key rotation). Run in a transaction. */
export async function replaceSearchTokens(db: Queryable, entries: SearchIndexEntry[]): Promise<void> {
  if (entries.length === 0) return;
  const pairs = entries.flatMap((e) => e.tokens.map((token) => ({ e, token })));
  const ids = entries.map((e) => e.messageId);
  const mids = pairs.map((p) => p.e.messageId);
  const tokens = pairs.map((p) => p.token);
  await db.query(
    `DELETE FROM message_search_tokens t USING unnest($1::uuid[]) AS ids(id)
     WHERE t.message_id = ids.id
       AND NOT EXISTS (SELECT 1 FROM unnest($2::uuid[], $3::bytea[]) AS n(mid, token) WHERE n.mid = t.message_id AND n.token = t.token)`,
    [ids, mids, tokens],
  );
  await db.query(
    `INSERT INTO message_search_tokens (conversation_id, token, message_id)
     SELECT * FROM unnest($1::uuid[], $2::bytea[], $3::uuid[]) ON CONFLICT DO NOTHING`,
    [pairs.map((p) => p.e.conversationId), tokens, mids],
  );
  await db.query(
    `INSERT INTO message_search_state (message_id, master_key_fingerprint) SELECT * FROM unnest($1::uuid[], $2::text[])
     ON CONFLICT (message_id) DO UPDATE SET master_key_fingerprint = EXCLUDED.master_key_fingerprint`,
    [ids, entries.map((e) => e.fingerprint)],
  );
}

/** Stored tokens per message (for verify). */
export async function selectSearchTokens(db: Queryable, messageIds: string[]): Promise<Map<string, { tokens: Set<string>; fingerprint: string | null }>> {
  const { rows } = await db.query<{ id: string; fingerprint: string | null; token: Buffer | null }>(
    `SELECT ids.id, s.master_key_fingerprint AS fingerprint, t.token
     FROM unnest($1::uuid[]) AS ids(id)
     LEFT JOIN message_search_state s ON s.message_id = ids.id
     LEFT JOIN message_search_tokens t ON t.message_id = ids.id`,
    [messageIds],
  );
  const out = new Map<string, { tokens: Set<string>; fingerprint: string | null }>();
  for (const r of rows) {
    const entry = out.get(r.id) ?? { tokens: new Set<string>(), fingerprint: r.fingerprint };
    if (r.token) entry.tokens.add(r.token.toString('hex'));
    out.set(r.id, entry);
  }
  return out;
}
