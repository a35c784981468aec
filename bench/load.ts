// Load generator for SoTalk: sends over HTTP and over sockets, history paging (cold and hot),
// group fan-out and idle sockets, against a server it spawns (default) or one at --url.
// Each scenario prints a summary and ONE JSON line. See bench/README.md.
//
//   npm run bench:load                                   # every scenario, 10 s each, own server
//   npm run bench:load -- --scenario http-send --duration 30 --rate 70%
//   npm run bench:load -- --url http://127.0.0.1:8080 --pg-url postgresql://postgres@127.0.0.1/sotalk
//   npm run bench:load -- --scenario fanout --redis cluster   # spawned server on a throwaway Redis Cluster
import { randomUUID } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import type WebSocket from 'ws';
import {
  Errors,
  Latency,
  bool,
  cpuMeter,
  fail,
  fmt,
  machineInfo,
  mapLimit,
  now,
  num,
  openFileLimit,
  parseArgs,
  round,
  sleep,
  type CpuSample,
  type OptionSpec,
} from './lib/common.js';
import { content, createDirect, libraryClient, stampOf, createGroup, decodeFrame, deliveryStamp, encodeFrame, openSocket, signInMany, type Format, type User } from './lib/chat.js';
import { createHttpClient, type HttpClient } from './lib/http-client.js';
import { insertCeiling, readCeiling, type CeilingResult } from './lib/pg-ceiling.js';
import { CostMeter, costJson, costText, type CostSample, type PhaseCost } from './lib/costs.js';
import { searchWords } from '../src/crypto/search-tokens.js';
import { startRedisCluster, type ThrowawayRedisCluster } from '../test/helpers/redis-server.js';
import { HEAP_USED, MAX_FDS, RSS, metric, metricSum, openTarget, readMetrics, type Target } from './lib/target.js';

const SCENARIOS = ['http-send', 'ws-send', 'client-send', 'history-cold', 'history-hot', 'fanout', 'idle'] as const;
type Scenario = (typeof SCENARIOS)[number];

const SPEC: Record<string, OptionSpec> = {
  scenario: { default: 'all', help: `comma-separated: ${SCENARIOS.join(', ')}, or all` },
  url: { help: 'target a running server (http://host:port) instead of spawning one' },
  'pg-url': { help: 'Postgres of the --url server, for the bare-pg ceilings (spawned: its own database)' },
  duration: { default: '10', help: 'measured seconds per phase' },
  warmup: { help: 'unmeasured seconds before each measured phase (default: duration/5, at most 2)' },
  connections: { default: '64', help: 'concurrent HTTP requests / sender sockets / readers' },
  conversations: { default: '32', help: 'conversations for http-send, ws-send, history-cold' },
  'conv-type': { default: 'direct', help: 'http-send / ws-send conversations: direct or group' },
  'group-members': { default: '3', help: 'members per conversation when --conv-type group' },
  size: { default: '256', help: 'message content size in bytes' },
  rate: { help: 'open-loop sends/s: N, P% (of the closed-loop max measured first) or P%pg (of the pg ceiling)' },
  pipeline: { default: '1', help: 'ws-send: sends in flight per sender socket' },
  prefill: { default: '200', help: 'history: messages per conversation before reading' },
  'page-size': { default: '100', help: 'history: limit= of each page' },
  'group-size': { default: '100', help: 'fanout: members of the group (one socket each)' },
  senders: { default: '2', help: 'fanout: members that send' },
  window: { default: '32', help: 'fanout: sends in flight across all senders' },
  sockets: { default: '5000', help: 'idle: sockets to open' },
  'idle-users': { help: 'idle: distinct users the sockets belong to (default: one per socket)' },
  settle: { default: '5', help: 'idle: seconds to wait before reading RSS' },
  'pg-connections': { default: '4', help: 'insert ceiling: concurrent pg connections' },
  'ws-format': { default: 'json', help: 'json or msgpack (subprotocol sotalk.msgpack.v1)' },
  client: { default: 'auto', help: 'HTTP client: auto (undici if installed, else http), undici, http, fetch' },
  timeout: { default: '10', help: 'seconds before a request counts as a timeout' },
  'log-level': { default: 'info', help: 'LOG_LEVEL of the spawned server' },
  redis: {
    help: 'cluster: start a throwaway 3-master Redis Cluster (installed redis-server, redis-cli) and run the spawned server and the Redis figures on it (REDIS_URL=redis+cluster://…; an existing cluster: set REDIS_URL to its redis+cluster:// URL instead)',
  },
  'client-message-ids': {
    default: 'false',
    boolean: true,
    help: 'http-send, ws-send: a fresh random client_message_id on every send (idempotent sends, as the client library makes them)',
  },
  'db-as-is': { default: 'false', boolean: true, help: 'spawned server: use DATABASE_URL as is (no CREATE/DROP DATABASE)' },
  out: { help: 'also append each JSON line to this file' },
  'max-runtime': { help: 'hard stop in seconds (default: computed from the scenarios)' },
};

const USAGE = `usage: npm run bench:load -- [options]
Spawns \`node bin/sotalk.js serve\` on 127.0.0.1 with a fresh database (DATABASE_URL / BENCH_DATABASE_URL
names the Postgres server, default postgresql://postgres@127.0.0.1:5432) unless --url is given.
options:`;

const OUTPUT = `
output: per scenario a summary, then ONE JSON line (bench/README.md explains every field). Per measured
phase (the closed loop, and the open loop of --rate P%) besides rate, latency and errors:
  cpu/send     CPU µs per answered send (history: per page) of the server (all its threads, from its
               /metrics), Postgres (every local postgres process, /proc; "this database" = its backends
               + shared background processes), Redis (INFO cpu) and this load generator; "machine" =
               all cores busy (/proc/stat), "other processes" = machine minus those
               JSON: cpu_us_per_send {server, postgres, postgres_db, redis, client, machine, other}
  redis/send   Redis commands and PUBLISH (+SPUBLISH) per send, from INFO commandstats deltas; the server's
               own PUBLISH count (sotalk_redis_publishes_total) alongside
               JSON: redis_cmds_per_send, redis_publish_per_send, server_publish_per_send
  fanout also per delivered frame: cpu/delivery, redis/delivery (cpu_us_per_delivery, redis_cmds_per_delivery,
               redis_publish_per_delivery); --senders 1 --window 1 is the latency case (delivery p50)
  n/a          not measurable in this run (remote Postgres, no REDIS_URL…): a "note:" line and cost_notes say why
  targets      issue 12 "Send and fan-out pipeline" (and issue 5 "Throughput" where 12 has no counterpart):
               [met] / [MISS] / [ ? ] (not measurable in this run; the note says what to run); JSON: targets
Redis and Postgres are measured when REDIS_URL is set (the spawned server uses it) and Postgres is local.`;

