import { hostname } from 'node:os';
import type pg from 'pg';

/** An instance not seen for this long is gone (it refreshes its row every HEARTBEAT_MS). */
export const INSTANCE_STALE_S = 30;
export const HEARTBEAT_MS = 5000;

export interface InstanceRow {
  id: string;
  host: string;
  pid: number;
  started_at: Date;
  last_seen: Date;
  /** Seconds since last_seen, by the database's clock (the instances' clocks may differ). */
  seen_s_ago: number;
  active_fingerprint: string;
  key_fingerprints: string[];
}

/** Every row, oldest instance first: the live ones and those not seen for up to an hour. */
export async function instanceRows(pool: pg.Pool): Promise<InstanceRow[]> {
  const { rows } = await pool.query<InstanceRow>(
    `SELECT id, host, pid, started_at, last_seen, extract(epoch FROM now() - last_seen)::float8 AS seen_s_ago,
            active_fingerprint, key_fingerprints FROM instances ORDER BY started_at`,
  );
  return rows;
}

/** Refreshed its row within INSTANCE_STALE_S seconds. */
export const isLive = (row: InstanceRow) => row.seen_s_ago < INSTANCE_STALE_S;

/**
 * This process's row in `instances`: written once the server listens (`start`), refreshed every
 * HEARTBEAT_MS, deleted on close. Rows of instances gone for an hour are removed on the way. A
 * failed write is retried at the next beat (the server keeps serving).
 */
export class InstanceHeartbeat {
  readonly #pool: pg.Pool;
  readonly #id: string;
  readonly #keys: { active: string; all: string[] };
  readonly #onError: (err: unknown) => void;
  #timer: NodeJS.Timeout | undefined;
  #beat: Promise<void> = Promise.resolve();

  constructor(pool: pg.Pool, id: string, keys: { active: string; all: string[] }, onError: (err: unknown) => void) {
    this.#pool = pool;
    this.#id = id;
    this.#keys = keys;
    this.#onError = onError;
  }

  /** The first row, then a refresh every HEARTBEAT_MS. */
  async start(): Promise<void> {
    this.#beat = this.beat().catch(this.#onError);
    await this.#beat;
    this.#timer = setInterval(() => {
      this.#beat = this.beat().catch(this.#onError);
    }, HEARTBEAT_MS);
    this.#timer.unref();
  }

  async beat(): Promise<void> {
    await this.#pool.query(
      `WITH gone AS (DELETE FROM instances WHERE last_seen < now() - interval '1 hour')
       INSERT INTO instances (id, host, pid, started_at, last_seen, active_fingerprint, key_fingerprints)
       VALUES ($1, $2, $3, now(), now(), $4, $5)
       ON CONFLICT (id) DO UPDATE SET last_seen = now()`,
      [this.#id, hostname(), process.pid, this.#keys.active, this.#keys.all],
    );
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#beat;
    await this.#pool.query('DELETE FROM instances WHERE id = $1', [this.#id]);
  }
}
