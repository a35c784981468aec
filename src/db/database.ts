import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';

/** Postgres int8 → JS number: seqs and counts stay far below 2^53. */
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

export interface Database {
  pool: pg.Pool;
  embedded: boolean;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  databaseUrl: string | undefined;
  dataDir: string;
  maxConnections?: number;
  /** An idle connection failed (Postgres restarted or went away). */
  onConnectionError?: () => void;
}

/** A `pg` pool on DATABASE_URL, or on an embedded PGlite database served over a local socket. */
export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  if (options.databaseUrl) {
    const pool = new pg.Pool({
      connectionString: options.databaseUrl,
      max: options.maxConnections ?? 16,
      // Fail fast while Postgres is down: requests answer 503 instead of queueing.
      connectionTimeoutMillis: 2000,
    });
    // An idle client lost its connection (e.g. Postgres restarted); the pool replaces it.
    pool.on('error', () => options.onConnectionError?.());
    return { pool, embedded: false, close: () => pool.end() };
  }
  return openEmbedded(options.dataDir);
}

function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    return process.kill(pid, 0);
  } catch {
    return false;
  }
}

/** One process per embedded database: a second one would corrupt it. Returns the unlock function. */
function lockDataDir(dataDir: string): () => void {
  const file = join(dataDir, 'pgdata.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(file, String(process.pid), { flag: 'wx' });
      return () => rmSync(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number(readFileSync(file, 'utf8'));
      if (pid !== process.pid && processAlive(pid)) {
        throw new Error(`the embedded database in ${dataDir} is in use by process ${pid}; stop it or set SOTALK_DATA_DIR`, { cause: err });
      }
      rmSync(file, { force: true }); // left by a process that died
    }
  }
  throw new Error(`cannot lock the embedded database in ${dataDir}`);
}

async function openEmbedded(dataDir: string): Promise<Database> {
  const { PGlite } = await import('@electric-sql/pglite');
  const { PGLiteSocketServer } = await import('@electric-sql/pglite-socket');
  const dir = join(dataDir, 'pgdata');
  mkdirSync(dir, { recursive: true });
  const unlock = lockDataDir(dataDir);
  const db = await PGlite.create(dir);
  const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port: 0 });
  await server.start();
  const address = server.getServerConn();
  // PGlite is a single session: one connection, or two clients' transactions would interleave.
  const pool = new pg.Pool({ connectionString: `postgresql://postgres@${address}/postgres`, max: 1 });
  pool.on('error', () => {});
  return {
    pool,
    embedded: true,
    async close() {
      await pool.end();
      await server.stop();
      await db.close();
      unlock();
    },
  };
}

/** Where the data lives, for logs and the CLI: `postgres host:port/db` (never credentials) or `embedded at PATH`. */
export function describeDatabase(options: { databaseUrl: string | undefined; dataDir: string }): string {
  if (!options.databaseUrl) return `embedded at ${join(options.dataDir, 'pgdata')}`;
  const url = new URL(options.databaseUrl);
  const host = url.hostname || new URLSearchParams(url.search).get('host') || 'localhost';
  return `postgres ${host}:${url.port || 5432}${url.pathname || '/'}`;
}

/** Errors that mean "the database is not there (yet)", as opposed to a wrong query or a refusal. */
function unreachable(err: unknown): boolean {
  const code = (err as { code?: string })?.code;
  return (
    ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', '57P03'].includes(code ?? '') ||
    /timeout exceeded when trying to connect|Connection terminated/i.test((err as Error)?.message ?? '')
  );
}

/** One line naming the database and the cause, for an operator. */
export class DatabaseUnreachableError extends Error {}

/**
 * Runs `first` (the first query) until the database answers: an unreachable database is retried
 * with backoff (0.5 s doubling up to 5 s), each attempt logged in one line, for at most
 * `timeoutS` seconds; then a DatabaseUnreachableError. Other errors pass through at once.
 */
export async function untilReachable<T>(
  first: () => Promise<T>,
  where: string,
  logger: { warn(obj: object, msg: string): void },
  timeoutS: number,
): Promise<T> {
  const deadline = Date.now() + timeoutS * 1000;
  for (let attempt = 1, delay = 500; ; attempt++, delay = Math.min(delay * 2, 5000)) {
    try {
      return await first();
    } catch (err) {
      if (!unreachable(err)) throw err;
      const cause = (err as { code?: string }).code ?? (err as Error).message;
      if (Date.now() + delay > deadline) throw new DatabaseUnreachableError(`database ${where} unreachable (${cause}) after ${attempt} attempts`);
      logger.warn({ attempt, retryInMs: delay, cause }, `database ${where} unreachable; retrying`);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}
