import type pg from 'pg';
import type { NewMessage } from '../db/messages.js';
import { commitSendBatch, type CommitOptions, type CommitVerdict } from '../db/send-commit.js';
import { retryingConflicts } from '../db/transaction.js';
import type { Logger } from '../log.js';

export type SendOutcome = CommitVerdict;

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
  /** Key retirement by count, and the master key and time new versions are created with. */
  keyPolicy?: () => CommitOptions;
  /** After a commit that retired key versions (to refresh caches). */
  onKeysRetired?: (conversationIds: string[]) => void;
}

/**
 * Group commit for sends: messages submitted in the same turn of the event loop (and while all
 * flush slots are busy) are written by one call of a server-side function — one round trip that
 * locks conversations, checks membership, idempotency and reply targets, assigns gap-free seqs and
 * inserts — and each sender is answered only after the commit. A failed flush is retried message by
 * message, so a failure fails only the messages it belongs to.
 */
export class SendBatcher {
  readonly #pool: pg.Pool;
  readonly #logger: Logger;
  readonly #maxBatch: number;
  readonly #maxInFlight: number;
  readonly #onFlush: SendBatcherOptions['onFlush'];
  readonly #keyPolicy: () => CommitOptions;
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
    this.#keyPolicy = options.keyPolicy ?? (() => ({ maxMessagesPerKey: 0, activeFingerprint: '', nowUnixSeconds: Math.floor(Date.now() / 1000) }));
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
      const { verdicts, retired } = await this.#commit(batch.map((p) => p.message));
      if (retired.length > 0) this.#onRetired?.(retired);
      this.#onFlush?.(batch.length, (performance.now() - started) / 1000);
      batch.forEach((p, i) => p.resolve(verdicts[i]!));
    } catch (err) {
      if (batch.length === 1) {
        batch[0]!.reject(err);
        return;
      }
      this.#logger.warn({ size: batch.length, err: { message: (err as Error).message, code: (err as { code?: string }).code } }, 'group commit failed; retrying one by one');
      for (const p of batch) await this.#flush([p]);
    }
  }

  /** One call; a deadlock or serialization failure did nothing and runs again. */
  #commit(messages: NewMessage[]) {
    return retryingConflicts(() => commitSendBatch(this.#pool, messages, this.#keyPolicy()));
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
