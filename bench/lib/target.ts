// The server under test: either one this process spawns (fresh database, random master key,
// dropped afterwards) or one already running at --url. Also reads its Prometheus /metrics.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const DEFAULT_ADMIN_URL = 'postgresql://postgres@127.0.0.1:5432/postgres';
/** Server log lines at warn level or above echoed to stderr; the rest are only counted. */
const MAX_WARNINGS = 20;

export interface Target {
  baseUrl: string;
  wsUrl: string;
  host: string;
  port: number;
  /** Postgres of the server, for the bare-pg ceilings; undefined when unknown (--url without --pg-url). */
  pgUrl: string | undefined;
  spawned: boolean;
  /** What the server said about itself at start (pool size, native uWS…), when spawned. */
  serverInfo: Record<string, unknown>;
  /** Log lines at warn level or above the spawned server printed so far. */
  warnings(): number;
  /** Stops the spawned server and drops its database; idempotent. */
  close(): Promise<void>;
}

export interface TargetOptions {
  url?: string;
  pgUrl?: string;
  logLevel: string;
  /** Use DATABASE_URL's database as is (no CREATE / DROP). */
  dbAsIs: boolean;
  /** Extra environment for the spawned server (e.g. CRYPTO_POOL_SIZE). */
  env?: Record<string, string>;
}

export async function openTarget(o: TargetOptions): Promise<Target> {
  if (o.url) {
    const u = new URL(o.url);
    if (u.protocol !== 'http:') throw new Error('--url must be http://host:port');
    const base = `${u.protocol}//${u.host}`;
    const res = await fetch(`${base}/healthz`).catch((err: Error) => {
      throw new Error(`no server at ${base}: ${err.message}`);
    });
    if (!res.ok) throw new Error(`${base}/healthz answered ${res.status}`);
    return {
      baseUrl: base,
      wsUrl: `ws://${u.host}/ws`,
      host: u.hostname,
      port: Number(u.port || 80),
      pgUrl: o.pgUrl,
      spawned: false,
      serverInfo: {},
      warnings: () => 0,
      close: async () => {},
    };
  }
  return spawnServer(o);
}

