import { LRUCache } from 'lru-cache';
import { Cluster } from 'ioredis';
import type { RedisClient } from '../redis.js';
import { ApiError } from '../errors.js';

export interface Limit {
  /** Requests allowed per window; 0 disables the limit. */
  max: number;
  windowMs: number;
}

// INCR the window's counter, set its expiry on first use; returns {count, ms left}.
const TAKE_SCRIPT = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
return {n, ttl}`;

// Adds each key's increment (ARGV[i + 1]), sets the expiry (ARGV[1] ms) of counters it creates,
// returns every key's total: one command for everything an instance counted since its last sync.
const SYNC_SCRIPT = `
local out = {}
for i, key in ipairs(KEYS) do
  local add = tonumber(ARGV[i + 1])
  local n = redis.call('INCRBY', key, add)
  if n == add then redis.call('PEXPIRE', key, ARGV[1]) end
  out[i] = n
end
return out`;

/** Most keys per sync command. */
const SYNC_CHUNK = 1000;
/**
 * On a Redis Cluster a script's keys must share a hash slot: keys carry one of this many hash tags
 * (`sotalk:rl:{7}:…`, picked from bucket and key), spread over the shards, and a sync sends one
 * command per tag with counted takes. On one server keys carry no tag and a sync is one command.
 */
const CLUSTER_KEY_GROUPS = 16;

type RedisWithScripts = RedisClient & {
  sotalkTake(key: string, windowMs: number): Promise<[number, number]>;
  sotalkSync(...args: (string | number)[]): Promise<number[]>;
};

interface Counter {
  redisKey: string;
  /** The key's hash tag group (0 on one server). */
  group: number;
  windowStart: number;
  windowMs: number;
  /** The shared total as Redis last reported it (everyone's takes, ours included). */
  synced: number;
  /** Our takes Redis has not heard of yet. */
  local: number;
  /** Our takes on their way to Redis in the sync running now. */
  sending: number;
}

export interface RateLimiterOptions {
  clock?: () => number;
  /** How often counted takes are sent to Redis (ms). */
  syncMs?: number;
  /** A Redis call that does not answer within this is given up (counting stays local). */
  redisTimeoutMs?: number;
}

/** What the limiter did, for benchmarks and tests. */
export interface RateLimiterStats {
  /** Sync commands sent (one per interval with takes — one per 1,000 keys and, on a cluster, per hash tag —, plus early ones for busy keys). */
  syncs: number;
  /** Takes counted in Redis one by one (limits too small for an allowance). */
  exactTakes: number;
  /** Sync commands that failed, exact takes that failed or timed out. */
  redisFailures: number;
}

/**
 * Fixed-window rate limits per (bucket, key), shared by every instance through Redis without a
 * Redis round trip per request. Each instance counts takes locally and sends the counts of every
 * key touched to Redis in one command every `syncMs` (50 ms), learning the shared totals back; a
 * decision uses the last shared total plus the takes Redis has not confirmed yet. An instance holds
 * at most `allowance = floor(max × syncMs / window)` unconfirmed takes of a key (a take beyond that
 * waits for a sync, so concurrent takes too), hence across N instances a key overshoots its limit
 * by at most N × allowance (for the default 6,000 sends a minute: 5 per instance). Limits too small
 * for an allowance of 1 (sign-ins, typing) are counted in Redis on every take, exactly. One sync is
 * in flight at a time, even when Redis stalls: a stalled sync's takes stay counted locally and are
 * never sent twice. If Redis is down or does not answer within `redisTimeoutMs`, takes stop waiting
 * for it and limits are enforced per instance; the counts reach Redis once it answers again.
 */
export class RateLimiter {
  readonly #redis: RedisWithScripts | undefined;
  readonly #keyGroups: number;
  readonly #counters = new LRUCache<string, Counter>({ max: 200_000 });
  readonly #dirty = new Set<Counter>();
  readonly #clock: () => number;
  readonly #syncMs: number;
  readonly #timeoutMs: number;
  readonly #timer: NodeJS.Timeout | undefined;
  readonly #stats: RateLimiterStats = { syncs: 0, exactTakes: 0, redisFailures: 0 };
  /** The sync command in flight (settles when Redis answers or fails, however late). */
  #syncing: Promise<void> | undefined;
  #syncStartedAt = 0;
  /** False after a Redis call failed or was slower than the timeout, until a sync succeeds: takes then stop waiting for Redis. */
  #answering = true;

  constructor(redis?: RedisClient, options: RateLimiterOptions | (() => number) = {}) {
    const o = typeof options === 'function' ? { clock: options } : options;
    this.#clock = o.clock ?? Date.now;
    this.#syncMs = o.syncMs ?? 50;
    this.#timeoutMs = o.redisTimeoutMs ?? 200;
    this.#keyGroups = redis instanceof Cluster ? CLUSTER_KEY_GROUPS : 1;
    if (redis) {
      redis.defineCommand('sotalkTake', { numberOfKeys: 1, lua: TAKE_SCRIPT });
      redis.defineCommand('sotalkSync', { lua: SYNC_SCRIPT });
      // Auto-pipelining groups a command it does not know by its first argument: for the sync
      // script that is the key count, not a key, so on a cluster the sync would share a pipeline
      // with commands for other shards and fail it (publishes included). It goes on its own there.
      if (redis instanceof Cluster) redis.options.autoPipeliningIgnoredCommands = [...(redis.options.autoPipeliningIgnoredCommands ?? []), 'sotalkSync'];
      this.#redis = redis as RedisWithScripts;
      this.#timer = setInterval(() => this.#tick(), this.#syncMs);
      this.#timer.unref();
    }
  }

  get stats(): Readonly<RateLimiterStats> {
    return this.#stats;
  }

  /** Counts one request; throws 429 `rate_limited` with Retry-After when over the limit. */
  async take(bucket: string, key: string, limit: Limit): Promise<void> {
    if (limit.max <= 0) return;
    const now = this.#clock();
    const window = Math.floor(now / limit.windowMs);
    const msLeft = (window + 1) * limit.windowMs - now;
    const allowance = Math.floor((limit.max * this.#syncMs) / limit.windowMs);
    if (allowance < 1 && this.#usable()) {
      const exact = await this.#takeExact(this.#redisKey(bucket, key, window).key, limit.windowMs);
      if (exact !== undefined) return this.#decide(exact, limit, msLeft, bucket);
    }
    const counter = this.#counter(bucket, key, window, limit.windowMs);
    // This instance holds its whole unconfirmed allowance of the key: wait until Redis has it
    // (each take re-checks after the wait, so concurrent ones do not all slip through one sync).
    while (allowance >= 1 && counter.sending + counter.local >= allowance && this.#usable()) await this.#awaitSync();
    const count = counter.synced + counter.sending + counter.local + 1;
    if (count > limit.max) this.#decide(count, limit, msLeft, bucket);
    counter.local++;
    this.#dirty.add(counter);
  }

  #decide(count: number, limit: Limit, msLeft: number, bucket: string): void {
    if (count > limit.max) {
      throw new ApiError('rate_limited', `too many ${bucket} requests; retry later`, undefined, Math.max(1, Math.ceil(msLeft / 1000)));
    }
  }

  #counter(bucket: string, key: string, window: number, windowMs: number): Counter {
    const id = `${bucket}:${key}`;
    const start = window * windowMs;
    let counter = this.#counters.get(id);
    if (!counter || counter.windowStart !== start) {
      if (counter) this.#dirty.delete(counter); // the old window's unsent takes no longer matter
      const { key: redisKey, group } = this.#redisKey(bucket, key, window);
      counter = { redisKey, group, windowStart: start, windowMs, synced: 0, local: 0, sending: 0 };
      this.#counters.set(id, counter);
    }
    return counter;
  }

  #redisKey(bucket: string, key: string, window: number): { key: string; group: number } {
    if (this.#keyGroups === 1) return { key: `sotalk:rl:${bucket}:${key}:${window}`, group: 0 };
    const group = fnv1a(`${bucket}:${key}`) % this.#keyGroups;
    return { key: `sotalk:rl:{${group}}:${bucket}:${key}:${window}`, group };
  }

  #usable(): boolean {
    return this.#answering && this.#redis?.status === 'ready';
  }

  #tick(): void {
    // A sync still unanswered after the timeout: Redis is stalled, takes stop waiting for it.
    if (this.#syncing && performance.now() - this.#syncStartedAt > this.#timeoutMs) this.#answering = false;
    void this.sync();
  }

  /** One take counted in Redis at once (small limits): the shared count, or undefined when Redis does not answer in time. */
  async #takeExact(redisKey: string, windowMs: number): Promise<number | undefined> {
    this.#stats.exactTakes++;
    try {
      const [count] = await this.#withTimeout(this.#redis!.sotalkTake(redisKey, windowMs));
      this.#answering = true;
      return count;
    } catch {
      this.#stats.redisFailures++;
      this.#answering = false;
      return undefined;
    }
  }

  /** Waits for a sync (starting one if none runs) at most the timeout; a slower one marks Redis as not answering. */
  async #awaitSync(): Promise<void> {
    try {
      await this.#withTimeout(this.sync());
    } catch {
      this.#answering = false;
    }
  }

  async #withTimeout<T>(work: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('rate limit: redis timeout')), this.#timeoutMs);
    });
    try {
      return await Promise.race([work, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Sends every counted take to Redis in one command and learns the totals. One sync at a time:
   * while one is in flight (however long Redis takes), this returns it rather than sending again.
   */
  sync(): Promise<void> {
    if (!this.#syncing && this.#dirty.size > 0 && this.#redis?.status === 'ready') {
      this.#syncStartedAt = performance.now();
      this.#syncing = this.#send(this.#redis).finally(() => (this.#syncing = undefined));
    }
    return this.#syncing ?? Promise.resolve();
  }

  async #send(redis: RedisWithScripts): Promise<void> {
    const groups = new Map<number, Counter[]>();
    for (const c of this.#dirty) {
      const group = groups.get(c.group);
      if (group) group.push(c);
      else groups.set(c.group, [c]);
    }
    this.#dirty.clear();
    const sends: Promise<void>[] = [];
    // A script blocks Redis while it runs: at most SYNC_CHUNK keys each (~1 ms), sent together.
    for (const batch of groups.values()) {
      for (let i = 0; i < batch.length; i += SYNC_CHUNK) sends.push(this.#sendChunk(redis, batch.slice(i, i + SYNC_CHUNK)));
    }
    await Promise.all(sends);
  }

  async #sendChunk(redis: RedisWithScripts, chunk: Counter[]): Promise<void> {
    for (const c of chunk) {
      c.sending = c.local;
      c.local = 0;
    }
    const windowMs = Math.max(...chunk.map((c) => c.windowMs));
    this.#stats.syncs++;
    try {
      const totals = await redis.sotalkSync(chunk.length, ...chunk.map((c) => c.redisKey), windowMs + 1000, ...chunk.map((c) => c.sending));
      chunk.forEach((c, i) => {
        c.synced = Number(totals[i] ?? c.synced + c.sending);
        c.sending = 0;
      });
      this.#answering = true;
    } catch {
      this.#stats.redisFailures++;
      this.#answering = false;
      // Redis refused it or the connection failed: keep the takes local, to be sent with the next sync.
      for (const c of chunk) {
        c.local += c.sending;
        c.sending = 0;
        if (c.local > 0) this.#dirty.add(c);
      }
    }
  }

  /** Stops the sync timer after sending what is counted (waiting for Redis at most the timeout). */
  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    await this.#withTimeout(this.sync()).catch(() => {});
  }
}

/** 32-bit FNV-1a of a string's UTF-16 code units: a cheap, stable spread of keys over hash tags. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** What is limited: per user, except `signin` (per wallet, proven sign-ins) and `signin-address` (per client address). */
export type LimitName =
  | 'send'
  | 'typing'
  | 'signin'
  | 'signin-address'
  | 'edit'
  | 'delete'
  | 'rotate-key'
  | 'create-conversation'
  | 'member-change'
  | 'receipt'
  | 'search';

/** The server's named limits (requests a minute; 0 disables each) over one shared RateLimiter. */
export class RateLimits {
  readonly #limiter: RateLimiter;
  readonly #limits: Record<LimitName, Limit>;

  constructor(limiter: RateLimiter, perMinute: Record<LimitName, number>) {
    this.#limiter = limiter;
    this.#limits = Object.fromEntries(Object.entries(perMinute).map(([name, max]) => [name, { max, windowMs: 60_000 }])) as Record<LimitName, Limit>;
  }

  /** Counts one request of `name` for `key`; throws 429 `rate_limited` with Retry-After beyond the limit. */
  take(name: LimitName, key: string): Promise<void> {
    return this.#limiter.take(name, key, this.#limits[name]);
  }
}
