import type { Queryable } from './transaction.js';

export interface ConversationRow {
  id: string;
  type: 'direct' | 'group';
  title: string | null;
  created_by: string;
  created_at: Date;
  updated_at: Date;
  last_seq: number;
  current_key_version: number;
}

export interface MemberRow {
  conversation_id: string;
  user_id: string;
  role: 'owner' | 'member';
  joined_at: Date;
  delivered_seq: number;
  read_seq: number;
}

export interface KeyVersionRow {
  version: number;
  master_key_fingerprint: string;
  created_unix_seconds: number;
}

const COLUMNS = 'c.id, c.type, c.title, c.created_by, c.created_at, c.updated_at, c.last_seq, c.current_key_version';

export interface NewConversation {
  id: string;
  type: 'direct' | 'group';
  title: string | null;
  createdBy: string;
  directPair?: [string, string];
  members: { userId: string; role: 'owner' | 'member' }[];
  keyFingerprint: string;
  keyCreatedUnixSeconds: number;
}

/**
 * Creates a conversation with its members and key version 1. For a direct pair that already has
 * one, creates nothing and returns undefined (the unique pair constraint decides races).
 */
export async function insertConversation(db: Queryable, c: NewConversation): Promise<ConversationRow | undefined> {
  const { rows } = await db.query<ConversationRow>(
    `WITH conv AS (
       INSERT INTO conversations AS c (id, type, title, created_by, direct_low, direct_high)
       VALUES ($1, $2, $3, $4, $5, $6)
       ON CONFLICT ON CONSTRAINT conversations_direct_unique DO NOTHING
       RETURNING ${COLUMNS}
     ), members AS (
       INSERT INTO conversation_members (conversation_id, user_id, role)
       SELECT conv.id, m.user_id, m.role FROM conv, unnest($7::uuid[], $8::text[]) AS m(user_id, role)
     ), keys AS (
       INSERT INTO conversation_keys (conversation_id, version, master_key_fingerprint, created_unix_seconds, origin)
       SELECT conv.id, 1, $9, $10, 'initial' FROM conv
     )
     SELECT * FROM conv`,
    [
      c.id, c.type, c.title, c.createdBy, c.directPair?.[0] ?? null, c.directPair?.[1] ?? null,
      c.members.map((m) => m.userId), c.members.map((m) => m.role), c.keyFingerprint, c.keyCreatedUnixSeconds,
    ],
  );
  return rows[0];
}

export async function findDirectConversation(db: Queryable, low: string, high: string): Promise<ConversationRow | undefined> {
  const { rows } = await db.query<ConversationRow>(
    `SELECT ${COLUMNS} FROM conversations c WHERE c.direct_low = $1 AND c.direct_high = $2`,
    [low, high],
  );
  return rows[0];
}

/** The conversation, only if `userId` is a member of it (with the caller's role). */
export async function findConversationForMember(
  db: Queryable,
  id: string,
  userId: string,
): Promise<(ConversationRow & { role: MemberRow['role'] }) | undefined> {
  const { rows } = await db.query<ConversationRow & { role: MemberRow['role'] }>(
    `SELECT ${COLUMNS}, m.role FROM conversations c
     JOIN conversation_members m ON m.conversation_id = c.id AND m.user_id = $2
     WHERE c.id = $1`,
    [id, userId],
  );
  return rows[0];
}

export async function listMembers(db: Queryable, conversationIds: string[]): Promise<MemberRow[]> {
  const { rows } = await db.query<MemberRow>(
    `SELECT conversation_id, user_id, role, joined_at, delivered_seq, read_seq
     FROM conversation_members WHERE conversation_id = ANY($1::uuid[]) ORDER BY joined_at, user_id`,
    [conversationIds],
  );
  return rows;
}

export interface ConversationListRow extends ConversationRow {
  activity_us: number;
  unread_count: number;
}

/** A page of the user's conversations, most recent activity first, keyset-paged on (activity, id). */
export async function listConversationsForUser(
  db: Queryable,
  userId: string,
  limit: number,
  before: { activityUs: number; id: string } | undefined,
): Promise<ConversationListRow[]> {
  const { rows } = await db.query<ConversationListRow>(
    `SELECT ${COLUMNS},
       (extract(epoch FROM c.last_activity_at) * 1000000)::bigint AS activity_us,
       (SELECT count(*)::int FROM messages x
         WHERE x.conversation_id = c.id AND x.seq > m.read_seq AND x.sender_id <> $1 AND x.deleted_at IS NULL) AS unread_count
     FROM conversation_members m JOIN conversations c ON c.id = m.conversation_id
     WHERE m.user_id = $1
       AND ($3::bigint IS NULL OR ((extract(epoch FROM c.last_activity_at) * 1000000)::bigint, c.id) < ($3::bigint, $4::uuid))
     ORDER BY c.last_activity_at DESC, c.id DESC
     LIMIT $2`,
    [userId, limit, before?.activityUs ?? null, before?.id ?? null],
  );
  return rows;
}

