import { LRUCache } from 'lru-cache';
import { v7 as uuidv7 } from 'uuid';
import type pg from 'pg';
import { ApiError, forbidden, invalid, notFound } from '../errors.js';
import {
  addMember,
  advanceReceipts,
  findConversationForMember,
  findDirectConversation,
  insertConversation,
  listConversationsForUser,
  listMembers,
  removeMember,
  rotateConversationKey,
  touchConversation,
  type ConversationRow,
  type MemberRow,
} from '../db/conversations.js';
import { countExistingUsers } from '../db/users.js';
import type { KeyVersions } from '../keys/key-versions.js';
import type { EventPublisher } from '../realtime/events.js';
import { groupByConversation, type Message } from './message-view.js';
import { UUID_PATTERN } from '../http/validation.js';
import type { RateLimits } from './rate-limiter.js';

export interface Member {
  user_id: string;
  role: 'owner' | 'member';
  joined_at: string;
  delivered_seq: number;
  read_seq: number;
}

export interface Conversation {
  id: string;
  type: 'direct' | 'group';
  title: string | null;
  members: Member[];
  created_at: string;
  updated_at: string;
  last_seq: number;
  current_key_version: number;
}

export interface ConversationListItem extends Conversation {
  last_message: Message | null;
  unread_count: number;
}

export interface Receipt {
  conversation_id: string;
  user_id: string;
  delivered_seq: number;
  read_seq: number;
}

const toMember = (m: MemberRow): Member => ({
  user_id: m.user_id,
  role: m.role,
  joined_at: m.joined_at.toISOString(),
  delivered_seq: m.delivered_seq,
  read_seq: m.read_seq,
});

function toConversation(c: ConversationRow, members: MemberRow[]): Conversation {
  return {
    id: c.id,
    type: c.type,
    title: c.title,
    members: members.map(toMember),
    created_at: c.created_at.toISOString(),
    updated_at: c.updated_at.toISOString(),
    last_seq: c.last_seq,
    current_key_version: c.current_key_version,
  };
}

/** Opaque keyset cursor of the conversation list: (activity in µs, id). */
export function encodeListCursor(activityUs: number, id: string): string {
  return Buffer.from(`${activityUs}:${id}`).toString('base64url');
}

export function decodeListCursor(cursor: string): { activityUs: number; id: string } {
  const payload = Buffer.from(cursor, 'base64url').toString('utf8');
  // Exactly what the server issues: canonical base64url, a µs time that fits a bigint (and a
  // double, exactly), a UUID — anything else is 400, never a database error.
  const match = Buffer.from(payload).toString('base64url') === cursor ? /^(\d{1,16}):([0-9a-f-]{36})$/.exec(payload) : null;
  if (!match || !UUID_PATTERN.test(match[2]!) || !Number.isSafeInteger(Number(match[1]))) {
    throw invalid('before', 'before is not a cursor this server issued');
  }
  return { activityUs: Number(match[1]), id: match[2]! };
}

/** Renders the last message of each listed conversation (decrypting, auditing); see MessageService. */
export type LastMessageLoader = (
  viewerId: string,
  rows: ConversationRow[],
  members: Map<string, MemberRow[]>,
  requestId: string,
) => Promise<Map<string, Message>>;

export interface ConversationServiceOptions {
  pool: pg.Pool;
  keys: KeyVersions;
  events: EventPublisher;
  /** `create-conversation` (groups, and direct conversations that do not exist yet), `member-change`, `receipt`, `rotate-key`. */
  limits: RateLimits;
}

export class ConversationService {
  readonly #pool: pg.Pool;
  readonly #keys: KeyVersions;
  readonly #events: EventPublisher;
  readonly #limits: RateLimits;
  lastMessages: LastMessageLoader = async () => new Map();
  /** Current key version per conversation for the send path; briefly stale at worst (old versions stay valid). */
  readonly #keyVersions = new LRUCache<string, number>({ max: 50_000, ttl: 2000 });

  constructor(options: ConversationServiceOptions) {
    this.#pool = options.pool;
    this.#keys = options.keys;
    this.#events = options.events;
    this.#limits = options.limits;
  }

