// Soak test for SoTalk: a bounded run of mixed traffic against a server it spawns
// (`node bin/sotalk.js serve` on a fresh database, dropped afterwards) or one at --url.
// Mixed traffic: sends over HTTP and over sockets, history pages, edits, read receipts (HTTP and
// socket), `received` frames, typing, conversation lists. The load is bounded: a fixed number of
// workers and a cap on the total request rate.
//
// Every --interval seconds (default 10) it prints requests/s, errors by code, p50/p99 latency and
// the server's RSS; at the end a summary with the latency drift (first vs last window), memory
// growth, and ONE JSON line (prefix `SOAK_RESULT `).
//
//   node --import tsx bench/soak.ts                      # 3 minutes
//   node --import tsx bench/soak.ts --minutes 0.5 --rate 100
//   node --import tsx bench/soak.ts --url http://127.0.0.1:8080
//
// Environment for the spawned server: BENCH_DATABASE_URL / DATABASE_URL (admin URL on which a
// database is created and dropped; default postgresql://postgres@127.0.0.1:5432/postgres).
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import bs58 from 'bs58';
import WebSocket from 'ws';
import { adminQuery } from './lib/target.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const DEFAULT_ADMIN_URL = 'postgresql://postgres@127.0.0.1:5432/postgres';
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const now = () => performance.now();

// ---------------------------------------------------------------- options

interface Options {
  minutes: number;
  interval: number;
  users: number;
  workers: number;
  rate: number;
  poolSize: string | undefined;
  url: string | undefined;
  logLevel: string;
}

const USAGE = `usage: node --import tsx bench/soak.ts [options]

  --minutes N      how long to run (default 3; fractions allowed, e.g. 0.5)
  --interval S     seconds per report window (default 10)
  --users N        signed-in users, each with one socket (default 8)
  --workers N      concurrent request loops (default 8)
  --rate N         cap on requests + frames per second, all workers together (default 150)
  --pool-size N    CRYPTO_POOL_SIZE of the spawned server (default: the server's default)
  --url URL        soak a running server instead of spawning one
  --log-level L    LOG_LEVEL of the spawned server (default warn)
`;

function parseOptions(argv: string[]): Options {
  const known = ['minutes', 'interval', 'users', 'workers', 'rate', 'pool-size', 'url', 'log-level'];
  const raw: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') {
      process.stdout.write(USAGE);
      process.exit(0);
    }
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (!m) fail(`unexpected argument ${arg}\n${USAGE}`);
    if (!known.includes(m[1]!)) fail(`unknown option --${m[1]}\n${USAGE}`);
    const value = m[2] ?? argv[++i];
    if (value === undefined) fail(`--${m[1]} needs a value`);
    raw[m[1]!] = value;
  }
  const num = (name: string, fallback: number, min: number, max: number) => {
    const v = raw[name] === undefined ? fallback : Number(raw[name]);
    if (!Number.isFinite(v) || v < min || v > max) fail(`--${name} must be a number between ${min} and ${max}`);
    return v;
  };
  return {
    minutes: num('minutes', 3, 0.05, 24 * 60),
    interval: num('interval', 10, 1, 3600),
    users: Math.round(num('users', 8, 2, 1000)),
    workers: Math.round(num('workers', 8, 1, 256)),
    rate: num('rate', 150, 1, 100_000),
    poolSize: raw['pool-size'],
    url: raw.url,
    logLevel: raw['log-level'] ?? 'warn',
  };
}

function fail(message: string): never {
  process.stderr.write(`soak: ${message}\n`);
  process.exit(2);
}

// ---------------------------------------------------------------- the server

interface Target {
  baseUrl: string;
  child?: ChildProcess;
  /** Stops a spawned server (SIGTERM) and drops its database; returns its exit code. */
  close(): Promise<number | null>;
  /** Log lines of a spawned server at warn or above (and stderr). */
  problems: string[];
}

