import { LRUCache } from 'lru-cache';
import type { Redis } from 'ioredis';
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

type RedisWithTake = Redis & { sotalkTake(key: string, windowMs: number): Promise<[number, number]> };

/**
 * Fixed-window rate limits per (bucket, key). With Redis the counters are shared by every
 * instance; if Redis is unavailable the instance falls back to its own counters (limits stay
 * enforced per instance rather than failing every request).
 */
export class RateLimiter {
  readonly #redis: RedisWithTake | undefined;
  readonly #local = new LRUCache<string, { windowStart: number; count: number }>({ max: 200_000 });
  readonly #clock: () => number;

  constructor(redis?: Redis, clock: () => number = Date.now) {
    this.#clock = clock;
    if (redis) {
      redis.defineCommand('sotalkTake', { numberOfKeys: 1, lua: TAKE_SCRIPT });
      this.#redis = redis as RedisWithTake;
    }
  }

  /** Counts one request; throws 429 `rate_limited` with Retry-After when over the limit. */
  async take(bucket: string, key: string, limit: Limit): Promise<void> {
    if (limit.max <= 0) return;
    const now = this.#clock();
    const window = Math.floor(now / limit.windowMs);
    let count: number;
    let msLeft: number;
    if (this.#redis?.status === 'ready') {
      try {
        // A stalled Redis must not stall every send: after 200 ms count locally instead.
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error('rate limit: redis timeout')), 200);
        });
        try {
          [count, msLeft] = await Promise.race([this.#redis.sotalkTake(`sotalk:rl:${bucket}:${key}:${window}`, limit.windowMs), timeout]);
        } finally {
          clearTimeout(timer);
        }
      } catch {
        [count, msLeft] = this.#takeLocal(bucket, key, window, now, limit);
      }
    } else {
      [count, msLeft] = this.#takeLocal(bucket, key, window, now, limit);
    }
    if (count > limit.max) {
      throw new ApiError('rate_limited', `too many ${bucket} requests; retry later`, undefined, Math.max(1, Math.ceil(msLeft / 1000)));
    }
  }

  #takeLocal(bucket: string, key: string, window: number, now: number, limit: Limit): [number, number] {
    const id = `${bucket}:${key}`;
    const start = window * limit.windowMs;
    const entry = this.#local.get(id);
    if (!entry || entry.windowStart !== start) {
      this.#local.set(id, { windowStart: start, count: 1 });
      return [1, start + limit.windowMs - now];
    }
    entry.count++;
    return [entry.count, start + limit.windowMs - now];
  }
}
