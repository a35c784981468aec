import type pg from 'pg';
import { checkBatch, insertMessageBatch, lockConversations, type BatchMessage, type NewMessage } from '../db/messages.js';
import { withTransaction } from '../db/transaction.js';
import type { Logger } from '../log.js';

export type SendOutcome =
  | { kind: 'inserted'; seq: number; created_at: Date; updated_at: Date }
  /** The sender already has a message with this client_message_id here: answer with it. */
  | { kind: 'duplicate' }
  | { kind: 'not_member' }
  | { kind: 'bad_reply' }
  /** Encrypted under a key version that is no longer current (rotated meanwhile): seal again. */
  | { kind: 'stale_key'; currentVersion: number };

interface Pending {
  message: NewMessage;
  resolve: (outcome: SendOutcome) => void;
  reject: (err: unknown) => void;
}

export interface SendBatcherOptions {
  pool: pg.Pool;
  logger: Logger;
  /** Most messages in one flush (one transaction). */
  maxBatch?: number;
  /** Flushes running at once (each holds a database connection). */
  maxInFlight?: number;
  onFlush?: (size: number, seconds: number) => void;
  /**
   * Retires full key versions inside the flush's transaction: called for each key version the
   * batch used with its message count; returns true when it made a new version current.
   */
  retireKeyVersion?: (client: pg.PoolClient, conversationId: string, version: number, messageCount: number) => Promise<boolean>;
  /** After a commit that retired key versions (to refresh caches). */
  onKeysRetired?: (conversationIds: string[]) => void;
}

/**
 * Group commit for sends: messages submitted in the same turn of the event loop (and while all
 * flush slots are busy) are written in one transaction — lock conversations, check membership,
 * idempotency and reply targets, assign gap-free seqs, multi-row insert — and each sender is
 * answered only after the commit. A failed flush is retried message by message, so a failure
 * fails only the messages it belongs to.
 */
export class SendBatcher {
  readonly #pool: pg.Pool;
  readonly #logger: Logger;
  readonly #maxBatch: number;
  readonly #maxInFlight: number;
  readonly #onFlush: SendBatcherOptions['onFlush'];
  readonly #retire: SendBatcherOptions['retireKeyVersion'];
  readonly #onRetired: SendBatcherOptions['onKeysRetired'];
  #pending: Pending[] = [];
  #inFlight = 0;
  /** Conversations a running flush holds. */
  readonly #busy = new Set<string>();
  #scheduled = false;
  #idle: (() => void)[] = [];

  constructor(options: SendBatcherOptions) {
    this.#pool = options.pool;
    this.#logger = options.logger;
    this.#maxBatch = options.maxBatch ?? 256;
    this.#maxInFlight = options.maxInFlight ?? 4;
    this.#onFlush = options.onFlush;
    this.#retire = options.retireKeyVersion;
    this.#onRetired = options.onKeysRetired;
  }

