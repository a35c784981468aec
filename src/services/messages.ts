import { newId } from '../crypto/ids.js';
import type pg from 'pg';
import { ApiError, forbidden, invalid, notFound } from '../errors.js';
import { listMembers, type ConversationRow, type MemberRow } from '../db/conversations.js';
import {
  lockMessage,
  selectByClientMessageId,
  selectMessageAccess,
  selectConversationState,
  selectMessagesBySeq,
  tombstoneMessage,
  updateMessageContent,
  type ConversationState,
  type MessageRow,
  type PageCursor,
} from '../db/messages.js';
import { selectMemberPage } from '../db/history.js';
import type { AuditPurpose } from '../db/audit.js';
import type { MessageCipher, OpenJob } from '../cipher/message-cipher.js';
import type { KeyRef } from '../keys/conversation-keys.js';
import type { KeyVersions } from '../keys/key-versions.js';
import type { SearchTokenizer } from './search-tokenizer.js';
import type { Logger } from '../log.js';
import type { EventPublisher } from '../realtime/events.js';
import type { AuditLog } from './audit-log.js';
import type { SendBatcher, SendOutcome } from './send-batcher.js';
import { sqlState, withTransaction } from '../db/transaction.js';
import type { RateLimits } from './rate-limiter.js';
import type { ConversationService } from './conversations.js';
import type { CachedPage, HistoryCache } from './history-cache.js';
import { ReceiptView, messageFields, statusAcross, toMessage, type DecryptedRow, type Message } from './message-view.js';

export const CONTENT_TYPES = ['text', 'markdown', 'json', 'image', 'file', 'audio', 'video'] as const;
export type ContentType = (typeof CONTENT_TYPES)[number];

export interface SendInput {
  conversationId?: string | undefined;
  recipientId?: string | undefined;
  content: string;
  contentType: ContentType;
  replyToId: string | null;
  clientMessageId: string | null;
  signature: string | null;
}

/** The counters this service feeds (prom-client Counters in production). */
export interface MessageCounters {
  encrypted: { inc(n?: number): void };
  decrypted: { inc(n?: number): void };
  integrityErrors: { inc(n?: number): void };
}

export interface MessageServiceOptions {
  pool: pg.Pool;
  cipher: MessageCipher;
  keys: KeyVersions;
  conversations: ConversationService;
  audit: AuditLog;
  events: EventPublisher;
  logger: Logger;
  maxMessageBytes: number;
  counters: MessageCounters;
  batcher: SendBatcher;
  history: HistoryCache;
  limits: RateLimits;
  /** Blind-index tokens for search; null when SEARCH_ENABLED=false. */
  search: SearchTokenizer | null;
}

const aadOf = (conversationId: string, messageId: string, senderId: string) => `${conversationId}:${messageId}:${senderId}`;

export class MessageService {
  readonly #o: MessageServiceOptions;

  constructor(options: MessageServiceOptions) {
    this.#o = options;
    options.conversations.lastMessages = (viewerId, rows, members, requestId) => this.#lastMessages(viewerId, rows, members, requestId);
  }