const a = parseArgs(process.argv.slice(2), SPEC, USAGE, OUTPUT);
const duration = num(a, 'duration', 0.5, 3600);
const O = {
  duration,
  warmup: a.warmup === undefined ? Math.min(2, duration / 5) : num(a, 'warmup', 0, 600),
  connections: num(a, 'connections', 1, 10_000),
  conversations: num(a, 'conversations', 1, 100_000),
  convType: a['conv-type'] === 'group' ? ('group' as const) : ('direct' as const),
  groupMembers: num(a, 'group-members', 2, 1000),
  size: num(a, 'size', 24, 1 << 20),
  rate: a.rate,
  pipeline: num(a, 'pipeline', 1, 1000),
  prefill: num(a, 'prefill', 1, 100_000),
  pageSize: num(a, 'page-size', 1, 200),
  groupSize: num(a, 'group-size', 2, 1000),
  senders: num(a, 'senders', 1, 1000),
  window: num(a, 'window', 1, 100_000),
  sockets: num(a, 'sockets', 1, 1_000_000),
  idleUsers: a['idle-users'] === undefined ? undefined : num(a, 'idle-users', 1, 1_000_000),
  settle: num(a, 'settle', 0, 600),
  pgConnections: num(a, 'pg-connections', 1, 256),
  wsFormat: (a['ws-format'] === 'msgpack' ? 'msgpack' : 'json') as Format,
  client: a.client ?? 'auto',
  timeoutMs: num(a, 'timeout', 0.1, 600) * 1000,
  clientMessageIds: bool(a, 'client-message-ids'),
};
if (!['direct', 'group'].includes(a['conv-type']!)) fail('--conv-type must be direct or group');
if (!['json', 'msgpack'].includes(a['ws-format']!)) fail('--ws-format must be json or msgpack');
if (!['auto', 'undici', 'http', 'fetch'].includes(O.client)) fail('--client must be auto, undici, http or fetch');
if (O.rate !== undefined && !/^\d+(\.\d+)?(%|%pg)?$/.test(O.rate)) fail('--rate must be N, P% or P%pg');
const selected: Scenario[] =
  a.scenario === 'all'
    ? [...SCENARIOS]
    : a.scenario!.split(',').map((s) => {
        const t = s.trim() as Scenario;
        if (!SCENARIOS.includes(t)) fail(`unknown scenario "${s}" (${SCENARIOS.join(', ')})`);
        return t;
      });

interface Ctx {
  target: Target;
  http: HttpClient;
}

/** Set on SIGINT / SIGTERM / the hard time limit: every load loop stops issuing work. */
const stop = { now: false };

// ---------------------------------------------------------------------------------------------
// The send driver: closed loop (`concurrency` lanes, each waits for its answer) or open loop
// (a fixed rate; latency counted from the *intended* send time, so a stalled server shows up
// as latency rather than as fewer requests). `op` returns null on success or an error kind.

interface DriveResult {
  ok: number;
  seconds: number;
  per_s: number;
  latency: Latency;
  errors: Errors;
  /** Open loop: sends not issued because `maxOutstanding` were already waiting. */
  skipped: number;
  cpu: CpuSample;
  server_cpu_pct: number | null;
  mode: 'closed' | 'open';
  rate: number | null;
  /** CPU µs and Redis commands per answered operation, by component. */
  cost: PhaseCost;
  /** Cost samples at the start and end, to divide by something else (deliveries). */
  costSamples: [CostSample, CostSample];
}

/** Set once the target is open (REDIS_URL, when set, is the server's Redis). */
let costMeter: CostMeter;

type Op = (n: number, stamp: number) => Promise<string | null>;

async function drive(seconds: number, concurrency: number, rate: number | null, op: Op): Promise<DriveResult> {
  const latency = new Latency();
  const errors = new Errors();
  let ok = 0;
  let skipped = 0;
  let n = 0;
  const cost0 = await costMeter.sample();
  const meter = cpuMeter();
  const started = now();
  const end = started + seconds * 1000;
  const one = async (stamp: number) => {
    const err = await op(n++, stamp);
    if (err === null) {
      ok++;
      latency.record(now() - stamp);
    } else errors.add(err);
  };
  if (rate === null) {
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (now() < end && !stop.now) {
          await one(now());
          // A failing target answers instantly: do not spin.
          if (errors.total > ok && errors.total > 1000) await sleep(5);
        }
      }),
    );
  } else {
    const maxOutstanding = Math.max(1024, Math.ceil(rate));
    const total = Math.floor(rate * seconds);
    let issued = 0;
    let outstanding = 0;
    const inflight = new Set<Promise<void>>();
    await new Promise<void>((resolve) => {
      const tick = () => {
        const due = Math.min(total, Math.floor(((now() - started) * rate) / 1000));
        while (issued < due) {
          const intended = started + (issued * 1000) / rate;
          issued++;
          if (outstanding >= maxOutstanding) {
            skipped++;
            continue;
          }
          outstanding++;
          const p: Promise<void> = one(intended).finally(() => {
            outstanding--;
            inflight.delete(p);
          });
          inflight.add(p);
        }
        if (issued >= total || now() >= end || stop.now) {
          clearInterval(timer);
          resolve();
        }
      };
      const timer = setInterval(tick, 1);
    });
    await Promise.all([...inflight]);
  }
  const elapsed = (now() - started) / 1000;
  const cpu = meter.stop();
  const cost1 = await costMeter.sample();
  return {
    ok,
    seconds: elapsed,
    // Answers per second until the last one arrived: an open loop that falls behind takes longer than the window.
    per_s: ok / elapsed,
    latency,
    errors,
    skipped,
    cpu,
    server_cpu_pct: cost0.server !== null && cost1.server !== null ? round((100 * (cost1.server - cost0.server)) / ((cost1.at - cost0.at) / 1000), 1) : null,
    mode: rate === null ? 'closed' : 'open',
    rate,
    cost: CostMeter.cost(cost0, cost1, ok),
    costSamples: [cost0, cost1],
  };
}

/** Counts delivered `new_message` frames whose stamp falls in the measured window. */
class Deliveries {
  latency = new Latency();
  count = 0;
  echoes = 0;
  from = Number.POSITIVE_INFINITY;
  to = Number.POSITIVE_INFINITY;
  /** Returns true when the frame was a bench delivery (of any window). */
  see(frame: Buffer): boolean {
    return this.seeStamp(deliveryStamp(frame));
  }
  /** The same for a stamp already read (-1: not a bench message). */
  seeStamp(t: number): boolean {
    if (t < 0) return false;
    if (t >= this.from && t < this.to) {
      this.count++;
      this.latency.record(now() - t);
    }
    return true;
  }
  /** Starts a new window with fresh counters (earlier results stay in the old Latency object). */
  open(): void {
    this.latency = new Latency();
    this.count = 0;
    this.from = now();
    this.to = Number.POSITIVE_INFINITY;
  }
  /** Stops counting new sends; the ones already sent still count when they arrive. */
  closeWindow(): void {
    this.to = now();
  }
  async settle(expected: number, maxMs = 3000): Promise<void> {
    const until = now() + maxMs;
    while (this.count < expected && now() < until) await sleep(20);
  }
}