  submit(message: NewMessage): Promise<SendOutcome> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ message, resolve, reject });
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#inFlight >= this.#maxInFlight) return; // a finishing flush picks the rest up
    if (this.#pending.length >= this.#maxBatch) {
      this.#start();
      return;
    }
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => {
        this.#scheduled = false;
        this.#start();
      });
    }
  }

  /**
   * Starts flushes while slots are free. A flush takes only conversations no running flush holds:
   * two flushes on one conversation would just queue on its row lock, and this keeps each
   * conversation's messages in arrival order across flushes.
   */
  #start(): void {
    while (this.#inFlight < this.#maxInFlight && this.#pending.length > 0) {
      const batch: Pending[] = [];
      const rest: Pending[] = [];
      const taken = new Set<string>();
      for (const p of this.#pending) {
        const id = p.message.conversationId;
        if (this.#busy.has(id) || (batch.length >= this.#maxBatch && !taken.has(id))) rest.push(p);
        else if (batch.length < this.#maxBatch) {
          batch.push(p);
          taken.add(id);
        } else rest.push(p);
      }
      if (batch.length === 0) return; // everything waits for a running flush
      this.#pending = rest;
      for (const id of taken) this.#busy.add(id);
      this.#inFlight++;
      void this.#flush(batch).finally(() => {
        for (const id of taken) this.#busy.delete(id);
        this.#inFlight--;
        if (this.#pending.length > 0) this.#schedule();
        else if (this.#inFlight === 0) for (const done of this.#idle.splice(0)) done();
      });
    }
  }

  async #flush(batch: Pending[]): Promise<void> {
    const started = performance.now();
    try {
      const { outcomes, retired } = await withTransaction(this.#pool, (client) => this.#write(client, batch.map((p) => p.message)));
      if (retired.length > 0) this.#onRetired?.(retired);
      batch.forEach((p, i) => p.resolve(outcomes[i]!));
      this.#onFlush?.(batch.length, (performance.now() - started) / 1000);
    } catch (err) {
      if (batch.length === 1) {
        batch[0]!.reject(err);
        return;
      }
      this.#logger.warn({ size: batch.length, err: { message: (err as Error).message, code: (err as { code?: string }).code } }, 'group commit failed; retrying one by one');
      for (const p of batch) await this.#flush([p]);
    }
  }

  async #write(client: pg.PoolClient, messages: NewMessage[]): Promise<{ outcomes: SendOutcome[]; retired: string[] }> {
    const conversationIds = [...new Set(messages.map((m) => m.conversationId))].sort();
    const senders = uniqueBy(messages, (m) => `${m.conversationId}:${m.senderId}`).map((m) => ({ conversationId: m.conversationId, senderId: m.senderId }));
    const clientIds = uniqueBy(
      messages.filter((m) => m.clientMessageId !== null),
      (m) => `${m.conversationId}:${m.senderId}:${m.clientMessageId}`,
    ).map((m) => ({ conversationId: m.conversationId, senderId: m.senderId, clientMessageId: m.clientMessageId! }));
    const replyIds = [...new Set(messages.flatMap((m) => (m.replyToId ? [m.replyToId] : [])))];

    const lastSeq = new Map<string, number>();
    const currentKey = new Map<string, { version: number; fingerprint: string; origin: string }>();
    const locked = await lockConversations(client, conversationIds);
    for (const c of locked) {
      lastSeq.set(c.id, c.last_seq);
      currentKey.set(c.id, { version: c.current_key_version, fingerprint: '', origin: '' });
    }
    // Sealed under a version an explicit rotation (of the same master key) has replaced: seal again.
    // Automatic retirements and master-key changes accept messages already in flight.
    const stale = (m: NewMessage) => {
      const current = currentKey.get(m.conversationId)!;
      return m.keyVersion < current.version && current.origin === 'explicit' && m.keyFingerprint === current.fingerprint;
    };
    const members = new Set<string>();
    const duplicates = new Set<string>();
    const replies = new Map<string, string>();
    const keys = locked.map((c) => ({ conversationId: c.id, version: c.current_key_version }));
    for (const row of await checkBatch(client, senders, clientIds, replyIds, keys)) {
      if (row.kind === 'key') Object.assign(currentKey.get(row.conversation_id)!, { fingerprint: row.user_id, origin: row.client_message_id });
      else if (row.kind === 'member') members.add(`${row.conversation_id}:${row.user_id}`);
      else if (row.kind === 'duplicate') duplicates.add(`${row.conversation_id}:${row.user_id}:${row.client_message_id}`);
      else replies.set(row.message_id!, row.conversation_id);
    }

    const outcomes: SendOutcome[] = [];
    const accepted: { index: number; message: BatchMessage }[] = [];
    const bumped = new Map<string, number>();
    for (const [index, m] of messages.entries()) {
      const clientKey = m.clientMessageId === null ? undefined : `${m.conversationId}:${m.senderId}:${m.clientMessageId}`;
      const last = lastSeq.get(m.conversationId);
      if (last === undefined || !members.has(`${m.conversationId}:${m.senderId}`)) outcomes[index] = { kind: 'not_member' };
      else if (m.replyToId && replies.get(m.replyToId) !== m.conversationId) outcomes[index] = { kind: 'bad_reply' };
      else if (clientKey && duplicates.has(clientKey)) outcomes[index] = { kind: 'duplicate' };
      else if (stale(m)) outcomes[index] = { kind: 'stale_key', currentVersion: currentKey.get(m.conversationId)!.version };
      else {
        if (clientKey) duplicates.add(clientKey); // a second copy later in this batch replays the first
        lastSeq.set(m.conversationId, last + 1);
        bumped.set(m.conversationId, last + 1);
        accepted.push({ index, message: { ...m, seq: last + 1 } });
      }
    }
    const retired: string[] = [];
    if (accepted.length > 0) {
      const { times, keyUse } = await insertMessageBatch(client, bumped, accepted.map((a) => a.message));
      if (this.#retire) {
        for (const use of keyUse) {
          if (await this.#retire(client, use.conversation_id, use.version, use.message_count)) retired.push(use.conversation_id);
        }
      }
      for (const { index, message } of accepted) {
        const t = times.get(message.id);
        if (!t) throw new Error('group commit: an inserted message is missing from the reply');
        outcomes[index] = { kind: 'inserted', seq: message.seq, created_at: t.created_at, updated_at: t.updated_at };
      }
    }
    return { outcomes, retired };
  }

  /** Messages waiting for a flush (a gauge for operators). */
  get backlog(): number {
    return this.#pending.length;
  }

  /** Resolves once everything submitted so far is committed (or failed). */
  drain(): Promise<void> {
    if (this.#pending.length === 0 && this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }
}

function uniqueBy<T>(items: T[], key: (t: T) => string): T[] {
  const seen = new Map<string, T>();
  for (const item of items) if (!seen.has(key(item))) seen.set(key(item), item);
  return [...seen.values()];
}