async function openTarget(o: Options): Promise<Target> {
  if (o.url) {
    const base = o.url.replace(/\/+$/, '');
    const res = await fetch(`${base}/healthz`).catch((err: Error) => fail(`no server at ${base}: ${err.message}`));
    if (!res.ok) fail(`${base}/healthz answered ${res.status}`);
    return { baseUrl: base, problems: [], close: async () => null };
  }
  const admin = process.env.BENCH_DATABASE_URL || process.env.DATABASE_URL || DEFAULT_ADMIN_URL;
  const dbName = `sotalk_soak_${randomBytes(5).toString('hex')}`;
  await adminQuery(admin, `CREATE DATABASE ${dbName}`);
  const dbUrl = new URL(admin);
  dbUrl.pathname = `/${dbName}`;
  const dataDir = mkdtempSync(join(tmpdir(), 'sotalk-soak-'));
  const child = spawn(process.execPath, ['bin/sotalk.js', 'serve'], {
    cwd: REPO,
    env: {
      ...process.env,
      NODE_ENV: 'production',
      HOST: '127.0.0.1',
      PORT: '0',
      LOG_LEVEL: o.logLevel === 'warn' ? 'info' : o.logLevel, // info for the "listening" line; filtered below
      DATABASE_URL: dbUrl.toString(),
      REDIS_URL: '',
      ENCRYPTION_MASTER_KEY: randomBytes(32).toString('base64'),
      ENCRYPTION_OLD_MASTER_KEYS: '',
      SOTALK_DATA_DIR: dataDir,
      // a soak sends far more than a person does; the per-user limits would cap it
      RATE_LIMIT_SEND_PER_MIN: '0',
      RATE_LIMIT_TYPING_PER_MIN: '0',
      RATE_LIMIT_RECEIPT_PER_MIN: '0',
      RATE_LIMIT_SIGNIN_PER_ADDRESS_PER_MIN: '0',
      RATE_LIMIT_CREATE_CONVERSATION_PER_MIN: '0',
      ...(o.poolSize ? { CRYPTO_POOL_SIZE: o.poolSize } : {}),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const problems: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let closing: Promise<number | null> | undefined;
  const close = () =>
    (closing ??= (async () => {
      let code: number | null = child.exitCode;
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
        code = await exited;
        clearTimeout(t);
      }
      process.removeListener('exit', killOnExit);
      await adminQuery(admin, `DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch((err: Error) => console.error(`warning: could not drop ${dbName}: ${err.message}`));
      rmSync(dataDir, { recursive: true, force: true });
      return code;
    })());
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the server did not log "sotalk listening" within 60 s')), 60_000);
      createInterface({ input: child.stdout! }).on('line', (line) => {
        let rec: { msg?: string; port?: number; level?: number } | undefined;
        try {
          rec = JSON.parse(line);
        } catch {
          /* not a log line */
        }
        if (rec?.msg === 'sotalk listening' && typeof rec.port === 'number') {
          clearTimeout(timer);
          resolve(rec.port);
        } else if (rec && typeof rec.level === 'number' && rec.level >= 40) {
          problems.push(line);
          if (problems.length <= 20) console.error(`[server] ${line.slice(0, 500)}`);
        }
      });
      createInterface({ input: child.stderr! }).on('line', (line) => {
        problems.push(`[stderr] ${line}`);
        console.error(`[server stderr] ${line}`);
      });
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`the server exited (${code}) before listening`));
      });
    });
    return { baseUrl: `http://127.0.0.1:${port}`, child, problems, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** RSS, and the process heap (prom-client's process_heap_bytes: the data segment, JS heap included). */
async function serverMemory(baseUrl: string): Promise<{ rss: number; heap: number } | undefined> {
  try {
    const text = await (await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
    const rss = /^sotalk_process_(?:process_)?resident_memory_bytes (\S+)$/m.exec(text);
    const heap = /^sotalk_process_(?:nodejs_heap_size_used_bytes|heap_bytes) (\S+)$/m.exec(text);
    return { rss: Number(rss?.[1] ?? NaN), heap: Number(heap?.[1] ?? NaN) };
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- clients

interface User {
  id: string;
  token: string;
  socket: WebSocket;
  pending: Map<string, { started: number; op: string; resolve: () => void }>;
  /** Own recent message ids, for edits. */
  own: string[];
}

interface Conversation {
  id: string;
  members: User[];
  lastSeq: number;
}

async function call(baseUrl: string, method: string, path: string, token: string | undefined, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(baseUrl + path, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = text;
  }
  return { status: res.status, body: parsed };
}

async function signInUser(baseUrl: string): Promise<{ id: string; token: string }> {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const wallet = bs58.encode(publicKey.export({ format: 'der', type: 'spki' }).subarray(-32));
  const ch = await call(baseUrl, 'POST', '/api/v1/auth/challenge', undefined, { wallet });
  if (ch.status !== 200) throw new Error(`challenge: ${ch.status} ${JSON.stringify(ch.body)}`);
  const signature = bs58.encode(sign(null, Buffer.from(ch.body.message, 'utf8'), privateKey));
  const v = await call(baseUrl, 'POST', '/api/v1/auth/verify', undefined, { wallet, nonce: ch.body.nonce, signature });
  if (v.status !== 200) throw new Error(`verify: ${v.status} ${JSON.stringify(v.body)}`);
  return { id: v.body.user.id, token: v.body.token };
}

function openSocket(baseUrl: string, token: string, onError: (code: string) => void): Promise<{ socket: WebSocket; pending: User['pending'] }> {
  const socket = new WebSocket(baseUrl.replace(/^http/, 'ws') + '/ws', { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
  const pending: User['pending'] = new Map();
  socket.on('message', (data) => {
    let f: any;
    try {
      f = JSON.parse(String(data));
    } catch {
      onError('socket:bad_frame');
      return;
    }
    if ((f.type === 'ack' || f.type === 'error') && f.request_id && pending.has(f.request_id)) {
      const p = pending.get(f.request_id)!;
      pending.delete(f.request_id);
      if (f.type === 'error') onError(`socket:${f.error?.code ?? 'unknown'}`);
      else latency.record(p.op, now() - p.started);
      p.resolve();
    } else if (f.type === 'error') {
      onError(`socket:${f.error?.code ?? 'unknown'}`);
    }
  });
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.once('unexpected-response', (_req, res) => reject(new Error(`socket upgrade refused: ${res.statusCode}`)));
    socket.once('message', () => resolve({ socket, pending })); // hello
  });
}

// ---------------------------------------------------------------- measurements

class Window {
  readonly samples = new Map<string, number[]>();
  readonly errors = new Map<string, number>();
  ops = 0;
  record(op: string, ms: number): void {
    let list = this.samples.get(op);
    if (!list) this.samples.set(op, (list = []));
    list.push(ms);
    this.ops++;
  }
  error(code: string): void {
    this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
    this.ops++;
  }
  all(): number[] {
    return [...this.samples.values()].flat().sort((x, y) => x - y);
  }
}

const percentile = (sorted: number[], p: number) => (sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!);
const round = (v: number, d = 1) => (Number.isFinite(v) ? Math.round(v * 10 ** d) / 10 ** d : null);
const mib = (b: number) => b / 2 ** 20;

let current = new Window();
const latency = { record: (op: string, ms: number) => current.record(op, ms) };
const recordError = (code: string) => current.error(code);
/** Fire-and-forget frames (typing, receipts) counted as operations without a latency. */
let framesThisWindow = 0;

interface WindowReport {
  t: number;
  ops: number;
  rps: number;
  frames: number;
  p50: number | null;
  p99: number | null;
  byOp: Record<string, { n: number; p50: number | null; p99: number | null }>;
  errors: Record<string, number>;
  rssMiB: number | null;
  heapMiB: number | null;
}

// ---------------------------------------------------------------- traffic

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  const durationMs = o.minutes * 60_000;
  console.log(
    `soak: ${o.minutes} min, ${o.users} users, ${o.workers} workers, at most ${o.rate} ops/s, reports every ${o.interval} s` +
      (o.url ? `, against ${o.url}` : ', spawning a server'),
  );
  const target = await openTarget(o);
  let exitCode: number | null = null;
  const users: User[] = [];
  try {
    const base = target.baseUrl;
    // users, one socket each
    for (let i = 0; i < o.users; i++) {
      const u = await signInUser(base);
      const { socket, pending } = await openSocket(base, u.token, recordError);
      users.push({ ...u, socket, pending, own: [] });
    }
    // conversations: a ring of direct ones, and two groups of everyone
    const conversations: Conversation[] = [];
    for (let i = 0; i < users.length; i++) {
      const a = users[i]!;
      const b = users[(i + 1) % users.length]!;
      const r = await call(base, 'POST', '/api/v1/conversations', a.token, { type: 'direct', member_ids: [b.id] });
      if (r.status !== 200 && r.status !== 201) throw new Error(`create direct: ${r.status} ${JSON.stringify(r.body)}`);
      conversations.push({ id: r.body.conversation.id, members: [a, b], lastSeq: 0 });
    }
    for (let g = 0; g < 2; g++) {
      const owner = users[g]!;
      const r = await call(base, 'POST', '/api/v1/conversations', owner.token, {
        type: 'group',
        title: `soak ${g}`,
        member_ids: users.filter((u) => u !== owner).map((u) => u.id),
      });
      if (r.status !== 201) throw new Error(`create group: ${r.status} ${JSON.stringify(r.body)}`);
      conversations.push({ id: r.body.conversation.id, members: users, lastSeq: 0 });
    }
    const pick = <T>(list: T[]) => list[Math.floor(Math.random() * list.length)]!;
    const text = () => `soak ${randomBytes(4).toString('hex')} ${'lorem ipsum '.repeat(1 + Math.floor(Math.random() * 20))}`;

    let requestSeq = 0;
    const http = async (op: string, method: string, path: string, token: string, body?: unknown) => {
      const t = now();
      try {
        const r = await call(base, method, path, token, body);
        if (r.status >= 400) recordError(`${r.status} ${r.body?.error?.code ?? ''}`.trim());
        else latency.record(op, now() - t);
        return r;
      } catch (err) {
        recordError(`network:${(err as Error).name === 'TimeoutError' ? 'timeout' : 'error'}`);
        return undefined;
      }
    };

    /** One operation from the mix. */
    const step = async () => {
      const conv = pick(conversations);
      const user = pick(conv.members);
      const r = Math.random();
      if (r < 0.3) {
        const res = await http('send_http', 'POST', '/api/v1/messages', user.token, { conversation_id: conv.id, content: text() });
        if (res?.status === 201) {
          conv.lastSeq = Math.max(conv.lastSeq, res.body.message.seq);
          user.own.push(res.body.message.id);
          if (user.own.length > 50) user.own.shift();
        }
      } else if (r < 0.45) {
        if (user.socket.readyState !== WebSocket.OPEN) {
          recordError('socket:closed');
          return;
        }
        const requestId = `s${++requestSeq}`;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            if (user.pending.delete(requestId)) recordError('socket:timeout');
            resolve();
          }, 30_000);
          user.pending.set(requestId, { started: now(), op: 'send_socket', resolve: () => (clearTimeout(timer), resolve()) });
          user.socket.send(JSON.stringify({ type: 'send', request_id: requestId, conversation_id: conv.id, content: text() }));
        });
      } else if (r < 0.65) {
        const cursor = conv.lastSeq > 60 && Math.random() < 0.5 ? `&before_seq=${1 + Math.floor(Math.random() * conv.lastSeq)}` : '';
        const res = await http('history', 'GET', `/api/v1/conversations/${conv.id}/messages?limit=50${cursor}`, user.token);
        const last = res?.body?.messages?.at?.(-1)?.seq;
        if (typeof last === 'number' && !cursor) conv.lastSeq = Math.max(conv.lastSeq, last);
      } else if (r < 0.75) {
        const id = user.own.length ? pick(user.own) : undefined;
        if (id) await http('edit', 'PATCH', `/api/v1/messages/${id}`, user.token, { content: `edited ${text()}` });
        else await http('list', 'GET', '/api/v1/conversations?limit=20', user.token);
      } else if (r < 0.85) {
        if (conv.lastSeq > 0) await http('read_http', 'POST', `/api/v1/conversations/${conv.id}/read`, user.token, { seq: conv.lastSeq });
        else await http('list', 'GET', '/api/v1/conversations?limit=20', user.token);
      } else if (r < 0.92) {
        if (user.socket.readyState === WebSocket.OPEN && conv.lastSeq > 0) {
          user.socket.send(JSON.stringify({ type: Math.random() < 0.5 ? 'received' : 'read', conversation_id: conv.id, seq: conv.lastSeq }));
          framesThisWindow++;
        }
      } else if (r < 0.96) {
        if (user.socket.readyState === WebSocket.OPEN) {
          user.socket.send(JSON.stringify({ type: 'typing', conversation_id: conv.id }));
          framesThisWindow++;
        }
      } else {
        await http('list', 'GET', '/api/v1/conversations?limit=20', user.token);
      }
    };

    // workers, each paced so that all together stay under --rate
    const started = Date.now();
    const deadline = started + durationMs;
    const perWorkerGapMs = (1000 * o.workers) / o.rate;
    let running = true;
    const workers = Array.from({ length: o.workers }, async () => {
      while (running && Date.now() < deadline) {
        const t = now();
        await step();
        const spent = now() - t;
        if (spent < perWorkerGapMs) await sleep(perWorkerGapMs - spent);
      }
    });

    // reports
    const reports: WindowReport[] = [];
    const baseline = await serverMemory(base);
    console.log(`baseline: server RSS ${baseline ? mib(baseline.rss).toFixed(1) : '?'} MiB, process heap ${baseline ? mib(baseline.heap).toFixed(1) : '?'} MiB`);
    console.log('   t(s)   ops/s  frames/s   p50(ms)   p99(ms)   RSS(MiB)  procheap(MiB)  errors');
    const reporter = (async () => {
      let windowStart = Date.now();
      while (running) {
        const end = Math.min(windowStart + o.interval * 1000, deadline);
        while (running && Date.now() < end) await sleep(Math.min(200, Math.max(1, end - Date.now())));
        const w = current;
        current = new Window();
        const frames = framesThisWindow;
        framesThisWindow = 0;
        const seconds = (Date.now() - windowStart) / 1000;
        windowStart = Date.now();
        const mem = await serverMemory(base);
        const all = w.all();
        const byOp: WindowReport['byOp'] = {};
        for (const [op, list] of w.samples) {
          const s = [...list].sort((x, y) => x - y);
          byOp[op] = { n: s.length, p50: round(percentile(s, 50), 2), p99: round(percentile(s, 99), 2) };
        }
        const rep: WindowReport = {
          t: Math.round((Date.now() - started) / 1000),
          ops: w.ops,
          rps: round(w.ops / seconds) ?? 0,
          frames,
          p50: round(percentile(all, 50), 2),
          p99: round(percentile(all, 99), 2),
          byOp,
          errors: Object.fromEntries(w.errors),
          rssMiB: mem ? round(mib(mem.rss)) : null,
          heapMiB: mem ? round(mib(mem.heap)) : null,
        };
        reports.push(rep);
        const errs = Object.entries(rep.errors).map(([k, v]) => `${k}×${v}`).join(' ') || '-';
        console.log(
          `${String(rep.t).padStart(7)} ${String(rep.rps).padStart(7)} ${String(round(frames / seconds)).padStart(9)} ${String(rep.p50).padStart(9)} ${String(rep.p99).padStart(9)} ${String(rep.rssMiB).padStart(10)} ${String(rep.heapMiB).padStart(14)}  ${errs}`,
        );
        if (Date.now() >= deadline) break;
        if (target.child && target.child.exitCode !== null) {
          console.error('soak: the server exited during the run');
          break;
        }
      }
    })();
    await reporter;
    running = false;
    await Promise.all(workers);
    // answers still outstanding count as errors in the totals below
    const unanswered = users.reduce((n, u) => n + u.pending.size, 0);

    // summary
    const full = reports.filter((r) => r.ops > 0);
    const first = full[0];
    const last = full.at(-1);
    const totals = new Map<string, number>();
    let totalOps = 0;
    for (const r of reports) {
      totalOps += r.ops;
      for (const [k, v] of Object.entries(r.errors)) totals.set(k, (totals.get(k) ?? 0) + v);
    }
    const totalErrors = [...totals.values()].reduce((a, b) => a + b, 0);
    const rssSeries = reports.map((r) => r.rssMiB).filter((v): v is number => v !== null);
    const slope = (() => {
      // least-squares MiB per minute over the windows
      const pts = reports.filter((r) => r.rssMiB !== null).map((r) => [r.t / 60, r.rssMiB!] as const);
      if (pts.length < 2) return null;
      const mx = pts.reduce((s, p) => s + p[0], 0) / pts.length;
      const my = pts.reduce((s, p) => s + p[1], 0) / pts.length;
      const num = pts.reduce((s, p) => s + (p[0] - mx) * (p[1] - my), 0);
      const den = pts.reduce((s, p) => s + (p[0] - mx) ** 2, 0);
      return den === 0 ? null : round(num / den, 2);
    })();
    const ratio = (a: number | null | undefined, b: number | null | undefined) => (a && b ? round(b / a, 2) : null);

    exitCode = await target.close();
    const serverProblems = target.problems.length;
    const summary = {
      minutes: o.minutes,
      users: o.users,
      workers: o.workers,
      rate_cap: o.rate,
      windows: reports.length,
      total_ops: totalOps,
      ops_per_s: round(totalOps / ((Date.now() - started) / 1000)),
      errors: Object.fromEntries(totals),
      error_rate: totalOps ? round(totalErrors / totalOps, 4) : null,
      unanswered_socket_sends: unanswered,
      latency_ms: {
        first_window: first ? { p50: first.p50, p99: first.p99 } : null,
        last_window: last ? { p50: last.p50, p99: last.p99 } : null,
        drift_p50: ratio(first?.p50, last?.p50),
        drift_p99: ratio(first?.p99, last?.p99),
      },
      memory_mib: {
        baseline_rss: baseline ? round(mib(baseline.rss)) : null,
        first_window_rss: first?.rssMiB ?? null,
        last_window_rss: last?.rssMiB ?? null,
        max_rss: rssSeries.length ? Math.max(...rssSeries) : null,
        growth_rss: first?.rssMiB != null && last?.rssMiB != null ? round(last.rssMiB - first.rssMiB) : null,
        growth_vs_baseline: baseline && last?.rssMiB != null ? round(last.rssMiB - mib(baseline.rss)) : null,
        rss_slope_mib_per_min: slope,
        first_window_heap: first?.heapMiB ?? null,
        last_window_heap: last?.heapMiB ?? null,
      },
      server_exit_code: target.child ? exitCode : null,
      server_warnings: serverProblems,
      windows_detail: reports,
    };
    console.log('');
    console.log('summary');
    console.log(`  ${totalOps} operations in ${reports.length} windows, ${summary.ops_per_s} ops/s; errors: ${totalErrors} (${JSON.stringify(summary.errors)})`);
    console.log(
      `  latency p50 ${first?.p50} → ${last?.p50} ms (×${summary.latency_ms.drift_p50}), p99 ${first?.p99} → ${last?.p99} ms (×${summary.latency_ms.drift_p99}) (first vs last window)`,
    );
    console.log(
      `  server RSS ${summary.memory_mib.baseline_rss} MiB at start, ${first?.rssMiB} → ${last?.rssMiB} MiB (first vs last window, ${summary.memory_mib.growth_rss} MiB), max ${summary.memory_mib.max_rss} MiB, trend ${slope} MiB/min`,
    );
    if (target.child) console.log(`  server exit code after SIGTERM: ${exitCode}; ${serverProblems} warning/error log lines`);
    const serverErrors = [...totals].filter(([k]) => /^5\d\d|socket:internal|socket:unavailable/.test(k)).reduce((n, [, v]) => n + v, 0);
    if (serverErrors > 0) console.log(`  WARNING: ${serverErrors} server-side errors (5xx / internal) during the soak`);
    console.log(`SOAK_RESULT ${JSON.stringify(summary)}`);
    const ok = (!target.child || exitCode === 0) && reports.length > 0;
    process.exitCode = ok ? 0 : 1;
  } finally {
    for (const u of users) u.socket.terminate();
    if (exitCode === null) await target.close().catch(() => {});
  }
}

main().catch((err: unknown) => {
  console.error(`soak: ${(err as Error)?.stack ?? err}`);
  process.exit(1);
});
