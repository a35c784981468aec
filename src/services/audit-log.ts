import type pg from 'pg';
import { insertAuditRows, type AuditEntry, type AuditPurpose } from '../db/audit.js';
import type { Logger } from '../log.js';

export interface AuditLogOptions {
  pool: pg.Pool;
  logger: Logger;
  clock: () => Date;
  /** Flush when this many rows are pending… */
  maxBatch?: number;
  /** …or after this long. */
  flushIntervalMs?: number;
}

/**
 * Decryption audit rows, written in batches (one INSERT per flush) off the request path. Rows that
 * fail to write are kept and retried at the next flush; close() flushes what is pending.
 */
export class AuditLog {
  readonly #pool: pg.Pool;
  readonly #logger: Logger;
  readonly #clock: () => Date;
  readonly #maxBatch: number;
  readonly #intervalMs: number;
  #pending: AuditEntry[] = [];
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;

  constructor(options: AuditLogOptions) {
    this.#pool = options.pool;
    this.#logger = options.logger;
    this.#clock = options.clock;
    this.#maxBatch = options.maxBatch ?? 500;
    this.#intervalMs = options.flushIntervalMs ?? 50;
  }

  /** Rows waiting to be written (the `sotalk_audit_backlog` gauge). */
  get backlog(): number {
    return this.#pending.length;
  }

  record(actorId: string | null, conversationId: string, messageCount: number, purpose: AuditPurpose, requestId: string | null): void {
    if (messageCount <= 0) return;
    this.#pending.push({ actorId, conversationId, messageCount, purpose, requestId, occurredAt: this.#clock() });
    if (this.#pending.length >= this.#maxBatch) void this.flush();
    else this.#timer ??= setTimeout(() => void this.flush(), this.#intervalMs);
  }

  /** Writes everything pending; resolves when the rows are committed (or failed and re-queued). */
  async flush(): Promise<void> {
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    while (this.#flushing) await this.#flushing;
    if (this.#pending.length === 0) return;
    const batch = this.#pending;
    this.#pending = [];
    this.#flushing = insertAuditRows(this.#pool, batch)
      .catch((err: unknown) => {
        this.#logger.error({ rows: batch.length, err: { message: (err as Error).message } }, 'audit flush failed; will retry');
        this.#pending = batch.concat(this.#pending);
        this.#timer ??= setTimeout(() => void this.flush(), 1000);
      })
      .finally(() => {
        this.#flushing = undefined;
      });
    await this.#flushing;
  }

  async close(): Promise<void> {
    await this.flush();
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