async function spawnServer(o: TargetOptions): Promise<Target> {
  const admin = process.env.BENCH_DATABASE_URL || process.env.DATABASE_URL || DEFAULT_ADMIN_URL;
  let dbUrl = admin;
  let dbName: string | undefined;
  if (!o.dbAsIs) {
    dbName = `sotalk_bench_${randomBytes(5).toString('hex')}`;
    await adminQuery(admin, `CREATE DATABASE ${dbName}`);
    const u = new URL(admin);
    u.pathname = `/${dbName}`;
    dbUrl = u.toString();
  }
  const dataDir = mkdtempSync(join(tmpdir(), 'sotalk-bench-'));
  const env: Record<string, string | undefined> = {
    ...process.env,
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: o.logLevel,
    DATABASE_URL: dbUrl,
    ENCRYPTION_MASTER_KEY: randomBytes(32).toString('base64'),
    ENCRYPTION_OLD_MASTER_KEYS: '',
    SOTALK_DATA_DIR: dataDir,
    // A benchmark sends far more than a person does; the per-user limit would cap it.
    RATE_LIMIT_SEND_PER_MIN: process.env.RATE_LIMIT_SEND_PER_MIN ?? '0',
    // Hundreds of simulated users sign in from one address and set up their conversations at once.
    RATE_LIMIT_SIGNIN_PER_ADDRESS_PER_MIN: process.env.RATE_LIMIT_SIGNIN_PER_ADDRESS_PER_MIN ?? '0',
    RATE_LIMIT_CREATE_CONVERSATION_PER_MIN: process.env.RATE_LIMIT_CREATE_CONVERSATION_PER_MIN ?? '0',
    RATE_LIMIT_RECEIPT_PER_MIN: process.env.RATE_LIMIT_RECEIPT_PER_MIN ?? '0',
    RATE_LIMIT_SEARCH_PER_MIN: process.env.RATE_LIMIT_SEARCH_PER_MIN ?? '0',
    ...o.env,
  };
  // Its own process group: a Ctrl-C in the terminal reaches only this process, which stops the
  // load first and then the server (SIGTERM), instead of the server dying under load.
  const child = spawn(process.execPath, ['bin/sotalk.js', 'serve'], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let warnings = 0;
  const warn = (line: string) => {
    if (closing) return;
    if (++warnings <= MAX_WARNINGS) console.error(`[server] ${line.length > 400 ? line.slice(0, 400) + '…' : line}`);
    else if (warnings === MAX_WARNINGS + 1) console.error(`[server] … more warnings suppressed (see the count in the summary)`);
  };
  let closing = false;
  const tail: string[] = [];
  const keep = (line: string) => {
    tail.push(line);
    if (tail.length > 40) tail.shift();
  };
  let exited = false;
  const exitPromise = new Promise<void>((resolve) => child.once('exit', () => ((exited = true), resolve())));
  // If this process dies, the server must not outlive it.
  const killOnExit = () => {
    if (!exited) child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);

  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= (async () => {
      closing = true;
      if (!exited) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
        await exitPromise;
        clearTimeout(timer);
      }
      process.removeListener('exit', killOnExit);
      if (dbName) await adminQuery(admin, `DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch((err: Error) => console.error(`warning: could not drop ${dbName}: ${err.message}`));
      rmSync(dataDir, { recursive: true, force: true });
    })());

  try {
    const info = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the server did not log "sotalk listening" within 60 s')), 60_000);
      createInterface({ input: child.stdout! }).on('line', (line) => {
        keep(line);
        let rec: Record<string, unknown> | undefined;
        try {
          rec = JSON.parse(line) as Record<string, unknown>;
        } catch {
          /* not a log line */
        }
        if (rec?.msg === 'sotalk listening' && typeof rec.port === 'number') {
          clearTimeout(timer);
          resolve(rec);
        } else if (rec && typeof rec.level === 'number' && rec.level >= 40) {
          warn(line);
        }
      });
      createInterface({ input: child.stderr! }).on('line', (line) => {
        keep(line);
        warn(`(stderr) ${line}`);
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`the server exited (${signal ?? code}) before listening:\n${tail.join('\n')}`));
      });
    });
    const port = info.port as number;
    return {
      baseUrl: `http://127.0.0.1:${port}`,
      wsUrl: `ws://127.0.0.1:${port}/ws`,
      host: '127.0.0.1',
      port,
      pgUrl: dbUrl,
      spawned: true,
      serverInfo: { pid: child.pid, crypto_pool: info.pool, native_uws: info.native, database: dbName ?? '(as is)' },
      warnings: () => warnings,
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** One statement on its own connection (CREATE / DROP DATABASE cannot run in a pool's transaction). */
export async function adminQuery(url: string, sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

/** Every sample of /metrics as "name{labels}" → value. */
export async function readMetrics(baseUrl: string): Promise<Map<string, number>> {
  const res = await fetch(`${baseUrl}/metrics`);
  if (!res.ok) throw new Error(`/metrics answered ${res.status}`);
  const out = new Map<string, number>();
  for (const line of (await res.text()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    const v = Number(line.slice(i + 1));
    if (Number.isFinite(v)) out.set(line.slice(0, i), v);
  }
  return out;
}

/** First sample whose name matches, e.g. metric(m, /^sotalk_process_(process_)?resident_memory_bytes$/). */
export function metric(m: Map<string, number>, name: RegExp): number | undefined {
  for (const [k, v] of m) if (name.test(k)) return v;
  return undefined;
}

/** Sum of all samples of one family with the given label text (e.g. 'direction="out"'). */
export function metricSum(m: Map<string, number>, family: string, labelIncludes = ''): number {
  let sum = 0;
  for (const [k, v] of m) {
    const brace = k.indexOf('{');
    const name = brace === -1 ? k : k.slice(0, brace);
    if (name === family && k.includes(labelIncludes)) sum += v;
  }
  return sum;
}

export const RSS = /^sotalk_process_(process_)?resident_memory_bytes$/;
export const HEAP_USED = /^sotalk_process_(nodejs_)?heap_size_used_bytes$/;
export const SERVER_CPU = /^sotalk_process_(process_)?cpu_seconds_total$/;
export const MAX_FDS = /^sotalk_process_(process_)?max_fds$/;
