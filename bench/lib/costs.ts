// What a measured phase cost each component, sampled right before and right after it:
//
// - server: its own /metrics (sotalk_process_cpu_seconds_total = prom-client's process.cpuUsage(),
//   i.e. getrusage(RUSAGE_SELF): every thread of the process — main thread, crypto workers, libuv);
// - Postgres: utime + stime from /proc/<pid>/stat of every postgres process on this machine, plus
//   the children its postmaster reaped (cutime + cstime: backends that exited during the phase) —
//   only when Postgres is local; `postgres_db` is the narrower figure of this database's backends
//   and Postgres's shared background processes (no other database's backends);
// - Redis: INFO cpu (used_cpu_sys + used_cpu_user) and INFO commandstats (all calls; PUBLISH and
//   SPUBLISH calls), when REDIS_URL is set (the spawned server inherits it); on a Redis Cluster
//   (REDIS_URL=redis+cluster://…) summed over its masters;
// - the load generator (process.cpuUsage() of this process) and the whole machine (/proc/stat).
// Divided by the phase's operations these are the "µs per send" / "µs per delivery" figures of
// issue 12: a regression shows up as a ratio.
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { hostname, networkInterfaces } from 'node:os';
import { Cluster } from 'ioredis';
import { createRedis, type RedisClient } from '../../src/redis.js';
import { round } from './common.js';
import { SERVER_CPU, metric, metricSum, readMetrics, type Target } from './target.js';

/** Commands Redis counts when a Lua script runs them; SoTalk runs these only inside its rate-limit scripts (one EVALSHA each). */
const SCRIPT_ONLY = new Set(['incr', 'incrby', 'pexpire', 'pttl']);

let ticks: number | undefined;
/** USER_HZ, the unit of /proc times: `getconf CLK_TCK` (100 on every usual Linux). */
export function clockTicks(): number {
  if (ticks === undefined) {
    try {
      const v = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
      ticks = Number.isInteger(v) && v > 0 ? v : 100;
    } catch {
      ticks = 100;
    }
  }
  return ticks;
}

export interface CostSample {
  at: number;
  /** The server runs on this machine (its CPU is part of `machine`). */
  localServer: boolean;
  /** CPU seconds by component; null where not measurable. */
  server: number | null;
  postgres: number | null;
  postgresDb: number | null;
  redis: number | null;
  client: number;
  /** Busy CPU seconds of the whole machine (all cores), null off Linux. */
  machine: number | null;
  redisCommands: number | null;
  /** INFO calls the sample made (one per Redis server; its own call is in the next sample's count). */
  redisInfoCalls: number;
  redisPublishes: number | null;
  /** The server's own count of its PUBLISH calls (sotalk_redis_publishes_total). */
  serverPublishes: number | null;
}

/** CPU µs per operation by component. */
export interface CpuUs {
  server: number | null;
  /** Every local postgres process (and the backends its postmaster reaped meanwhile). */
  postgres: number | null;
  /** This database's backends and Postgres's background processes only: less noise when others use the same Postgres. */
  postgres_db: number | null;
  redis: number | null;
  client: number;
  /** All cores of the machine busy (/proc/stat). */
  machine: number | null;
  /** machine − (server + postgres + redis + client): anything else running meanwhile. */
  other: number | null;
}

export interface PhaseCost {
  cpu_us: CpuUs;
  /** Redis commands per operation (INFO commandstats delta, without this meter's own INFO). */
  redis_cmds: number | null;
  /** PUBLISH + SPUBLISH calls per operation, as Redis counted them. */
  redis_publishes: number | null;
  /** PUBLISH calls per operation as the server counted them (sotalk_redis_publishes_total): unaffected by other Redis users. */
  server_publishes: number | null;
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

function cmdline(pid: string): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0+$/, '').replaceAll('\0', ' ');
  } catch {
    return '';
  }
}

/** Postgres's shared processes (their titles): they work for every database. */
const PG_AUX = /^postgres: (?:.*: )?(checkpointer|background writer|walwriter|autovacuum launcher|logical replication launcher|archiver|stats collector|startup|walreceiver|walsummarizer)\b/;