  /** Search tokens to store with a message (indexed in the same transaction as it). */
  async #index(conversationId: string, content: string): Promise<{ tokens: Buffer[]; fingerprint: string } | null> {
    const search = this.#o.search;
    if (!search) return null;
    const fingerprint = search.activeFingerprint;
    return { tokens: await search.tokensFor(conversationId, content), fingerprint };
  }

  /** The content's UTF-8 bytes (encoded once: measured, then sealed); 413 when too large. */
  #encode(content: string): Buffer {
    const bytes = Buffer.from(content, 'utf8');
    if (bytes.length > this.#o.maxMessageBytes) {
      throw new ApiError('payload_too_large', `content exceeds ${this.#o.maxMessageBytes} bytes`, 'content');
    }
    return bytes;
  }

  async #seal(key: KeyRef, messageId: string, senderId: string, plaintext: Buffer) {
    const [sealed] = await this.#o.cipher.seal([{ key, aad: aadOf(key.conversationId, messageId, senderId), plaintext }]);
    this.#o.counters.encrypted.inc();
    return sealed!;
  }

  /**
   * Encrypts and stores a message through the group commit; `created` is false for an idempotent
   * replay. Membership, idempotency and the reply target are checked inside the commit.
   */
  async send(senderId: string, input: SendInput): Promise<{ message: Message; created: boolean }> {
    const plaintext = this.#encode(input.content);
    await this.#o.limits.take('send', senderId);
    let conversationId: string;
    let keyVersion: number;
    if (input.recipientId) {
      const { row } = await this.#o.conversations.getOrCreateDirect(senderId, input.recipientId, 'recipient_id');
      conversationId = row.id;
      keyVersion = row.current_key_version;
    } else {
      conversationId = input.conversationId!;
      keyVersion = await this.#o.conversations.currentKeyVersion(conversationId);
    }
    const id = newId();
    // tokens are computed (on a worker) while the message is sealed here
    const indexing = this.#index(conversationId, input.content);
    indexing.catch(() => {});
    let outcome: SendOutcome;
    for (let attempt = 1; ; attempt++) {
      const key = await this.#o.keys.forEncryption(conversationId, keyVersion);
      const sealed = await this.#seal(key, id, senderId, plaintext);
      try {
        outcome = await this.#o.batcher.submit({
          id,
          conversationId,
          senderId,
          ciphertext: sealed.ciphertext,
          nonce: sealed.nonce,
          tag: sealed.tag,
          keyVersion: key.version,
          keyFingerprint: key.fingerprint,
          contentType: input.contentType,
          signature: input.signature,
          replyToId: input.replyToId,
          clientMessageId: input.clientMessageId,
          search: await indexing,
        });
      } catch (err) {
        // A send with the same client_message_id committed by another instance in between.
        if (sqlState(err) !== '23505' || (err as { constraint?: string }).constraint !== 'messages_client_message_id') throw err;
        outcome = { kind: 'duplicate' };
      }
      // The key was rotated (possibly by another instance) after we read the current version.
      if (outcome.kind !== 'stale_key' || attempt >= 3) break;
      this.#o.conversations.forgetKeyVersion(conversationId);
      keyVersion = outcome.currentVersion;
    }
    if (outcome.kind === 'stale_key') throw new ApiError('unavailable', 'the conversation key is rotating; retry', undefined, 1);
    if (outcome.kind === 'not_member') throw notFound('conversation', input.recipientId ? 'recipient_id' : undefined);
    if (outcome.kind === 'bad_reply') throw invalid('reply_to_id', 'reply_to_id must name a message of the same conversation');
    if (outcome.kind === 'duplicate') {
      const replay = await this.#replay(conversationId, senderId, input);
      if (!replay) throw new Error('duplicate client_message_id without a stored message');
      return { message: replay, created: false };
    }
    const message = toMessage(
      {
        id,
        conversation_id: conversationId,
        sender_id: senderId,
        seq: outcome.seq,
        content_type: input.contentType,
        reply_to_id: input.replyToId,
        client_message_id: input.clientMessageId,
        signature: input.signature,
        created_at: outcome.created_at,
        updated_at: outcome.updated_at,
        edited_at: null,
        deleted_at: null,
      },
      input.content,
      'sent',
    );
    this.#o.events.publish(conversationId, { type: 'new_message', message }, outcome.prevAt);
    return { message, created: true };
  }

  /**
   * An idempotent replay answers the stored message, decrypted — what recipients see, even when the
   * retry's content differs — and that decryption is audited like a fetch (docs/protocol.md, Idempotent sends).
   */
  async #replay(conversationId: string, senderId: string, input: SendInput): Promise<Message | undefined> {
    const row = await selectByClientMessageId(this.#o.pool, conversationId, senderId, input.clientMessageId!);
    if (!row) return undefined;
    const receipts = new ReceiptView(await listMembers(this.#o.pool, [conversationId]));
    const [message] = await this.render(senderId, [row], (r) => receipts.statusOf(r.sender_id, r.seq), 'fetch', null);
    return message;
  }

  /**
   * One history page. Cold: one query (membership, receipts and rows in one snapshot; nothing is
   * decrypted for a non-member), one decryption batch. Hot: the in-process cache while the
   * conversation's history version is unchanged (checked against the database on every read).
   */
  async page(viewerId: string, conversationId: string, cursor: PageCursor, limit: number, requestId: string): Promise<{ messages: Message[]; has_more: boolean }> {
    const key = `${conversationId}:${cursor.kind}:${cursor.kind === 'latest' ? '' : cursor.seq}:${limit}`;
    const cached = this.#o.history.peek(key);
    if (cached) {
      const state = await selectConversationState(this.#o.pool, conversationId);
      if (!state || !state.members.some((m) => m.user_id === viewerId)) throw notFound('conversation');
      if (cached.version === state.version) return this.#servePage(viewerId, cached, state.members, requestId);
    }
    // Identical concurrent cold reads share one query and decryption; a page loaded for another
    // viewer proves nothing about this one's membership, so that caller loads its own.
    const shared = await this.#o.history.load(key, () => this.#coldPage(viewerId, conversationId, cursor, limit, requestId));
    const page = shared?.loadedFor === viewerId ? shared : await this.#coldPage(viewerId, conversationId, cursor, limit, requestId);
    if (!page) throw notFound('conversation');
    return this.#servePage(viewerId, page, page.members, requestId);
  }

  async #coldPage(viewerId: string, conversationId: string, cursor: PageCursor, limit: number, requestId: string) {
    const found = await selectMemberPage(this.#o.pool, conversationId, viewerId, cursor, limit + 1);
    if (!found) return undefined;
    const page = found.rows.slice(0, limit);
    if (cursor.kind !== 'after') page.reverse();
    return { version: found.state.version, members: found.state.members, loadedFor: viewerId, rows: await this.#decrypt(page, requestId), hasMore: found.rows.length > limit };
  }

  #servePage(viewerId: string, page: CachedPage, members: ConversationState['members'], requestId: string): { messages: Message[]; has_more: boolean } {
    const receipts = new ReceiptView(members);
    const messages = this.#present(viewerId, page.rows, (r) => receipts.statusOf(r.sender_id, r.seq), 'fetch', requestId);
    return { messages, has_more: page.hasMore };
  }

  async edit(userId: string, messageId: string, content: string): Promise<Message> {
    const plaintext = this.#encode(content);
    await this.#o.limits.take('edit', userId);
    const access = await selectMessageAccess(this.#o.pool, messageId, userId);
    if (!access || !access.is_member) throw notFound('message', 'id');
    if (access.sender_id !== userId) throw forbidden('only the sender can edit a message');
    if (access.deleted_at) throw new ApiError('conflict', 'a deleted message cannot be edited');
    const key = await this.#o.keys.forEncryption(access.conversation_id, access.current_key_version);
    const sealed = await this.#seal(key, messageId, userId, plaintext);
    const search = await this.#index(access.conversation_id, content);
    // Lock first: the update's token replacement must see writes committed while it waited (a re-index).
    let retired = false;
    const row = await withTransaction(this.#o.pool, async (client) => {
      await lockMessage(client, messageId);
      const updated = await updateMessageContent(client, messageId, { ...sealed, keyVersion: key.version }, search);
      // an edit is an encryption under the key too: it can fill the version, which then retires
      if (updated) retired = await this.#o.keys.retireIfFull(client, access.conversation_id, key.version, updated.keyMessageCount);
      return updated?.row;
    });
    if (retired) this.#o.conversations.forgetKeyVersion(access.conversation_id);
    if (!row) throw new ApiError('conflict', 'a deleted message cannot be edited');
    const receipts = new ReceiptView(await listMembers(this.#o.pool, [row.conversation_id]));
    const message = toMessage(row, content, receipts.statusOf(row.sender_id, row.seq));
    this.#o.events.publish(row.conversation_id, { type: 'message_updated', message });
    return message;
  }

  async delete(userId: string, messageId: string): Promise<Message> {
    await this.#o.limits.take('delete', userId);
    const access = await selectMessageAccess(this.#o.pool, messageId, userId);
    if (!access || !access.is_member) throw notFound('message', 'id');
    if (access.sender_id !== userId) throw forbidden('only the sender can delete a message');
    const row = await withTransaction(this.#o.pool, async (client) => {
      await lockMessage(client, messageId);
      return tombstoneMessage(client, messageId);
    });
    if (!row) throw notFound('message', 'id');
    const receipts = new ReceiptView(await listMembers(this.#o.pool, [row.conversation_id]));
    const message = toMessage(row, null, receipts.statusOf(row.sender_id, row.seq));
    if (!access.deleted_at) {
      this.#o.events.publish(row.conversation_id, { type: 'message_deleted', conversation_id: row.conversation_id, id: row.id, seq: row.seq });
    }
    return message;
  }

  /**
   * Decrypts rows in one batch. A row whose tag fails (or whose key is gone) comes back with
   * content null and integrityError; it is counted and logged with ids only.
   */
  async #decrypt(rows: MessageRow[], requestId: string | null): Promise<DecryptedRow[]> {
    const jobs: OpenJob<KeyRef>[] = [];
    const jobIndex: number[] = [];
    rows.forEach((r, i) => {
      if (r.deleted_at) return;
      if (r.content && r.nonce && r.tag && r.key_version !== null && r.created_unix_seconds !== null && r.master_key_fingerprint) {
        jobIndex[i] = jobs.length;
        jobs.push({
          key: { conversationId: r.conversation_id, version: r.key_version, createdUnixSeconds: r.created_unix_seconds, fingerprint: r.master_key_fingerprint },
          aad: aadOf(r.conversation_id, r.id, r.sender_id),
          nonce: r.nonce,
          ciphertext: r.content,
          tag: r.tag,
        });
      }
    });
    const plaintexts = await this.#o.cipher.open(jobs);
    return rows.map((r, i) => {
      const row = messageFields(r);
      if (r.deleted_at) return { row, content: null, integrityError: false };
      const j = jobIndex[i];
      const plain = j === undefined ? null : plaintexts[j];
      if (!plain) {
        this.#o.counters.integrityErrors.inc();
        this.#o.logger.warn(
          { requestId, messageId: r.id, conversationId: r.conversation_id, keyVersion: r.key_version, keyFingerprint: r.master_key_fingerprint },
          'message failed integrity check',
        );
        return { row, content: null, integrityError: true };
      }
      return { row, content: plain.toString('utf8'), integrityError: false };
    });
  }

  /** Renders decrypted rows for a viewer and audits what was served (one row per conversation). */
  #present(
    viewerId: string | null,
    items: DecryptedRow[],
    statusOf: (row: DecryptedRow['row']) => Message['status'],
    purpose: AuditPurpose,
    requestId: string | null,
  ): Message[] {
    const served = new Map<string, number>();
    const messages = items.map(({ row, content, integrityError }) => {
      if (content !== null) served.set(row.conversation_id, (served.get(row.conversation_id) ?? 0) + 1);
      return toMessage(row, content, statusOf(row), integrityError);
    });
    for (const [conversationId, count] of served) {
      this.#o.counters.decrypted.inc(count);
      this.#o.audit.record(viewerId, conversationId, count, purpose, requestId);
    }
    return messages;
  }

  /** Decrypts, renders and audits rows (one batch). */
  async render(
    viewerId: string | null,
    rows: MessageRow[],
    statusOf: (row: DecryptedRow['row']) => Message['status'],
    purpose: AuditPurpose,
    requestId: string | null,
  ): Promise<Message[]> {
    return this.#present(viewerId, await this.#decrypt(rows, requestId), statusOf, purpose, requestId);
  }

  async #lastMessages(viewerId: string, rows: ConversationRow[], members: Map<string, MemberRow[]>, requestId: string): Promise<Map<string, Message>> {
    const found = await selectMessagesBySeq(
      this.#o.pool,
      rows.filter((r) => r.last_seq > 0).map((r) => ({ conversationId: r.id, seq: r.last_seq })),
    );
    const messages = await this.render(viewerId, found, statusAcross(members), 'fetch', requestId);
    return new Map(messages.map((m) => [m.conversation_id, m]));
  }
}
