import { LRUCache } from 'lru-cache';
import type pg from 'pg';
import { findKeyVersion, findNewestVersionUnder, rotateConversationKey } from '../db/conversations.js';
import type { KeyRef } from './conversation-keys.js';
import type { MasterKeyring } from './keyring.js';
import type { Queryable } from '../db/transaction.js';

/**
 * Conversation key versions (which master key, which timestamp) as KeyRefs. Rows never change
 * once written, so they are cached without expiry, bounded in count.
 */
export class KeyVersions {
  readonly #pool: pg.Pool;
  readonly #keyring: MasterKeyring;
  readonly #clock: () => Date;
  readonly #cache = new LRUCache<string, KeyRef>({ max: 50_000 });

  readonly #maxMessages: number;
  readonly #maxAgeS: number;

  /**
   * `maxMessages` / `maxAgeS` retire a key version after that many messages or seconds (0: never
   * by that measure); the next message then creates and uses a new version.
   */
  constructor(pool: pg.Pool, keyring: MasterKeyring, clock: () => Date, limits: { maxMessages?: number; maxAgeS?: number } = {}) {
    this.#pool = pool;
    this.#keyring = keyring;
    this.#clock = clock;
    this.#maxMessages = limits.maxMessages ?? 0;
    this.#maxAgeS = limits.maxAgeS ?? 0;
  }

  /** In a group commit's transaction: makes a new version current when `version` is full. */
  retireIfFull = async (client: Queryable, conversationId: string, version: number, messageCount: number): Promise<boolean> => {
    if (this.#maxMessages <= 0 || messageCount < this.#maxMessages) return false;
    return (await rotateConversationKey(client, conversationId, this.activeFingerprint, this.nowUnixSeconds(), 'count', version)) !== undefined;
  };

  /** What the group commit needs to retire full versions itself (sotalk_send_batch). */
  commitPolicy = (): { maxMessagesPerKey: number; activeFingerprint: string; nowUnixSeconds: number } => ({
    maxMessagesPerKey: this.#maxMessages,
    activeFingerprint: this.activeFingerprint,
    nowUnixSeconds: this.nowUnixSeconds(),
  });

  nowUnixSeconds(): number {
    return Math.floor(this.#clock().getTime() / 1000);
  }

  get activeFingerprint(): string {
    return this.#keyring.active.fingerprint;
  }

  remember(ref: KeyRef): void {
    this.#cache.set(`${ref.conversationId}:${ref.version}`, ref);
  }

  async #newestUnderActive(conversationId: string): Promise<KeyRef | undefined> {
    const row = await findNewestVersionUnder(this.#pool, conversationId, this.activeFingerprint);
    if (!row) return undefined;
    const ref: KeyRef = { conversationId, version: row.version, createdUnixSeconds: row.created_unix_seconds, fingerprint: row.master_key_fingerprint };
    this.remember(ref);
    return ref;
  }

  async get(conversationId: string, version: number): Promise<KeyRef> {
    const id = `${conversationId}:${version}`;
    const hit = this.#cache.get(id);
    if (hit) return hit;
    const row = await findKeyVersion(this.#pool, conversationId, version);
    if (!row) throw new Error(`conversation ${conversationId} has no key version ${version}`);
    const ref: KeyRef = { conversationId, version, createdUnixSeconds: row.created_unix_seconds, fingerprint: row.master_key_fingerprint };
    this.#cache.set(id, ref);
    return ref;
  }

  #expired(ref: KeyRef): boolean {
    return this.#maxAgeS > 0 && ref.createdUnixSeconds + this.#maxAgeS <= this.nowUnixSeconds();
  }

  /**
   * The version new messages use. Normally the conversation's current one. When that is under
   * another master key this process holds — the next key of a rolling deploy, or the previous one
   * — the newest version under our own active key, if there is one (so instances on either side
   * of a deploy do not create a version per message). Otherwise, or when the version is too old,
   * a new version under the active key, created once even under races (compare-and-set).
   */
  async forEncryption(conversationId: string, currentVersion: number): Promise<KeyRef> {
    const ref = await this.get(conversationId, currentVersion);
    const expired = this.#expired(ref);
    if (ref.fingerprint === this.activeFingerprint && !expired) return ref;
    if (!expired && this.#keyring.get(ref.fingerprint)) {
      const own = await this.#newestUnderActive(conversationId);
      if (own && !this.#expired(own)) return own;
    }
    const origin = expired && ref.fingerprint === this.activeFingerprint ? 'age' : 'master';
    const created = await rotateConversationKey(this.#pool, conversationId, this.activeFingerprint, this.nowUnixSeconds(), origin, currentVersion);
    if (created !== undefined) return this.get(conversationId, created);
    // Another sender rotated first: use what is current now.
    const { rows } = await this.#pool.query<{ v: number }>('SELECT current_key_version AS v FROM conversations WHERE id = $1', [conversationId]);
    return this.forEncryption(conversationId, rows[0]!.v);
  }
}