const driveText = (label: string, r: DriveResult, unit: string) =>
  [
    `  ${label}: ${fmt(r.per_s)} ${unit}/s (${fmt(r.ok)} in ${r.seconds.toFixed(1)} s, ${r.mode} loop${r.rate ? ` at ${fmt(r.rate)}/s` : ''})`,
    `    latency  ${r.latency.text()}`,
    `    errors   ${r.errors.text()}${r.skipped ? `; ${fmt(r.skipped)} not issued (client backlog cap)` : ''}`,
    `    cpu      client ${r.cpu.client_cpu_pct}% of a core (event loop ${Math.round(r.cpu.client_elu * 100)}% busy)` +
      `, server ${r.server_cpu_pct ?? '?'}%, machine ${r.cpu.machine_busy_pct ?? '?'}% of all cores`,
    costText(unit.replace(/s$/, ''), r.cost),
  ].join('\n');

const driveJson = (r: DriveResult, unit: string) => ({
  [`${unit}_per_s`]: round(r.per_s, 1),
  [unit]: r.ok,
  seconds: round(r.seconds, 2),
  mode: r.mode,
  rate: r.rate,
  ...r.latency.summary(),
  errors: r.errors.counts,
  error_count: r.errors.total,
  skipped: r.skipped,
  ...r.cpu,
  server_cpu_pct: r.server_cpu_pct,
  ...costJson(unit.replace(/s$/, ''), r.cost),
});

function clientWarning(r: DriveResult): string | null {
  return r.cpu.client_elu > 0.9
    ? `  ! the load generator's event loop was ${Math.round(r.cpu.client_elu * 100)}% busy: it may be the bottleneck (numbers are a lower bound)`
    : null;
}

function ceilingJson(c: CeilingResult | null, prefix: string) {
  if (!c) return { [`${prefix}_per_s`]: null };
  return {
    [`${prefix}_per_s`]: round(c.per_s, 1),
    [`${prefix}_p50_ms`]: c.latency.pct(50),
    [`${prefix}_p99_ms`]: c.latency.pct(99),
    [`${prefix}_errors`]: c.errors.counts,
    [`${prefix}_connections`]: c.connections,
  };
}

// Targets of the issues, checked where a scenario can measure them: `met`, `MISS`, or `?` (not
// measurable in this run; the note says what to run). Issue 12 restates most of issue 5's send
// and fan-out targets more strictly; issue 5's are listed only where issue 12 has no counterpart.
const ISSUES: Record<number, string> = { 12: 'Send and fan-out pipeline', 5: 'Throughput' };

interface Check {
  issue: number;
  name: string;
  target: string;
  value: number | null;
  met: boolean | null;
  note?: string;
}
/** `pass` sees the value as reported (3 decimals), so 1.0001 commands per send is "1.000", not a miss. */
const check = (issue: number, name: string, target: string, value: number | null, pass: (v: number) => boolean | null, note?: string): Check => {
  const v = value === null ? null : round(value, 3);
  return { issue, name, target, value: v, met: v === null ? null : pass(v), ...(note ? { note } : {}) };
};
const valueText = (v: number | null) => (v === null ? 'n/a' : Math.abs(v) >= 1000 ? fmt(v) : String(v));
function checksText(checks: Check[]): string {
  const lines: string[] = [];
  const issues = [...new Set(checks.map((c) => c.issue))].sort((x, y) => y - x);
  for (const [i, issue] of issues.entries()) {
    lines.push(`  targets (issue ${issue} "${ISSUES[issue]}")${i > 0 ? ', not restated above' : ''}:`);
    for (const c of checks.filter((x) => x.issue === issue)) {
      lines.push(`    [${c.met === null ? ' ? ' : c.met ? 'met' : 'MISS'}] ${c.name} ${c.target} (measured ${valueText(c.value)})${c.note ? ` — ${c.note}` : ''}`);
    }
  }
  return lines.join('\n');
}
const notesText = () => {
  const notes = costMeter.notes();
  return notes.length ? notes.map((n) => `    note: ${n}`).join('\n') : null;
};
/** Why the Postgres figure is missing, or how much of it other databases' backends took. */
function postgresNote(c: PhaseCost): string | undefined {
  const { postgres: all, postgres_db: db } = c.cpu_us;
  if (all === null) return 'not measurable here (see the note above)';
  if (db !== null && all - db >= Math.max(1, 0.05 * all)) return `this database alone ${db.toFixed(1)}: other databases' backends were busy meanwhile`;
  return undefined;
}
const rateLimitOff = () => (process.env.RATE_LIMIT_SEND_PER_MIN ?? '0') === '0';
/** Issue 12: Redis traffic per send (any send scenario). */
function redisChecks(r: DriveResult): Check[] {
  const c = r.cost;
  const publishNote =
    c.redis_publishes !== null && c.server_publishes !== null && Math.abs(c.redis_publishes - c.server_publishes) > 0.02
      ? `the server counted ${c.server_publishes.toFixed(3)}: something else publishes on this Redis`
      : undefined;
  return [
    check(12, 'Redis commands per send', '≤ 1', c.redis_cmds, (v) => v <= 1, !process.env.REDIS_URL ? 'REDIS_URL is not set' : rateLimitOff() ? 'the send rate limit is off (RATE_LIMIT_SEND_PER_MIN=0): its commands are not in the count' : undefined),
    check(12, 'PUBLISH per send (one per event, any member count)', '= 1', c.redis_publishes, (v) => Math.abs(v - 1) <= 0.01, publishNote),
  ];
}

/** --rate → a rate in sends/s, given the closed-loop max and the pg ceiling when relative. */
function resolveRate(raw: string | undefined, max: number | null, pg: number | null): number | null {
  if (raw === undefined) return null;
  const m = /^(\d+(?:\.\d+)?)(%pg|%)?$/.exec(raw)!;
  const v = Number(m[1]);
  if (!m[2]) return v;
  const base = m[2] === '%pg' ? pg : max;
  if (base === null) throw new Error(`--rate ${raw}: no ${m[2] === '%pg' ? 'pg ceiling (pass --pg-url)' : 'closed-loop maximum'} to take a share of`);
  return Math.max(1, (base * v) / 100);
}
const relativeRate = (raw: string | undefined) => raw !== undefined && raw.includes('%');

// ---------------------------------------------------------------------------------------------
// Set-up shared by the send scenarios: K conversations, each with a sending and a receiving user.

interface Conv {
  id: string;
  sender: User;
  receiver: User;
}

async function setupConversations(ctx: Ctx, k: number): Promise<Conv[]> {
  const per = O.convType === 'group' ? O.groupMembers : 2;
  const users = await signInMany(ctx.http, k * per);
  return mapLimit(k, 16, async (i) => {
    const [sender, receiver, ...rest] = users.slice(i * per, (i + 1) * per) as [User, User, ...User[]];
    const id = O.convType === 'group' ? await createGroup(ctx.http, sender, [receiver, ...rest]) : await createDirect(ctx.http, sender, receiver);
    return { id, sender, receiver };
  });
}

async function openReceivers(ctx: Ctx, users: User[], deliveries: Deliveries, closes: Errors): Promise<WebSocket[]> {
  return mapLimit(users.length, 64, (i) =>
    openSocket(ctx.target.wsUrl, users[i]!.token, {
      format: O.wsFormat,
      onFrame: (f) => deliveries.see(f),
      onClose: (code) => closes.add(`ws_close:${code}`),
    }),
  );
}

const closeAll = (sockets: WebSocket[]) => {
  for (const s of sockets) s.terminate();
};