/**
 * CPU seconds of all local postgres processes (comm "postgres"/"postmaster", or a command line
 * that is the postgres binary or a "postgres: …" title), the postmaster's reaped children
 * included; and of the subset that works for `database`.
 */
export function postgresSeconds(database: string | undefined): { all: number; db: number } | null {
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch {
    return null;
  }
  const procs = new Map<string, { f: string[]; title: string }>();
  for (const pid of pids) {
    const f = stat(pid);
    if (!f) continue;
    const title = f[0] === 'postgres' || f[0] === 'postmaster' || f[0]!.startsWith('postgres') ? cmdline(pid) : '';
    if (f[0] === 'postgres' || f[0] === 'postmaster' || /^(\S*\/)?(postgres|postmaster)( |$)|^postgres: /.test(title)) procs.set(pid, { f, title });
  }
  if (procs.size === 0) return null;
  const tck = clockTicks();
  const dbBackends = new Set<string>();
  if (database) for (const [pid, p] of procs) if (p.title.startsWith('postgres: ') && p.title.split(' ').includes(database)) dbBackends.add(pid);
  let all = 0;
  let db = 0;
  for (const [pid, { f, title }] of procs) {
    // fields (0 = comm): 2 ppid, 12 utime, 13 stime, 14 cutime, 15 cstime
    const own = Number(f[12]) + Number(f[13]);
    all += own;
    const postmaster = !procs.has(f[2]!);
    if (postmaster) all += Number(f[14]) + Number(f[15]);
    const parallelFor = /parallel worker for PID (\d+)/.exec(title)?.[1];
    if (postmaster || PG_AUX.test(title) || dbBackends.has(pid) || (parallelFor !== undefined && dbBackends.has(parallelFor))) db += own;
  }
  return { all: all / tck, db: db / tck };
}

/** Busy seconds of all cores (/proc/stat: user+nice+system+irq+softirq+steal). */
function machineSeconds(): number | null {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((x, y) => x + y, 0);
    return (total - (f[3] ?? 0) - (f[4] ?? 0)) / clockTicks();
  } catch {
    return null;
  }
}

interface RedisInfo {
  cpu: number;
  commands: number;
  publishes: number;
  /** INFO commands this sample sent (one per server it asked). */
  infoCalls?: number;
}

function parseRedisInfo(text: string): RedisInfo {
  const num = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(text)?.[1] ?? 0);
  let commands = 0;
  let publishes = 0;
  for (const m of text.matchAll(/^cmdstat_([a-z|_-]+):calls=(\d+)/gm)) {
    // Redis counts the commands a Lua script runs as well; they are not commands anyone sent
    if (!SCRIPT_ONLY.has(m[1]!)) commands += Number(m[2]);
    if (m[1] === 'publish' || m[1] === 'spublish') publishes += Number(m[2]);
  }
  return { cpu: num('used_cpu_sys') + num('used_cpu_user'), commands, publishes };
}

function isLocalHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === '' || h.startsWith('/') || h === 'localhost' || h === '::1' || h.startsWith('127.') || h === hostname().toLowerCase()) return true;
  return Object.values(networkInterfaces()).some((list) => list?.some((i) => i.address.toLowerCase() === h));
}

/** Samples before and after a phase; `CostMeter.cost(a, b, ops)` divides by the phase's operations. */
export class CostMeter {
  readonly #target: Target;
  readonly #redis: RedisClient | undefined;
  readonly #localPostgres: boolean;
  readonly #database: string | undefined;
  readonly #localServer: boolean;
  readonly #notes = new Map<string, string>();

