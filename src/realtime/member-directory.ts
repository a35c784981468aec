import { LRUCache } from 'lru-cache';
import type pg from 'pg';

/**
 * Who is in a conversation, for routing events. Cached briefly in process; a membership change
 * invalidates the entry here and (through the fan-out) on every other instance.
 */
export class MemberDirectory {
  readonly #pool: pg.Pool;
  readonly #cache: LRUCache<string, string[]>;
  readonly #loading = new Map<string, Promise<string[]>>();

  constructor(pool: pg.Pool, options: { max?: number; ttlMs?: number } = {}) {
    this.#pool = pool;
    this.#cache = new LRUCache({ max: options.max ?? 20_000, ttl: options.ttlMs ?? 30_000 });
  }

  async members(conversationId: string): Promise<string[]> {
    const hit = this.#cache.get(conversationId);
    if (hit) return hit;
    let loading = this.#loading.get(conversationId);
    if (!loading) {
      // Concurrent lookups of one conversation share a single query.
      loading = this.#pool
        .query<{ user_id: string }>('SELECT user_id FROM conversation_members WHERE conversation_id = $1', [conversationId])
        .then(({ rows }) => {
          const ids = rows.map((r) => r.user_id);
          if (this.#loading.get(conversationId) === loading) this.#cache.set(conversationId, ids);
          return ids;
        })
        .finally(() => {
          if (this.#loading.get(conversationId) === loading) this.#loading.delete(conversationId);
        });
      this.#loading.set(conversationId, loading);
    }
    return loading;
  }

  /** The conversations a user is a member of (for subscribing their sockets; not cached). */
  async conversationsOf(userId: string): Promise<string[]> {
    const { rows } = await this.#pool.query<{ id: string }>('SELECT conversation_id AS id FROM conversation_members WHERE user_id = $1', [userId]);
    return rows.map((r) => r.id);
  }

  clear(): void {
    this.#cache.clear();
    this.#loading.clear();
  }

  invalidate(conversationId: string): void {
    this.#cache.delete(conversationId);
    this.#loading.delete(conversationId);
  }
}