/** Adds a member; false when already a member. */
export async function addMember(db: Queryable, conversationId: string, userId: string): Promise<boolean> {
  const { rowCount } = await db.query(
    `INSERT INTO conversation_members (conversation_id, user_id, role) VALUES ($1, $2, 'member')
     ON CONFLICT (conversation_id, user_id) DO NOTHING`,
    [conversationId, userId],
  );
  return rowCount === 1;
}

export async function removeMember(db: Queryable, conversationId: string, userId: string): Promise<boolean> {
  const { rowCount } = await db.query('DELETE FROM conversation_members WHERE conversation_id = $1 AND user_id = $2', [conversationId, userId]);
  return rowCount === 1;
}

export async function touchConversation(db: Queryable, id: string): Promise<void> {
  await db.query('UPDATE conversations SET updated_at = now() WHERE id = $1', [id]);
}

export interface ReceiptRow {
  conversation_id: string;
  user_id: string;
  delivered_seq: number;
  read_seq: number;
  last_seq: number;
  /** Whether this call moved a receipt (an unchanged one is not published). */
  changed: boolean;
}

/**
 * Moves a member's receipts forward (never back); reading implies delivery. Returns undefined when
 * the user is not a member, and the row unchanged when `seq` is above last_seq (caller rejects).
 */
export async function advanceReceipts(
  db: Queryable,
  conversationId: string,
  userId: string,
  seq: number,
  kind: 'read' | 'delivered',
): Promise<ReceiptRow | undefined> {
  const readExpr = kind === 'read' ? 'GREATEST(m.read_seq, $3)' : 'm.read_seq';
  const { rows } = await db.query<ReceiptRow>(
    `WITH target AS (
       SELECT c.last_seq FROM conversations c
       JOIN conversation_members m ON m.conversation_id = c.id AND m.user_id = $2
       WHERE c.id = $1
     ), updated AS (
       UPDATE conversation_members m SET read_seq = ${readExpr}, delivered_seq = GREATEST(m.delivered_seq, $3)
       FROM target WHERE m.conversation_id = $1 AND m.user_id = $2 AND $3 <= target.last_seq
         AND (${readExpr}, GREATEST(m.delivered_seq, $3)) IS DISTINCT FROM (m.read_seq, m.delivered_seq)
       RETURNING m.conversation_id, m.user_id, m.delivered_seq, m.read_seq, target.last_seq, true AS changed
     )
     SELECT * FROM updated
     UNION ALL
     SELECT m.conversation_id, m.user_id, m.delivered_seq, m.read_seq, t.last_seq, false
     FROM conversation_members m, target t
     WHERE m.conversation_id = $1 AND m.user_id = $2 AND NOT EXISTS (SELECT 1 FROM updated)`,
    [conversationId, userId, seq],
  );
  return rows[0];
}

export type KeyOrigin = 'explicit' | 'count' | 'age' | 'master';

/**
 * Creates the next key version under the given master key and makes it current; returns it.
 * With `expectedVersion`, only if that is still current (compare-and-set).
 */
export async function rotateConversationKey(
  db: Queryable,
  conversationId: string,
  fingerprint: string,
  createdUnixSeconds: number,
  origin: KeyOrigin,
  expectedVersion?: number,
): Promise<number | undefined> {
  const { rows } = await db.query<{ version: number }>(
    `WITH bumped AS (
       UPDATE conversations SET current_key_version = current_key_version + 1, updated_at = now()
       WHERE id = $1 AND ($4::int IS NULL OR current_key_version = $4)
       RETURNING current_key_version AS version
     ), inserted AS (
       INSERT INTO conversation_keys (conversation_id, version, master_key_fingerprint, created_unix_seconds, origin)
       SELECT $1, version, $2, $3, $5 FROM bumped
     )
     SELECT version FROM bumped`,
    [conversationId, fingerprint, createdUnixSeconds, expectedVersion ?? null, origin],
  );
  return rows[0]?.version;
}

/** The newest key version of a conversation created under a master key, if any. */
export async function findNewestVersionUnder(db: Queryable, conversationId: string, fingerprint: string): Promise<KeyVersionRow | undefined> {
  const { rows } = await db.query<KeyVersionRow>(
    `SELECT version, master_key_fingerprint, created_unix_seconds FROM conversation_keys
     WHERE conversation_id = $1 AND master_key_fingerprint = $2 ORDER BY version DESC LIMIT 1`,
    [conversationId, fingerprint],
  );
  return rows[0];
}

export async function findKeyVersion(db: Queryable, conversationId: string, version: number): Promise<KeyVersionRow | undefined> {
  const { rows } = await db.query<KeyVersionRow>(
    'SELECT version, master_key_fingerprint, created_unix_seconds FROM conversation_keys WHERE conversation_id = $1 AND version = $2',
    [conversationId, version],
  );
  return rows[0];
}