  constructor(target: Target, redisUrl: string | undefined) {
    this.#target = target;
    this.#localServer = target.spawned || isLocalHost(target.host);
    if (!this.#localServer) this.#notes.set('machine', `machine: "other processes" n/a — the server at ${target.host} is not on this machine`);
    if (target.pgUrl === undefined) {
      this.#localPostgres = false;
      this.#notes.set('postgres', 'postgres: n/a — the Postgres of the server is unknown (--url without --pg-url)');
    } else {
      const u = new URL(target.pgUrl);
      // a unix-socket connection names its directory in ?host=
      const host = u.searchParams.get('host') ?? u.hostname;
      this.#database = decodeURIComponent(u.pathname.slice(1)) || undefined;
      this.#localPostgres = isLocalHost(host);
      if (!this.#localPostgres) this.#notes.set('postgres', `postgres: n/a — Postgres at ${host} is not on this machine (its CPU is read from /proc)`);
    }
    if (redisUrl) {
      this.#redis = createRedis(redisUrl, { maxRetriesPerRequest: 1, connectionName: 'sotalk-bench-costs' });
      this.#redis.on('error', () => {});
      if (target.spawned && (process.env.RATE_LIMIT_SEND_PER_MIN ?? '0') === '0') {
        this.#notes.set(
          'ratelimit',
          'redis: the spawned server runs with RATE_LIMIT_SEND_PER_MIN=0 (no send limit), so the limiter’s Redis traffic is not in these counts; set e.g. RATE_LIMIT_SEND_PER_MIN=10000000 to include it',
        );
      }
    } else {
      this.#notes.set(
        'redis',
        target.spawned
          ? 'redis: n/a — REDIS_URL is not set (the spawned server then runs without Redis); set it to measure Redis'
          : "redis: n/a — REDIS_URL is not set; set it to the server's Redis to measure Redis",
      );
    }
  }

  /** Why some figures are null (or what they leave out); one line each. */
  notes(): string[] {
    return [...this.#notes.values()];
  }

  async sample(): Promise<CostSample> {
    const [metrics, info] = await Promise.all([
      readMetrics(this.#target.baseUrl).catch(() => undefined),
      this.#redis
        ? this.#redisInfo().then(undefined, (err: Error) => {
            this.#notes.set('redis', `redis: n/a — INFO failed: ${err.message}`);
            return null;
          })
        : null,
    ]);
    const c = process.cpuUsage();
    const pgs = this.#localPostgres ? postgresSeconds(this.#database) : null;
    if (this.#localPostgres && !pgs) this.#notes.set('postgres', 'postgres: n/a — Postgres looks local but no postgres process is visible in /proc (another PID namespace?)');
    const server = metrics ? (metric(metrics, SERVER_CPU) ?? null) : null;
    if (server === null) this.#notes.set('server', 'server: n/a — no sotalk_process_cpu_seconds_total in its /metrics');
    return {
      at: performance.now(),
      localServer: this.#localServer,
      server,
      postgres: pgs?.all ?? null,
      postgresDb: pgs && this.#database ? pgs.db : null,
      redis: info?.cpu ?? null,
      client: (c.user + c.system) / 1e6,
      machine: machineSeconds(),
      redisCommands: info?.commands ?? null,
      redisInfoCalls: info?.infoCalls ?? 1,
      redisPublishes: info?.publishes ?? null,
      serverPublishes: metrics ? metricSum(metrics, 'sotalk_redis_publishes_total') : null,
    };
  }

  /** INFO of the one server, or the sum over a cluster's masters (with how many INFO calls that took). */
  async #redisInfo(): Promise<RedisInfo> {
    const redis = this.#redis!;
    if (!(redis instanceof Cluster)) return { ...parseRedisInfo(await redis.info('all')), infoCalls: 1 };
    if (redis.status !== 'ready') await new Promise((r) => redis.once('ready', r));
    const infos = (await Promise.all(redis.nodes('master').map((n) => n.info('all')))).map(parseRedisInfo);
    return infos.reduce((t, i) => ({ cpu: t.cpu + i.cpu, commands: t.commands + i.commands, publishes: t.publishes + i.publishes, infoCalls: (t.infoCalls ?? 0) + 1 }), {
      cpu: 0,
      commands: 0,
      publishes: 0,
      infoCalls: 0,
    });
  }

