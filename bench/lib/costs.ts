// What a measured phase cost each component: CPU seconds of the server (its /metrics), of
// Postgres (every postgres process on this machine, plus the children its postmaster reaped:
// /proc, so only when Postgres runs locally), of Redis (INFO cpu) and of this load generator,
// and the Redis commands executed (INFO commandstats). Divided by the phase's operations, these
// are the "µs per send" / "µs per delivery" figures: a regression shows up as a ratio.
import { readFileSync, readdirSync } from 'node:fs';
import { Redis } from 'ioredis';
import { round } from './common.js';
import { SERVER_CPU, metric, readMetrics, type Target } from './target.js';

const SCRIPT_ONLY = new Set(['incr', 'incrby', 'pexpire', 'pttl']);
const TICKS_PER_S = 100; // Linux USER_HZ (getconf CLK_TCK) on every platform Node runs on

interface Sample {
  at: number;
  server: number | null;
  postgres: number | null;
  redis: number | null;
  client: number;
  redisCommands: number | null;
  redisPublishes: number | null;
}

export interface PhaseCost {
  /** CPU µs per operation, by component (null: not measurable here). */
  server_us: number | null;
  postgres_us: number | null;
  redis_us: number | null;
  client_us: number;
  /** Redis commands and PUBLISH (incl. SPUBLISH) per operation. */
  redis_cmds: number | null;
  redis_publishes: number | null;
}

function stat(pid: string): string[] | null {
  try {
    const raw = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command name is parenthesised and may hold spaces: fields start after the last ')'
    return [raw.slice(raw.indexOf('(') + 1, raw.lastIndexOf(')')), ...raw.slice(raw.lastIndexOf(')') + 2).split(' ')];
  } catch {
    return null;
  }
}

/** CPU seconds of all local postgres processes, including exited backends (the postmaster's cutime). */
function postgresSeconds(): number | null {
  let ticks = 0;
  let found = false;
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch {
    return null;
  }
  const byPid = new Map<string, string[]>();
  for (const pid of pids) {
    const f = stat(pid);
    if (f && (f[0] === 'postgres' || f[0] === 'postmaster')) byPid.set(pid, f);
  }
  for (const f of byPid.values()) {
    found = true;
    // fields (0 = comm): 2 ppid, 12 utime, 13 stime, 14 cutime, 15 cstime
    ticks += Number(f[12]) + Number(f[13]);
    if (!byPid.has(f[2]!)) ticks += Number(f[14]) + Number(f[15]); // the postmaster
  }
  return found ? ticks / TICKS_PER_S : null;
}

async function redisInfo(redis: Redis | undefined): Promise<{ cpu: number; commands: number; publishes: number } | null> {
  if (!redis) return null;
  try {
    const text = await redis.info('all');
    const num = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(text)?.[1] ?? 0);
    let commands = 0;
    let publishes = 0;
    for (const m of text.matchAll(/^cmdstat_([a-z|_]+):calls=(\d+)/gm)) {
      // Redis counts the commands a Lua script runs as well; SoTalk runs these only inside its
      // rate-limit scripts (one EVALSHA each), so they are not commands it sent
      if (!SCRIPT_ONLY.has(m[1]!)) commands += Number(m[2]);
      if (m[1] === 'publish' || m[1] === 'spublish') publishes += Number(m[2]);
    }
    return { cpu: num('used_cpu_sys') + num('used_cpu_user'), commands, publishes };
  } catch {
    return null;
  }
}

/** Samples before and after a phase; `stop(ops)` divides by the phase's operations. */
export class CostMeter {
  readonly #target: Target;
  readonly #redis: Redis | undefined;
  readonly #localPostgres: boolean;

  constructor(target: Target, redisUrl: string | undefined) {
    this.#target = target;
    const pgHost = target.pgUrl ? new URL(target.pgUrl).hostname : '';
    this.#localPostgres = ['127.0.0.1', 'localhost', '::1', '[::1]', ''].includes(pgHost) && target.pgUrl !== undefined;
    this.#redis = redisUrl ? new Redis(redisUrl, { lazyConnect: false, maxRetriesPerRequest: 1, connectionName: 'sotalk-bench-costs' }) : undefined;
    this.#redis?.on('error', () => {});
  }

  async sample(): Promise<Sample> {
    const [metrics, redis] = await Promise.all([readMetrics(this.#target.baseUrl).catch(() => undefined), redisInfo(this.#redis)]);
    const c = process.cpuUsage();
    return {
      at: performance.now(),
      server: metrics ? (metric(metrics, SERVER_CPU) ?? null) : null,
      postgres: this.#localPostgres ? postgresSeconds() : null,
      redis: redis?.cpu ?? null,
      client: (c.user + c.system) / 1e6,
      redisCommands: redis?.commands ?? null,
      redisPublishes: redis?.publishes ?? null,
    };
  }

  static cost(a: Sample, b: Sample, ops: number): PhaseCost {
    const per = (x: number | null, y: number | null, scale: number) => (x === null || y === null || ops <= 0 ? null : round(((y - x) * scale) / ops, 3));
    return {
      server_us: per(a.server, b.server, 1e6),
      postgres_us: per(a.postgres, b.postgres, 1e6),
      redis_us: per(a.redis, b.redis, 1e6),
      client_us: per(a.client, b.client, 1e6) ?? 0,
      // the two INFO calls of the sampling itself are not the server's
      redis_cmds: a.redisCommands === null || b.redisCommands === null || ops <= 0 ? null : round((b.redisCommands - a.redisCommands - 2) / ops, 3),
      redis_publishes: per(a.redisPublishes, b.redisPublishes, 1),
    };
  }

  close(): void {
    this.#redis?.disconnect();
  }
}

export const costText = (label: string, c: PhaseCost) =>
  `    cost     per ${label}: server ${c.server_us ?? '?'} µs, postgres ${c.postgres_us ?? '?'} µs, redis ${c.redis_us ?? '?'} µs, ` +
  `load generator ${c.client_us} µs CPU; redis ${c.redis_cmds ?? '?'} commands (${c.redis_publishes ?? '?'} PUBLISH)`;
