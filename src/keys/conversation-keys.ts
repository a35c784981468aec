import { LRUCache } from 'lru-cache';
import { createSecretKey, type KeyObject } from 'node:crypto';
import { deriveConversationKey } from '../crypto/kdf.js';
import type { MasterKeyring } from './keyring.js';

/** Names one conversation key version; carries no key material. */
export interface KeyRef {
  conversationId: string;
  version: number;
  createdUnixSeconds: number;
  fingerprint: string;
}

export interface ConversationKeyCacheOptions {
  max?: number;
  ttlMs?: number;
}

/**
 * Derived conversation keys, cached in process (bounded LRU with TTL). Raw bytes are zeroed when
 * an entry leaves the cache. Returns undefined when the master key of a version is not held.
 */
export class ConversationKeyCache {
  readonly #keyring: MasterKeyring;
  readonly #cache: LRUCache<string, { raw: Buffer; key: KeyObject }>;

  constructor(keyring: MasterKeyring, options: ConversationKeyCacheOptions = {}) {
    this.#keyring = keyring;
    this.#cache = new LRUCache({
      max: options.max ?? 10_000,
      ttl: options.ttlMs ?? 60 * 60 * 1000,
      dispose: (entry) => entry.raw.fill(0),
    });
  }

  get(ref: KeyRef): KeyObject | undefined {
    const id = `${ref.conversationId}:${ref.version}:${ref.createdUnixSeconds}:${ref.fingerprint}`;
    const hit = this.#cache.get(id);
    if (hit) return hit.key;
    const master = this.#keyring.get(ref.fingerprint);
    if (!master) return undefined;
    const raw = deriveConversationKey(master, ref.conversationId, ref.createdUnixSeconds, ref.version);
    const key = createSecretKey(raw);
    this.#cache.set(id, { raw, key });
    return key;
  }

  get size(): number {
    return this.#cache.size;
  }

  clear(): void {
    this.#cache.clear();
  }
}