  static cost(a: CostSample, b: CostSample, ops: number): PhaseCost {
    const d = (x: number | null, y: number | null) => (x === null || y === null || ops <= 0 ? null : (y - x) / ops);
    const us = (x: number | null, y: number | null) => {
      const v = d(x, y);
      return v === null ? null : round(v * 1e6, 3);
    };
    const cpu: CpuUs = {
      server: us(a.server, b.server),
      postgres: us(a.postgres, b.postgres),
      postgres_db: us(a.postgresDb, b.postgresDb),
      redis: us(a.redis, b.redis),
      client: us(a.client, b.client) ?? 0,
      machine: us(a.machine, b.machine),
      other: null,
    };
    // Postgres and Redis elsewhere (null) use none of this machine's cores.
    if (cpu.machine !== null && cpu.server !== null && b.localServer) cpu.other = round(cpu.machine - cpu.server - (cpu.postgres ?? 0) - (cpu.redis ?? 0) - cpu.client, 3);
    const perOp = (v: number | null) => (v === null ? null : round(v, 4));
    return {
      cpu_us: cpu,
      // the delta includes this meter's first INFO on each server (an INFO's own call is counted after it answers)
      redis_cmds: perOp(d(a.redisCommands === null ? null : a.redisCommands + a.redisInfoCalls, b.redisCommands)),
      redis_publishes: perOp(d(a.redisPublishes, b.redisPublishes)),
      server_publishes: perOp(d(a.serverPublishes, b.serverPublishes)),
    };
  }

  close(): void {
    this.#redis?.disconnect();
  }
}

/** "123 µs", "4.56 µs" (about three significant digits), or "n/a". */
export function us(v: number | null): string {
  if (v === null) return 'n/a';
  const a = Math.abs(v);
  return `${a >= 100 ? Math.round(v) : a >= 10 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : v.toFixed(3)} µs`;
}
const per = (v: number | null) => (v === null ? 'n/a' : v.toFixed(3));

/** Two summary lines: CPU by component, then Redis traffic, per `label` (send, delivery, page). */
export function costText(label: string, c: PhaseCost): string {
  const x = c.cpu_us;
  const pgDb = x.postgres_db !== null && x.postgres !== null && Math.abs(x.postgres - x.postgres_db) >= Math.max(1, 0.05 * x.postgres) ? ` (this database ${us(x.postgres_db)})` : '';
  const machine = x.machine === null ? '' : `; machine ${us(x.machine)} busy${x.other === null ? '' : `, other processes ${us(x.other)}`}`;
  const serverPub = c.server_publishes === null ? '' : `server counted ${per(c.server_publishes)} PUBLISH`;
  const redis =
    c.redis_cmds === null && c.redis_publishes === null
      ? `n/a (no Redis INFO)${c.server_publishes ? `; ${serverPub}` : ''}`
      : `${per(c.redis_cmds)} commands, ${per(c.redis_publishes)} PUBLISH${serverPub ? ` (${serverPub})` : ''}`;
  const head = (h: string) => `    ${h}`.padEnd(Math.max(13, label.length + 11));
  return [
    `${head(`cpu/${label}`)}server ${us(x.server)}, postgres ${us(x.postgres)}${pgDb}, redis ${us(x.redis)}, load generator ${us(x.client)}${machine}`,
    `${head(`redis/${label}`)}${redis}`,
  ].join('\n');
}

/** JSON fields of one phase: cpu_us_per_<unit>, redis_cmds_per_<unit>, redis_publish_per_<unit>, server_publish_per_<unit>. */
export function costJson(unit: string, c: PhaseCost | null): Record<string, unknown> {
  return {
    [`cpu_us_per_${unit}`]: c?.cpu_us ?? null,
    [`redis_cmds_per_${unit}`]: c?.redis_cmds ?? null,
    [`redis_publish_per_${unit}`]: c?.redis_publishes ?? null,
    [`server_publish_per_${unit}`]: c?.server_publishes ?? null,
  };
}