/** Warm-up, measured phase (closed loop or at --rate), pg insert ceiling, then an open-loop phase for a relative --rate. */
async function sendScenario(ctx: Ctx, name: 'http-send' | 'ws-send' | 'client-send', convs: Conv[], deliveries: Deliveries, closes: Errors, op: Op, concurrency: number) {
  const absolute = O.rate !== undefined && !relativeRate(O.rate) ? resolveRate(O.rate, null, null) : null;
  if (O.warmup > 0) await drive(O.warmup, concurrency, absolute, op);
  deliveries.open();
  const main = await drive(O.duration, concurrency, absolute, op);
  deliveries.closeWindow();
  await deliveries.settle(main.ok);
  const mainDelivered = deliveries.count;
  const mainDelivery = deliveries.latency;

  let ceiling: CeilingResult | null = null;
  if (ctx.target.pgUrl) {
    console.log(`  measuring the Postgres insert ceiling (${O.pgConnections} connections, 100-row batches, ${O.duration} s)…`);
    ceiling = await insertCeiling(
      ctx.target.pgUrl,
      convs.map((c) => ({ id: c.id, senderId: c.sender.id })),
      // the server indexes the bench's words unless SEARCH_ENABLED=false: the ceiling writes as many tokens
      { seconds: O.duration, concurrency: O.pgConnections, batch: 100, size: O.size, searchTokens: process.env.SEARCH_ENABLED === 'false' ? 0 : searchWords(content(O.size, now())).length },
    );
  }

  let open: { r: DriveResult; delivery: Latency; delivered: number } | null = null;
  if (relativeRate(O.rate)) {
    const rate = resolveRate(O.rate, main.per_s, ceiling?.per_s ?? null)!;
    console.log(`  open loop at ${O.rate} = ${fmt(rate)} sends/s for ${O.duration} s…`);
    deliveries.open();
    const r = await drive(O.duration, concurrency, rate, op);
    deliveries.closeWindow();
    await deliveries.settle(r.ok);
    open = { r, delivery: deliveries.latency, delivered: deliveries.count };
  }

  const ratio = ceiling ? main.per_s / ceiling.per_s : null;
  const setup = [
    concurrency !== 256 ? `${concurrency} in flight` : null,
    process.env.SEARCH_ENABLED === 'false' ? 'search off' : null,
  ].filter(Boolean);
  const openAck = open ? open.r.latency.pct(99) : main.mode === 'open' ? main.latency.pct(99) : null;
  const openRate = open ? O.rate! : main.mode === 'open' ? `${fmt(main.rate!)}/s` : null;
  const checks = [
    check(
      12,
      'durable sends/s',
      '≥ 10,000, or ≥ 0.6 of the same-run pg ceiling',
      main.per_s,
      (v) => (v >= 10_000 || (ratio !== null && ratio >= 0.6) ? true : ratio === null ? null : false),
      [ratio === null ? 'no pg ceiling in this run' : `${ratio.toFixed(2)} of pg`, setup.length ? `the target is at 256 connections with search on; this run: ${setup.join(', ')}` : null]
        .filter(Boolean)
        .join('; '),
    ),
    check(12, 'server CPU µs per send', '≤ 60', main.cost.cpu_us.server, (v) => v <= 60),
    check(12, 'Postgres CPU µs per send', '≤ 80', main.cost.cpu_us.postgres, (v) => v <= 80, postgresNote(main.cost)),
    check(
      12,
      'ack p99 ms at 70% of the max rate (open loop)',
      '≤ 25',
      openAck,
      (v) => v <= 25,
      openRate === null ? 'run with --rate 70%' : O.rate === '70%' ? undefined : `measured at --rate ${openRate}, not 70%`,
    ),
    ...redisChecks(main),
    check(5, 'sends/s ÷ pg insert ceiling', '≥ 0.8', ratio, (v) => v >= 0.8),
    check(5, 'delivery p99 ms', '≤ 30', (open ? open.delivery : mainDelivery).pct(99), (v) => v <= 30),
  ];
  const lines = [
    driveText('sends', main, 'sends'),
    `    delivery ${mainDelivery.text()}; ${fmt(mainDelivered)} of ${fmt(main.ok)} delivered; socket closes: ${closes.text()}`,
    ceiling
      ? `  pg insert ceiling: ${fmt(ceiling.per_s)} rows/s${'search_layout' in ceiling && ceiling.search_layout ? ` with their search rows (${ceiling.search_layout})` : ''} (batch p50 ${ceiling.latency.pct(50)} / p99 ${ceiling.latency.pct(99)} ms, errors ${ceiling.errors.text()}) → ratio ${ratio!.toFixed(2)}`
      : '  pg insert ceiling: skipped (no Postgres URL: pass --pg-url with --url)',
    ...(open
      ? [driveText('open loop', open.r, 'sends'), `    delivery ${open.delivery.text()}; ${fmt(open.delivered)} of ${fmt(open.r.ok)} delivered`]
      : []),
    clientWarning(main),
    notesText(),
    checksText(checks),
  ];
  console.log(lines.filter((l) => l !== null).join('\n'));
  return {
    scenario: name,
    connections: concurrency,
    // client-send always sends one (the library does)
    client_message_ids: name === 'client-send' || O.clientMessageIds,
    conversations: convs.length,
    conv_type: O.convType,
    size: O.size,
    ...driveJson(main, 'sends'),
    ...mainDelivery.summary('delivery_'),
    delivered: mainDelivered,
    socket_closes: { ...closes.counts },
    ...ceilingJson(ceiling, 'pg_insert_rows'),
    ratio_to_pg: ratio === null ? null : round(ratio, 3),
    open_loop: open ? { ...driveJson(open.r, 'sends'), ...open.delivery.summary('delivery_'), delivered: open.delivered } : null,
    cost_notes: costMeter.notes(),
    targets: checks,
  };
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/** With --client-message-ids: a fresh id per send (never a retry, so every send is stored). */
const cmid = (): { client_message_id?: string } => (O.clientMessageIds ? { client_message_id: randomUUID() } : {});

async function httpSend(ctx: Ctx) {
  const convs = await setupConversations(ctx, O.conversations);
  const deliveries = new Deliveries();
  const closes = new Errors();
  const receivers = await openReceivers(ctx, convs.map((c) => c.receiver), deliveries, closes);
  console.log(`  ${convs.length} ${O.convType} conversations, ${receivers.length} receiver sockets, ${O.connections} concurrent POST /api/v1/messages (${ctx.http.kind} client)${O.clientMessageIds ? ', a client_message_id on every send' : ''}`);
  const op: Op = async (n, stamp) => {
    const c = convs[n % convs.length]!;
    const body = { conversation_id: c.id, content: content(O.size, stamp), ...cmid() };
    const r = await ctx.http.request('POST', '/api/v1/messages', JSON.stringify(body), c.sender.token);
    return r.status === 201 ? null : r.status === 0 ? r.error! : String(r.status);
  };
  try {
    return await sendScenario(ctx, 'http-send', convs, deliveries, closes, op, O.connections);
  } finally {
    closeAll(receivers);
  }
}

/**
 * http-send through the client library (client/): each sender a SoTalkClient (sendMessage: a
 * client_message_id on every send, retries), each receiver a LiveConnection whose ordered,
 * deduplicated stream is consumed; a receiver that sees a seq out of order or twice counts an error.
 */
async function clientSend(ctx: Ctx) {
  const convs = await setupConversations(ctx, O.conversations);
  const deliveries = new Deliveries();
  const closes = new Errors();
  // The senders' requests go through the bench's HTTP client (--client, as in http-send), so the
  // two scenarios differ by the library alone; --client fetch gives the library Node's fetch.
  const senders = convs.map((c) => libraryClient(ctx.target.baseUrl, c.sender, O.timeoutMs, ctx.http));
  const receivers = await mapLimit(convs.length, 64, async (i) => {
    const client = libraryClient(ctx.target.baseUrl, convs[i]!.receiver, O.timeoutMs);
    const live = client.live({ encoding: O.wsFormat });
    live.on('lagging', () => closes.add('consumer_lagging'));
    await live.start();
    const last = new Map<string, number>();
    void (async () => {
      for await (const m of live) {
        const before = last.get(m.conversation_id);
        if (before !== undefined && m.seq !== before + 1) closes.add('out_of_order_or_duplicate');
        last.set(m.conversation_id, m.seq);
        deliveries.seeStamp(stampOf(m.content));
      }
    })();
    return { client, live };
  });
  console.log(`  ${convs.length} ${O.convType} conversations, ${receivers.length} library live connections (${O.wsFormat}), ${O.connections} concurrent sendMessage calls (${ctx.http.kind} client)`);
  const op: Op = async (n, stamp) => {
    const i = n % convs.length;
    try {
      await senders[i]!.sendMessage({ conversation_id: convs[i]!.id, content: content(O.size, stamp) });
      return null;
    } catch (err) {
      return (err as { code?: string }).code ?? 'error';
    }
  };
  try {
    return await sendScenario(ctx, 'client-send', convs, deliveries, closes, op, O.connections);
  } finally {
    for (const r of receivers) {
      r.live.close();
      r.client.close();
    }
    for (const c of senders) c.close();
  }
}

interface SenderSocket {
  ws: WebSocket;
  conv: Conv;
  pending: Map<number, (err: string | null) => void>;
  closed: boolean;
}

async function wsSend(ctx: Ctx) {
  const convs = await setupConversations(ctx, O.conversations);
  const deliveries = new Deliveries();
  const closes = new Errors();
  const receivers = await openReceivers(ctx, convs.map((c) => c.receiver), deliveries, closes);
  let requestId = 0;
  const senders: SenderSocket[] = await mapLimit(O.connections, 64, async (i) => {
    const conv = convs[i % convs.length]!;
    const s = { conv, pending: new Map(), closed: false } as unknown as SenderSocket;
    s.ws = await openSocket(ctx.target.wsUrl, conv.sender.token, {
      format: O.wsFormat,
      onFrame: (f) => {
        if (deliveryStamp(f) >= 0) {
          deliveries.echoes++; // the sender's own sockets get every new_message too (docs/protocol.md)
          return;
        }
        const frame = decodeFrame(f, O.wsFormat);
        const id = frame?.request_id;
        if (typeof id !== 'number') return;
        const done = s.pending.get(id);
        if (!done) return;
        s.pending.delete(id);
        done(frame!.type === 'ack' ? null : `ws:${(frame!.error as { code?: string } | undefined)?.code ?? frame!.type}`);
      },
      onClose: (code) => {
        s.closed = true;
        closes.add(`ws_close:${code}`);
        for (const done of s.pending.values()) done('ws:closed');
        s.pending.clear();
      },
    });
    return s;
  });
  console.log(`  ${convs.length} ${O.convType} conversations, ${receivers.length} receiver sockets, ${senders.length} sender sockets × ${O.pipeline} in flight (${O.wsFormat})${O.clientMessageIds ? ', a client_message_id on every send' : ''}`);
  const op: Op = (n, stamp) => {
    const s = senders[n % senders.length]!;
    if (s.closed) return sleep(10).then(() => 'ws:closed');
    const id = ++requestId;
    return new Promise((resolve) => {
      s.pending.set(id, resolve);
      s.ws.send(encodeFrame({ type: 'send', request_id: id, conversation_id: s.conv.id, content: content(O.size, stamp), ...cmid() }, O.wsFormat));
    });
  };
  try {
    const r = await sendScenario(ctx, 'ws-send', convs, deliveries, closes, op, O.connections * O.pipeline);
    return { ...r, sender_sockets: senders.length, pipeline: O.pipeline, ws_format: O.wsFormat, sender_echo_frames: deliveries.echoes };
  } finally {
    closeAll(receivers);
    closeAll(senders.map((s) => s.ws));
  }
}

/** Fills each conversation with `perConv` messages over HTTP, many at once (seqs 1..perConv). */
async function prefill(ctx: Ctx, convs: { id: string; sender: User }[], perConv: number) {
  const started = now();
  const total = convs.length * perConv;
  await mapLimit(total, Math.max(O.connections, 32), async (i) => {
    const c = convs[i % convs.length]!;
    for (let attempt = 0; ; attempt++) {
      const r = await ctx.http.request('POST', '/api/v1/messages', JSON.stringify({ conversation_id: c.id, content: content(O.size, 0) }), c.sender.token);
      if (r.status === 201) return;
      if (attempt >= 5) throw new Error(`prefill: POST /api/v1/messages answered ${r.status || r.error}: ${r.body.toString('utf8').slice(0, 200)}`);
      await sleep(50 * (attempt + 1));
    }
  });
  const s = (now() - started) / 1000;
  console.log(`  prefilled ${convs.length} conversation(s) × ${perConv} messages in ${s.toFixed(1)} s (${fmt(total / s)} sends/s)`);
}

/** Closed-loop readers of history pages; every 20th page is parsed and checked. */
function pageOp(ctx: Ctx, pick: (n: number) => { conv: string; user: User; before: number | null }): { op: Op; bad: () => number } {
  let bad = 0;
  const op: Op = async (n) => {
    const p = pick(n);
    const q = p.before === null ? `limit=${O.pageSize}` : `limit=${O.pageSize}&before_seq=${p.before}`;
    const r = await ctx.http.request('GET', `/api/v1/conversations/${p.conv}/messages?${q}`, undefined, p.user.token);
    if (r.status !== 200) return r.status === 0 ? r.error! : String(r.status);
    if (n % 20 === 0) {
      const expected = Math.min(O.pageSize, p.before === null ? O.prefill : p.before - 1);
      try {
        const page = JSON.parse(r.body.toString('utf8')) as { messages: { content: string | null }[] };
        if (page.messages.length < expected || page.messages.some((m) => typeof m.content !== 'string' || !m.content.startsWith('@@T'))) bad++;
      } catch {
        bad++;
      }
    }
    return null;
  };
  return { op, bad: () => bad };
}

async function historyScenario(ctx: Ctx, name: 'history-cold' | 'history-hot') {
  const hot = name === 'history-hot';
  const k = hot ? 1 : O.conversations;
  let convs: { id: string; sender: User; readers: User[] }[];
  if (hot) {
    const readers = await signInMany(ctx.http, Math.max(2, Math.min(O.connections, 20)));
    const id = await createGroup(ctx.http, readers[0]!, readers.slice(1), 'hot page');
    convs = [{ id, sender: readers[0]!, readers }];
  } else {
    convs = (await setupConversations(ctx, k)).map((c) => ({ id: c.id, sender: c.sender, readers: [c.sender, c.receiver] }));
  }
  await prefill(ctx, convs, O.prefill);
  const lastSeq = O.prefill;
  const minBefore = Math.min(lastSeq + 1, O.pageSize + 1);
  const randomBefore = () => minBefore + Math.floor(Math.random() * (lastSeq + 2 - minBefore)); // in [minBefore, lastSeq + 1]
  const { op, bad } = pageOp(ctx, (n) => {
    const c = hot ? convs[0]! : convs[Math.floor(Math.random() * convs.length)]!;
    return { conv: c.id, user: c.readers[n % c.readers.length]!, before: hot ? null : randomBefore() };
  });
  console.log(
    hot
      ? `  ${O.connections} readers of the latest page (limit=${O.pageSize}) of one conversation, ${convs[0]!.readers.length} member tokens`
      : `  ${O.connections} readers of random pages (limit=${O.pageSize}&before_seq∈[${minBefore}, ${lastSeq + 1}]) of ${convs.length} conversations`,
  );
  if (O.warmup > 0) await drive(O.warmup, O.connections, null, op);
  const main = await drive(O.duration, O.connections, null, op);

  let ceiling: CeilingResult | null = null;
  if (ctx.target.pgUrl) {
    console.log(`  measuring the bare-pg ceiling (same query shape, ${O.connections} connections, ${O.duration} s)…`);
    ceiling = await readCeiling(
      ctx.target.pgUrl,
      () => {
        const c = convs[Math.floor(Math.random() * convs.length)]!;
        return { conversationId: c.id, beforeSeq: hot ? null : randomBefore() };
      },
      { seconds: O.duration, concurrency: O.connections, limit: O.pageSize },
    );
  }
  const ratio = ceiling ? main.per_s / ceiling.per_s : null;
  const checks = [hot ? check(5, 'hot pages/s ÷ bare pg', '≥ 1.5', ratio, (v) => v >= 1.5) : check(12, 'cold pages/s ÷ bare pg', '≥ 0.6', ratio, (v) => v >= 0.6)];
  const lines = [
    driveText('pages', main, 'pages'),
    `    = ${fmt(main.per_s * O.pageSize)} messages/s decrypted and served; ${bad()} sampled page(s) malformed`,
    ceiling
      ? `  bare pg: ${fmt(ceiling.per_s)} pages/s (p50 ${ceiling.latency.pct(50)} / p99 ${ceiling.latency.pct(99)} ms, errors ${ceiling.errors.text()}) → ratio ${ratio!.toFixed(2)}`
      : '  bare pg: skipped (no Postgres URL: pass --pg-url with --url)',
    clientWarning(main),
    notesText(),
    checksText(checks),
  ];
  console.log(lines.filter((l) => l !== null).join('\n'));
  return {
    scenario: name,
    connections: O.connections,
    conversations: convs.length,
    messages_per_conversation: O.prefill,
    page_size: O.pageSize,
    ...driveJson(main, 'pages'),
    messages_per_s: round(main.per_s * O.pageSize, 1),
    malformed_sampled_pages: bad(),
    ...ceilingJson(ceiling, 'pg_pages'),
    ratio_to_pg: ratio === null ? null : round(ratio, 3),
    cost_notes: costMeter.notes(),
    targets: checks,
  };
}

async function fanout(ctx: Ctx) {
  const users = await signInMany(ctx.http, O.groupSize);
  const groupId = await createGroup(ctx.http, users[0]!, users.slice(1), 'fan-out');
  const deliveries = new Deliveries();
  const closes = new Errors();
  const senderCount = Math.min(O.senders, users.length);
  const pending = Array.from({ length: senderCount }, () => new Map<number, (err: string | null) => void>());
  const closed = new Set<number>();
  const sockets = await mapLimit(users.length, 64, (i) =>
    openSocket(ctx.target.wsUrl, users[i]!.token, {
      format: O.wsFormat,
      onFrame: (f) => {
        if (deliveries.see(f) || i >= senderCount) return;
        const frame = decodeFrame(f, O.wsFormat);
        const id = frame?.request_id;
        const done = typeof id === 'number' ? pending[i]!.get(id) : undefined;
        if (!done) return;
        pending[i]!.delete(id as number);
        done(frame!.type === 'ack' ? null : `ws:${(frame!.error as { code?: string } | undefined)?.code ?? frame!.type}`);
      },
      onClose: (code) => {
        closes.add(`ws_close:${code}`);
        closed.add(i);
        if (i < senderCount) {
          for (const done of pending[i]!.values()) done('ws:closed');
          pending[i]!.clear();
        }
      },
    }),
  );
  console.log(`  group of ${users.length} members, ${sockets.length} sockets (${O.wsFormat}), ${senderCount} sender(s), ${O.window} sends in flight`);
  let requestId = 0;
  const op: Op = (n, stamp) => {
    const i = n % senderCount;
    if (closed.has(i)) return sleep(10).then(() => 'ws:closed');
    const id = ++requestId;
    return new Promise((resolve) => {
      pending[i]!.set(id, resolve);
      sockets[i]!.send(encodeFrame({ type: 'send', request_id: id, conversation_id: groupId, content: content(O.size, stamp) }, O.wsFormat));
    });
  };
  try {
    const rate = resolveRate(O.rate?.includes('%') ? undefined : O.rate, null, null);
    if (O.warmup > 0) await drive(O.warmup, O.window, rate, op);
    await sleep(200);
    const m0 = await readMetrics(ctx.target.baseUrl).catch(() => null);
    deliveries.open();
    const main = await drive(O.duration, O.window, rate, op);
    deliveries.closeWindow();
    const m1 = await readMetrics(ctx.target.baseUrl).catch(() => null);
    const expected = main.ok * users.length;
    await deliveries.settle(expected, 5000);
    const perS = deliveries.count / main.seconds;
    const framesOut = m0 && m1 ? (metricSum(m1, 'sotalk_ws_frames_total', 'direction="out"') - metricSum(m0, 'sotalk_ws_frames_total', 'direction="out"')) / main.seconds : null;
    const perDelivery = CostMeter.cost(main.costSamples[0], main.costSamples[1], deliveries.count);
    // "≥ 300,000 deliveries/s or the load generator's own limit": every frame is parsed by this
    // one process, so a busy event loop here caps the figure before the server does.
    const clientBound = main.cpu.client_elu > 0.9;
    const latencyCase = senderCount === 1 && O.window === 1;
    const checks = [
      check(
        12,
        'socket deliveries/s',
        "≥ 300,000 or the load generator's own limit",
        perS,
        // the latency case sends one message at a time: its rate says nothing about throughput
        (v) => (latencyCase ? null : v >= 300_000 || clientBound),
        [
          clientBound ? `load generator's event loop ${Math.round(main.cpu.client_elu * 100)}% busy: this is its own limit` : null,
          users.length !== 100 ? `the target is for 100 members; this group has ${users.length}` : null,
          latencyCase ? 'not judged: one sender, one in flight is the latency case' : null,
        ]
          .filter(Boolean)
          .join('; ') || undefined,
      ),
      check(12, 'server CPU µs per delivery', '≤ 1.5', perDelivery.cpu_us.server, (v) => (latencyCase ? null : v <= 1.5), latencyCase ? 'not judged in the latency case (fixed costs spread over few sends)' : undefined),
      ...redisChecks(main),
      check(12, 'delivery p50 ms, one sender, one request in flight', '< 3', latencyCase ? deliveries.latency.pct(50) : null, (v) => v < 3, latencyCase ? undefined : 'run --scenario fanout --senders 1 --window 1'),
    ];
    const lines = [
      driveText('sends', main, 'sends'),
      costText('delivery', perDelivery),
      `  deliveries: ${fmt(perS)} frames/s across ${sockets.length} sockets (${fmt(deliveries.count)} of ${fmt(expected)} expected; server counted ${framesOut === null ? '?' : fmt(framesOut)} frames out/s)`,
      `    delivery ${deliveries.latency.text()}`,
      `    socket closes: ${closes.text()}`,
      clientWarning(main),
      notesText(),
      checksText(checks),
    ];
    console.log(lines.filter((l) => l !== null).join('\n'));
    return {
      scenario: 'fanout',
      group_size: users.length,
      senders: senderCount,
      window: O.window,
      ws_format: O.wsFormat,
      size: O.size,
      deliveries_per_s: round(perS, 1),
      deliveries: deliveries.count,
      expected_deliveries: expected,
      delivery_ratio: expected ? round(deliveries.count / expected, 4) : null,
      server_frames_out_per_s: framesOut === null ? null : round(framesOut, 1),
      ...driveJson(main, 'sends'),
      ...costJson('delivery', perDelivery),
      ...deliveries.latency.summary('delivery_'),
      socket_closes: { ...closes.counts },
      cost_notes: costMeter.notes(),
      targets: checks,
    };
  } finally {
    closeAll(sockets);
  }
}

async function rssSample(target: Target): Promise<{ rss: number; heap: number | null; connections: number | null }> {
  const samples: { rss: number; heap: number | null; connections: number | null }[] = [];
  for (let i = 0; i < 3; i++) {
    const m = await readMetrics(target.baseUrl);
    const rss = metric(m, RSS);
    if (rss === undefined) throw new Error('the server exports no sotalk_process_(process_)resident_memory_bytes');
    samples.push({ rss, heap: metric(m, HEAP_USED) ?? null, connections: metric(m, /^sotalk_ws_connections$/) ?? null });
    if (i < 2) await sleep(500);
  }
  samples.sort((x, y) => x.rss - y.rss);
  return samples[1]!;
}

async function idle(ctx: Ctx) {
  const n = O.sockets;
  const need = n + 512;
  const mine = openFileLimit();
  const serverMax = metric(await readMetrics(ctx.target.baseUrl), MAX_FDS) ?? null;
  const limits = [mine !== null && mine < need ? `this process may open ${mine} files` : null, serverMax !== null && serverMax < need ? `the server may open ${serverMax}` : null].filter(Boolean);
  if (limits.length > 0) {
    throw new Error(
      `${n} sockets need ~${need} file descriptors on each side, but ${limits.join(' and ')}. ` +
        `Raise the limit in the shell that runs both (the spawned server inherits it): \`ulimit -n ${Math.max(65536, need * 2)}\` ` +
        `(above the hard limit needs root, or a higher nofile in /etc/security/limits.conf / LimitNOFILE= for a service), ` +
        `or ask for fewer with --sockets.`,
    );
  }
  const userCount = Math.min(O.idleUsers ?? n, n);
  const users = await signInMany(ctx.http, userCount, 64);
  // Warm the socket path (code, allocator) with a few sockets opened and closed, then settle.
  const warm = await mapLimit(Math.min(200, n), 64, (i) => openSocket(ctx.target.wsUrl, users[i % users.length]!.token, { format: O.wsFormat }));
  closeAll(warm);
  await sleep(2000);
  const before = await rssSample(ctx.target);
  // One source address per 20,000 sockets: a (source ip, destination) pair has ~28k ephemeral ports.
  const loopback = ['127.0.0.1', 'localhost'].includes(ctx.target.host);
  if (!loopback && n > 20_000) console.log('  note: target is not 127.0.0.1; more than ~28k sockets may run out of ephemeral ports');
  const sockets: WebSocket[] = [];
  const failures = new Errors();
  const closes = new Errors();
  let opened = 0;
  let openSeconds = 0;
  // Opened in STEPS equal steps with the RSS read after each: the bytes per socket is the slope
  // of RSS over socket count, fitted on the steps (the empty-server point is left out of the fit,
  // since garbage from the sign-ins may be collected and returned while the first step opens).
  const STEPS = n >= 400 ? 4 : 1;
  const points: { sockets: number; rss: number; heap: number | null }[] = [{ sockets: 0, rss: before.rss, heap: before.heap }];
  const progress = setInterval(() => console.log(`  … ${fmt(opened)}/${fmt(n)} sockets open`), 5000);
  try {
    for (let step = 1; step <= STEPS; step++) {
      const from = Math.floor(((step - 1) * n) / STEPS);
      const to = Math.floor((step * n) / STEPS);
      const t0 = now();
      await mapLimit(to - from, 256, async (k) => {
        const i = from + k;
        const source = loopback && i >= 20_000 ? `127.0.0.${2 + Math.floor((i - 20_000) / 20_000)}` : undefined;
        try {
          const ws = await openSocket(ctx.target.wsUrl, users[i % users.length]!.token, {
            format: O.wsFormat,
            localAddress: source,
            timeoutMs: 30_000,
            onClose: (code) => closes.add(`ws_close:${code}`),
          });
          sockets.push(ws);
          opened++;
        } catch (err) {
          failures.add((err as Error).message.slice(0, 80));
        }
      });
      openSeconds += (now() - t0) / 1000;
      await sleep(step === STEPS ? O.settle * 1000 : 1000);
      const r = await rssSample(ctx.target);
      points.push({ sockets: opened, rss: r.rss, heap: r.heap });
    }
  } finally {
    clearInterval(progress);
  }
  console.log(`  opened ${fmt(opened)} sockets in ${openSeconds.toFixed(1)} s (${fmt(opened / openSeconds)}/s); failures: ${failures.text()}`);
  try {
    const after = await rssSample(ctx.target);
    // Hold them idle for the scenario's duration (pings keep them alive), then look again.
    const holdUntil = now() + O.duration * 1000;
    while (now() < holdUntil) await sleep(Math.min(1000, holdUntil - now()));
    const end = await rssSample(ctx.target);
    const fitted = points.length >= 3 ? slope(points.slice(1).map((p) => [p.sockets, p.rss])) : null;
    const naive = opened ? (after.rss - before.rss) / opened : null;
    const perSocket = fitted ?? naive;
    const perSocketEnd = opened ? (end.rss - before.rss) / opened : null;
    const heapPoints = points.slice(1).filter((p) => p.heap !== null);
    const heapPerSocket = heapPoints.length >= 2 ? slope(heapPoints.map((p) => [p.sockets, p.heap!])) : null;
    const clientRss = process.memoryUsage().rss;
    const checks = [
      check(5, 'idle authenticated sockets', '≥ 50,000', opened, (v) => v >= 50_000),
      check(5, 'server RSS bytes per socket', '≤ 2048', perSocket, (v) => v <= 2048),
    ];
    const mib = (b: number) => (b / 2 ** 20).toFixed(1);
    const b = (v: number | null) => (v === null ? '?' : fmt(v));
    console.log(
      [
        `  server RSS by open sockets: ${points.map((p) => `${fmt(p.sockets)} → ${mib(p.rss)} MiB`).join(', ')}; ${mib(end.rss)} MiB after ${O.duration} s idle`,
        `  = ${b(perSocket)} bytes of RSS per socket (${fitted !== null ? 'slope over the steps' : 'after − before'}; after − before: ${b(naive)}, at the end: ${b(perSocketEnd)}; JS heap ${b(heapPerSocket)} bytes/socket)`,
        `  sotalk_ws_connections: ${after.connections ?? '?'}; closes while idle: ${closes.text()}; this process: ${mib(clientRss)} MiB RSS`,
        checksText(checks),
      ].join('\n'),
    );
    return {
      scenario: 'idle',
      sockets_requested: n,
      sockets_open: opened,
      users: users.length,
      open_failures: { ...failures.counts },
      open_per_s: round(opened / openSeconds, 1),
      server_ws_connections: after.connections,
      rss_points: points.map((p) => ({ sockets: p.sockets, rss_bytes: p.rss })),
      rss_before_bytes: before.rss,
      rss_after_bytes: after.rss,
      rss_end_bytes: end.rss,
      bytes_per_socket: perSocket === null ? null : round(perSocket, 0),
      bytes_per_socket_naive: naive === null ? null : round(naive, 0),
      bytes_per_socket_end: perSocketEnd === null ? null : round(perSocketEnd, 0),
      heap_bytes_per_socket: heapPerSocket === null ? null : round(heapPerSocket, 0),
      idle_seconds: O.duration,
      closes_while_idle: { ...closes.counts },
      client_rss_bytes: clientRss,
      targets: checks,
    };
  } finally {
    closeAll(sockets);
    await sleep(1000);
  }
}

/** Least-squares slope of y over x. */
function slope(xy: [number, number][]): number | null {
  const n = xy.length;
  const mx = xy.reduce((t, [x]) => t + x, 0) / n;
  const my = xy.reduce((t, [, y]) => t + y, 0) / n;
  const sxx = xy.reduce((t, [x]) => t + (x - mx) ** 2, 0);
  if (sxx === 0) return null;
  return xy.reduce((t, [x, y]) => t + (x - mx) * (y - my), 0) / sxx;
}

const RUNNERS: Record<Scenario, (ctx: Ctx) => Promise<Record<string, unknown>>> = {
  'http-send': httpSend,
  'ws-send': wsSend,
  'client-send': clientSend,
  'history-cold': (ctx) => historyScenario(ctx, 'history-cold'),
  'history-hot': (ctx) => historyScenario(ctx, 'history-hot'),
  fanout,
  idle,
};

// ---------------------------------------------------------------------------------------------

function budgetSeconds(): number {
  const phase = O.duration + O.warmup;
  let total = 120; // server start, database
  for (const s of selected) {
    if (s === 'http-send' || s === 'ws-send' || s === 'client-send') total += 3 * phase + 90;
    else if (s === 'history-cold' || s === 'history-hot') total += 2 * phase + 120 + (O.conversations * O.prefill) / 500;
    else if (s === 'fanout') total += phase + 60;
    else total += O.duration + O.settle + 60 + O.sockets / 100 + Math.min(O.idleUsers ?? O.sockets, O.sockets) / 40;
  }
  return Math.ceil(total);
}

async function main(): Promise<void> {
  const machine = machineInfo();
  const maxRuntime = a['max-runtime'] === undefined ? budgetSeconds() : num(a, 'max-runtime', 1);
  const state: { target?: Target; cluster?: ThrowawayRedisCluster } = {};
  let stopping = false;
  const abort = async (why: string, code: number) => {
    if (stopping) return;
    stopping = true;
    stop.now = true;
    console.error(`\n${why}: stopping`);
    await state.target?.close().catch(() => {});
    await state.cluster?.stop().catch(() => {});
    process.exit(code);
  };
  const watchdog = setTimeout(() => void abort(`hard time limit of ${maxRuntime} s reached (--max-runtime)`, 3), maxRuntime * 1000);
  process.once('SIGINT', () => void abort('SIGINT', 130));
  process.once('SIGTERM', () => void abort('SIGTERM', 143));

  console.log(`sotalk load: ${selected.join(', ')}; ${O.duration} s per phase (+${O.warmup} s warm-up); ${machine.cpus} cpus, node ${machine.node}, load ${machine.loadavg_1m_at_start}`);
  if (a.redis !== undefined && a.redis !== 'cluster') fail(`--redis: expected cluster, got ${a.redis}`);
  if (a.redis === 'cluster') {
    if (a.url) fail('--redis cluster starts a cluster for the spawned server: not with --url');
    state.cluster = await startRedisCluster();
    process.env.REDIS_URL = state.cluster.url;
    console.log(`throwaway Redis Cluster: ${state.cluster.url}`);
  }
  const target = (state.target = await openTarget({ url: a.url, pgUrl: a['pg-url'], logLevel: a['log-level']!, dbAsIs: bool(a, 'db-as-is') }));
  console.log(target.spawned ? `spawned server on ${target.baseUrl} (${JSON.stringify(target.serverInfo)})` : `target ${target.baseUrl}`);
  costMeter = new CostMeter(target, process.env.REDIS_URL || undefined);
  const http = await createHttpClient(target.baseUrl, O.client, Math.max(O.connections, 64), O.timeoutMs);
  let failed = false;
  try {
    for (const s of selected) {
      console.log(`\n== ${s}`);
      const started = now();
      const warningsBefore = target.warnings();
      let result: Record<string, unknown>;
      try {
        result = await RUNNERS[s]({ target, http });
      } catch (err) {
        failed = true;
        console.error(`  ${s} failed: ${(err as Error).message}`);
        result = { scenario: s, error: (err as Error).message };
      }
      const warnings = target.warnings() - warningsBefore;
      if (warnings > 0) console.log(`  the server logged ${warnings} warning/error line(s) during this scenario`);
      const line = JSON.stringify({
        ...result,
        server_warnings: warnings,
        wall_s: round((now() - started) / 1000, 1),
        client: http.kind,
        server: target.spawned ? { spawned: true, ...target.serverInfo } : { spawned: false, url: target.baseUrl },
        machine,
        at: new Date().toISOString(),
      });
      console.log(line);
      if (a.out) appendFileSync(a.out, line + '\n');
    }
  } finally {
    await http.close();
    costMeter?.close();
    await target.close();
    await state.cluster?.stop();
    clearTimeout(watchdog);
  }
  if (failed) process.exitCode = 1;
}

await main();
