import type pg from 'pg';

/**
 * Merges the search index's GIN pending list in the background, every `intervalMs`. New rows are
 * appended to that list (cheap); when it outgrows `gin_pending_list_limit` the inserting
 * transaction — a group commit holding its conversations' locks — would merge it itself and
 * stall every send behind it for a second or more. Merging often and elsewhere keeps the list
 * short and the stalls away.
 */
export class SearchIndexMaintenance {
  readonly #timer: NodeJS.Timeout;
  #running: Promise<unknown> | undefined;

  constructor(pool: pg.Pool, intervalMs = 1000, onError?: (err: unknown) => void) {
    this.#timer = setInterval(() => {
      this.#running ??= pool
        .query("SELECT gin_clean_pending_list('message_search_index_tokens'::regclass)")
        .catch((err: unknown) => onError?.(err))
        .finally(() => (this.#running = undefined));
    }, intervalMs);
    this.#timer.unref();
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#running;
  }
}
