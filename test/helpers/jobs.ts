import { readFileSync } from 'node:fs';
import pg from 'pg';
import type { TestDatabase } from './db.js';

// The two master keys of the crypto vectors, and the key settings the job tests switch between.
const VECTORS = JSON.parse(readFileSync(new URL('../fixtures/crypto-vectors.json', import.meta.url), 'utf8'));
export const KEY_A_B64: string = VECTORS.fingerprints[0].master_key_b64;
export const KEY_B_B64: string = VECTORS.fingerprints[1].master_key_b64;
export const FP_A: string = VECTORS.fingerprints[0].fingerprint;
export const FP_B: string = VECTORS.fingerprints[1].fingerprint;

export interface Keys {
  ENCRYPTION_MASTER_KEY: string;
  ENCRYPTION_OLD_MASTER_KEYS: string;
}
export const ON_A: Keys = { ENCRYPTION_MASTER_KEY: KEY_A_B64, ENCRYPTION_OLD_MASTER_KEYS: '' };
export const ON_B_WITH_A: Keys = { ENCRYPTION_MASTER_KEY: KEY_B_B64, ENCRYPTION_OLD_MASTER_KEYS: KEY_A_B64 };
export const ONLY_B: Keys = { ENCRYPTION_MASTER_KEY: KEY_B_B64, ENCRYPTION_OLD_MASTER_KEYS: '' };

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every 25 ms until it holds; `abort` explains an early failure (e.g. a job exited). */
export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number, abort?: () => string | undefined): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    const why = abort?.();
    if (why) throw new Error(`while waiting for ${what}: ${why}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** Holds a row lock on one message in its own transaction, so a job that needs that row waits. */
export async function holdMessageLock(db: TestDatabase, id: string): Promise<{ release(): Promise<void> }> {
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  await client.query('BEGIN');
  await client.query('SELECT id FROM messages WHERE id = $1 FOR UPDATE', [id]);
  return {
    async release() {
      await client.query('ROLLBACK');
      await client.end();
    },
  };
}

/** Sessions of the test database waiting for a lock. */
export async function lockWaiters(pool: pg.Pool, db: TestDatabase): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'`, [db.name]);
  return rows[0]!.n;
}

/** Runs `fn` over `items` with at most `concurrency` calls in flight. */
export async function inParallel<T>(items: T[], concurrency: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}