  /** The conversation if `userId` is a member; 404 otherwise (non-members learn nothing). */
  async requireMember(conversationId: string, userId: string): Promise<ConversationRow & { role: MemberRow['role'] }> {
    const row = await findConversationForMember(this.#pool, conversationId, userId);
    if (!row) throw notFound('conversation', undefined);
    return row;
  }

  /** The key version new messages of a conversation use; 404 when it does not exist. */
  async currentKeyVersion(conversationId: string): Promise<number> {
    const hit = this.#keyVersions.get(conversationId);
    if (hit !== undefined) return hit;
    const { rows } = await this.#pool.query<{ v: number }>('SELECT current_key_version AS v FROM conversations WHERE id = $1', [conversationId]);
    if (!rows[0]) throw notFound('conversation');
    this.#keyVersions.set(conversationId, rows[0].v);
    return rows[0].v;
  }

  forgetKeyVersion(conversationId: string): void {
    this.#keyVersions.delete(conversationId);
  }

  async #withMembers(row: ConversationRow): Promise<Conversation> {
    return toConversation(row, await listMembers(this.#pool, [row.id]));
  }

  async get(conversationId: string, userId: string): Promise<Conversation> {
    return this.#withMembers(await this.requireMember(conversationId, userId));
  }

  /** Get-or-create the one direct conversation of a pair; `created` says which. */
  async getOrCreateDirect(userId: string, otherId: string, field = 'member_ids'): Promise<{ conversation: Conversation; created: boolean; row: ConversationRow }> {
    if (otherId === userId) throw invalid(field, 'a direct conversation needs another user');
    const pair: [string, string] = userId < otherId ? [userId, otherId] : [otherId, userId];
    const existing = await findDirectConversation(this.#pool, ...pair);
    if (existing) return { conversation: await this.#withMembers(existing), created: false, row: existing };
    if ((await countExistingUsers(this.#pool, [otherId])) !== 1) throw notFound('user', field);
    await this.#limits.take('create-conversation', userId);
    const inserted = await insertConversation(this.#pool, {
      id: uuidv7(),
      type: 'direct',
      title: null,
      createdBy: userId,
      directPair: pair,
      members: [
        { userId, role: 'member' },
        { userId: otherId, role: 'member' },
      ],
      keyFingerprint: this.#keys.activeFingerprint,
      keyCreatedUnixSeconds: this.#keys.nowUnixSeconds(),
    });
    const row = inserted ?? (await findDirectConversation(this.#pool, ...pair));
    if (!row) throw new Error('direct conversation vanished after a conflicting insert');
    const conversation = await this.#withMembers(row);
    if (inserted) {
      this.#events.membersAdded(row.id, conversation.members.map((m) => m.user_id));
    }
    return { conversation, created: inserted !== undefined, row };
  }

  async createGroup(userId: string, title: string | null, memberIds: string[]): Promise<Conversation> {
    await this.#limits.take('create-conversation', userId);
    const others = [...new Set(memberIds)].filter((id) => id !== userId);
    if (others.length > 0 && (await countExistingUsers(this.#pool, others)) !== others.length) {
      throw notFound('user', 'member_ids');
    }
    const row = await insertConversation(this.#pool, {
      id: uuidv7(),
      type: 'group',
      title,
      createdBy: userId,
      members: [{ userId, role: 'owner' }, ...others.map((id) => ({ userId: id, role: 'member' as const }))],
      keyFingerprint: this.#keys.activeFingerprint,
      keyCreatedUnixSeconds: this.#keys.nowUnixSeconds(),
    });
    if (!row) throw new Error('group insert returned no row');
    const conversation = await this.#withMembers(row);
    this.#events.membersAdded(row.id, conversation.members.map((m) => m.user_id));
    return conversation;
  }

  async list(userId: string, limit: number, before: string | undefined, requestId: string): Promise<{ conversations: ConversationListItem[]; next_cursor: string | null }> {
    const rows = await listConversationsForUser(this.#pool, userId, limit + 1, before ? decodeListCursor(before) : undefined);
    const page = rows.slice(0, limit);
    const members = await listMembers(this.#pool, page.map((r) => r.id));
    const byConversation = groupByConversation(members);
    const lastMessages = await this.lastMessages(userId, page, byConversation, requestId);
    const conversations = page.map((r) => ({
      ...toConversation(r, byConversation.get(r.id) ?? []),
      last_message: lastMessages.get(r.id) ?? null,
      unread_count: r.unread_count,
    }));
    const last = page[page.length - 1];
    return { conversations, next_cursor: rows.length > limit && last ? encodeListCursor(last.activity_us, last.id) : null };
  }

  async addMember(conversationId: string, actorId: string, userId: string): Promise<Conversation> {
    await this.#limits.take('member-change', actorId);
    const conv = await this.requireMember(conversationId, actorId);
    if (conv.type === 'direct') throw invalid('user_id', 'members cannot be added to a direct conversation');
    if ((await countExistingUsers(this.#pool, [userId])) !== 1) throw notFound('user', 'user_id');
    if (await addMember(this.#pool, conversationId, userId)) {
      await touchConversation(this.#pool, conversationId);
      this.#events.membersAdded(conversationId, [userId]);
    }
    return this.get(conversationId, actorId);
  }

  async removeMember(conversationId: string, actorId: string, userId: string): Promise<void> {
    await this.#limits.take('member-change', actorId);
    const conv = await this.requireMember(conversationId, actorId);
    if (conv.type === 'direct') throw invalid('user_id', 'members cannot be removed from a direct conversation');
    if (userId !== actorId && conv.role !== 'owner') throw forbidden('only the owner can remove other members');
    if (!(await removeMember(this.#pool, conversationId, userId))) throw notFound('member', 'user_id');
    await touchConversation(this.#pool, conversationId);
    this.#events.memberRemoved(conversationId, userId);
  }

  async markRead(conversationId: string, userId: string, seq: number, kind: 'read' | 'delivered' = 'read'): Promise<Receipt> {
    await this.#limits.take('receipt', userId);
    const row = await advanceReceipts(this.#pool, conversationId, userId, seq, kind);
    if (!row) throw notFound('conversation');
    if (seq > row.last_seq) throw invalid('seq', `seq is above the conversation's last_seq (${row.last_seq})`);
    const receipt = { conversation_id: row.conversation_id, user_id: row.user_id, delivered_seq: row.delivered_seq, read_seq: row.read_seq };
    // A receipt that moves nothing (a repeat, or below what is recorded) is not news.
    if (row.changed) this.#events.publish(conversationId, { type: 'receipt', ...receipt });
    return receipt;
  }

  async rotateKey(conversationId: string, userId: string): Promise<{ conversation_id: string; current_key_version: number }> {
    await this.#limits.take('rotate-key', userId);
    await this.requireMember(conversationId, userId);
    const version = await rotateConversationKey(this.#pool, conversationId, this.#keys.activeFingerprint, this.#keys.nowUnixSeconds(), 'explicit');
    if (version === undefined) throw new ApiError('not_found', 'conversation not found');
    this.#keyVersions.delete(conversationId);
    this.#events.publish(conversationId, { type: 'key_rotated', conversation_id: conversationId, current_key_version: version });
    return { conversation_id: conversationId, current_key_version: version };
  }
}
