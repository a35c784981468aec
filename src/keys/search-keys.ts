import { LRUCache } from 'lru-cache';
import { createSecretKey, type KeyObject } from 'node:crypto';
import { deriveSearchKey, searchToken, searchWords } from '../crypto/search-tokens.js';
import type { MasterKeyring } from './keyring.js';

export interface QueryToken {
  conversationId: string;
  token: Buffer;
  /** Index of the query word the token stands for (all words must match). */
  word: number;
}

/**
 * Blind-index tokens (docs/design.md, search). Search keys are derived per conversation from a master key and
 * cached in process (bounded, zeroed on eviction); they never leave this module.
 */
export class SearchKeys {
  readonly #keyring: MasterKeyring;
  readonly #cache = new LRUCache<string, { raw: Buffer; key: KeyObject }>({ max: 20_000, dispose: (e) => e.raw.fill(0) });
  /**
   * Recent tokens by (master key, conversation, word): chat vocabulary repeats (Zipf), and one
   * HMAC costs ~3 µs in Node 20's OpenSSL 3. Bounded; in process memory only, like the derived keys.
   */
  readonly #tokens = new TokenCache(100_000);

  constructor(keyring: MasterKeyring) {
    this.#keyring = keyring;
  }

  get activeFingerprint(): string {
    return this.#keyring.active.fingerprint;
  }

  #key(fingerprint: string, conversationId: string): KeyObject | undefined {
    const id = `${fingerprint}:${conversationId}`;
    const hit = this.#cache.get(id);
    if (hit) return hit.key;
    const master = this.#keyring.get(fingerprint);
    if (!master) return undefined;
    const raw = deriveSearchKey(master, conversationId);
    const key = createSecretKey(raw);
    this.#cache.set(id, { raw, key });
    return key;
  }

  /** Tokens of a message's distinct words under the active master key. */
  tokensFor(conversationId: string, text: string): Buffer[] {
    return this.tokensUnder(this.activeFingerprint, conversationId, text)!;
  }

  /** Tokens of `fingerprint` for a text, or undefined when that master key is not held. */
  tokensUnder(fingerprint: string, conversationId: string, text: string): Buffer[] | undefined {
    return this.wordTokensUnder(fingerprint, conversationId, searchWords(text));
  }

  /** Tokens of given words (a query's) under one master key, or undefined when it is not held. */
  wordTokensUnder(fingerprint: string, conversationId: string, words: string[]): Buffer[] | undefined {
    const key = this.#key(fingerprint, conversationId);
    if (!key) return undefined;
    const scope = this.#tokens.scope(`${fingerprint}:${conversationId}`);
    return words.map((w) => {
      let token = scope.get(w);
      if (!token) this.#tokens.add(scope, w, (token = searchToken(key, w)));
      return token;
    });
  }

  fingerprints(): string[] {
    return this.#keyring.fingerprints();
  }

  /**
   * Query tokens for each conversation and word under every master key held, so messages
   * indexed before a master-key rotation finished are still found.
   */
  queryTokens(conversationIds: string[], words: string[]): QueryToken[] {
    const out: QueryToken[] = [];
    for (const fingerprint of this.#keyring.fingerprints()) {
      for (const conversationId of conversationIds) {
        this.wordTokensUnder(fingerprint, conversationId, words)!.forEach((token, word) => out.push({ conversationId, token, word }));
      }
    }
    return out;
  }
}

/**
 * Tokens grouped by (master key, conversation): a message's words are looked up in its
 * conversation's own Map by the word alone — one lookup of the scope per message instead of a
 * long "fingerprint:conversation:word" key built, hashed and LRU-ordered per word (that cost
 * ~0.6 µs a word, more than half of a message's indexing). Scopes are kept in least-recently-used
 * order; when more than `max` tokens are held, whole scopes are dropped, oldest first, down to 90 %.
 */
export class TokenCache {
  readonly #scopes = new Map<string, Map<string, Buffer>>();
  #count = 0;

  constructor(readonly max: number) {}

  /** The scope's tokens, marked as the most recently used. */
  scope(id: string): Map<string, Buffer> {
    let scope = this.#scopes.get(id);
    if (scope) this.#scopes.delete(id);
    else scope = new Map();
    this.#scopes.set(id, scope); // re-inserted: Map order is use order
    return scope;
  }

  add(scope: Map<string, Buffer>, word: string, token: Buffer): void {
    scope.set(word, token);
    if (++this.#count > this.max) this.#evict();
  }

  /** Tokens held (for tests). */
  get size(): number {
    return this.#count;
  }

  #evict(): void {
    const target = Math.floor(this.max * 0.9);
    let left = this.#scopes.size;
    for (const [id, scope] of this.#scopes) {
      if (this.#count <= target) break;
      this.#count -= scope.size;
      scope.clear();
      // the newest scope (the one being filled) stays, emptied, so the count stays exact
      if (--left > 0) this.#scopes.delete(id);
    }
  }
}
