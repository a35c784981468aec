import { LRUCache } from 'lru-cache';
import type { HistoryVersion } from '../db/messages.js';
import type { DecryptedRow } from './message-view.js';

export interface CachedPage {
  version: HistoryVersion;
  rows: DecryptedRow[];
  hasMore: boolean;
  /** Receipts read with the page, and the member it was loaded for (membership proven for them). */
  members: { user_id: string; delivered_seq: number; read_seq: number }[];
  loadedFor: string;
}

const pageBytes = (p: CachedPage) => 256 + p.rows.reduce((n, r) => n + 400 + (r.content?.length ?? 0) * 2, 0);

/**
 * Decrypted history pages of busy conversations (what Discord does for hot channels): identical
 * concurrent reads share one query and one decryption, and a page is served again while the
 * conversation's history version (last_seq, edit count) is unchanged — checked against the
 * database on every read, so an edit or send on any instance invalidates it. Bounded in bytes.
 */
export class HistoryCache {
  readonly #pages: LRUCache<string, CachedPage>;
  readonly #loading = new Map<string, Promise<CachedPage | undefined>>();

  readonly #enabled: boolean;

  /**
   * `ttlMs` bounds how long plaintext verified at decryption time is served again without
   * re-reading the row: a change made behind the server's back (a byte flipped in the database)
   * shows up as an integrity error at most that much later. `maxBytes` 0 disables the cache
   * (concurrent identical reads are still coalesced).
   */
  constructor(options: { maxBytes?: number; ttlMs?: number } = {}) {
    const maxBytes = options.maxBytes ?? 64 * 1024 * 1024;
    this.#enabled = maxBytes > 0 && (options.ttlMs ?? 2000) > 0;
    this.#pages = new LRUCache({ maxSize: Math.max(1, maxBytes), sizeCalculation: pageBytes, ttl: options.ttlMs ?? 2000 });
  }

  peek(key: string): CachedPage | undefined {
    return this.#pages.get(key);
  }

  /** Loads a page once for all concurrent callers; keeps it when it has a version. */
  load(key: string, loader: () => Promise<CachedPage | undefined>): Promise<CachedPage | undefined> {
    let pending = this.#loading.get(key);
    if (!pending) {
      pending = loader()
        .then((page) => {
          // A page with an integrity error is not kept: a repaired row must read fine at once.
          if (page && this.#enabled && !page.rows.some((r) => r.integrityError)) this.#pages.set(key, page);
          return page;
        })
        .finally(() => this.#loading.delete(key));
      this.#loading.set(key, pending);
    }
    return pending;
  }

  clear(): void {
    this.#pages.clear();
  }
}
