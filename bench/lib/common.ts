// Shared helpers of the load tools: command-line options, latency histograms, error tallies,
// CPU / event-loop sampling and a description of the machine the numbers came from.
import { readFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os';
import { createHistogram, performance, type RecordableHistogram } from 'node:perf_hooks';

// A reader that stops early (`npm run bench | head`) closes the pipe: end quietly, as Unix tools
// do, instead of dying on an unhandled EPIPE with a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
  process.exit(0);
});

// ---------------------------------------------------------------------------------------------
// Command line: `--name value`, `--name=value`, boolean `--flag`. Unknown options are an error.

export interface OptionSpec {
  /** Default value as text; undefined means "not set". Booleans use 'false'. */
  default?: string;
  boolean?: boolean;
  help: string;
}

/** `epilogue`, when given, is printed after the options by --help (e.g. what the output means). */
export function parseArgs(argv: string[], spec: Record<string, OptionSpec>, usage: string, epilogue?: string): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const [k, s] of Object.entries(spec)) out[k] = s.default;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') {
      printHelp(spec, usage);
      if (epilogue) console.log(epilogue);
      process.exit(0);
    }
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/.exec(arg);
    if (!m) fail(`unexpected argument "${arg}" (see --help)`);
    const name = m[1]!;
    const s = spec[name];
    if (!s) fail(`unknown option --${name} (see --help)`);
    if (s.boolean) {
      out[name] = m[2] === undefined ? 'true' : m[2];
      continue;
    }
    const value = m[2] ?? argv[++i];
    if (value === undefined) fail(`--${name} needs a value`);
    out[name] = value;
  }
  return out;
}

function printHelp(spec: Record<string, OptionSpec>, usage: string): void {
  console.log(usage);
  for (const [k, s] of Object.entries(spec)) {
    const def = s.default === undefined || s.boolean ? '' : ` (default ${s.default})`;
    console.log(`  --${k}${s.boolean ? '' : ' <v>'}`.padEnd(26) + s.help + def);
  }
}

export function fail(message: string): never {
  console.error(`error: ${message}`);
  process.exit(2);
}

export function num(opts: Record<string, string | undefined>, name: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const raw = opts[name];
  const v = Number(raw);
  if (raw === undefined || raw.trim() === '' || !Number.isFinite(v) || v < min || v > max) fail(`--${name} must be a number between ${min} and ${max} (got "${raw}")`);
  return v;
}

export const bool = (opts: Record<string, string | undefined>, name: string) => ['true', '1', 'yes'].includes(String(opts[name]).toLowerCase());

// ---------------------------------------------------------------------------------------------
// Latency: an HDR histogram in microseconds (node:perf_hooks), bounded memory at any rate.

export class Latency {
  readonly #h: RecordableHistogram = createHistogram({ lowest: 1, highest: 600_000_000, figures: 3 });

  /** Records one sample, in milliseconds. */
  record(ms: number): void {
    this.#h.record(Math.min(600_000_000, Math.max(1, Math.round(ms * 1000))));
  }

  get count(): number {
    return this.#h.count;
  }

  /** Percentile in ms (3 decimals), null without samples. */
  pct(p: number): number | null {
    return this.#h.count === 0 ? null : round(this.#h.percentile(p) / 1000, 3);
  }

  summary(prefix = ''): Record<string, number | null> {
    const none = this.#h.count === 0;
    return {
      [`${prefix}p50_ms`]: this.pct(50),
      [`${prefix}p95_ms`]: this.pct(95),
      [`${prefix}p99_ms`]: this.pct(99),
      [`${prefix}max_ms`]: none ? null : round(this.#h.max / 1000, 3),
      [`${prefix}mean_ms`]: none ? null : round(this.#h.mean / 1000, 3),
    };
  }

  /** "p50 1.23 / p95 2.34 / p99 3.45 / max 9.87 ms (n=1234)" */
  text(): string {
    if (this.#h.count === 0) return 'no samples';
    const f = (v: number | null) => (v === null ? '-' : v.toFixed(2));
    return `p50 ${f(this.pct(50))} / p95 ${f(this.pct(95))} / p99 ${f(this.pct(99))} / max ${f(round(this.#h.max / 1000, 3))} ms (n=${this.#h.count})`;
  }
}

/** Error tally by kind: an HTTP status ("500"), "net:ECONNRESET", "timeout", "ws:rate_limited"… */
export class Errors {
  readonly counts: Record<string, number> = {};
  add(kind: string, n = 1): void {
    this.counts[kind] = (this.counts[kind] ?? 0) + n;
  }
  get total(): number {
    return Object.values(this.counts).reduce((a, b) => a + b, 0);
  }
  text(): string {
    const entries = Object.entries(this.counts);
    return entries.length === 0 ? 'none' : entries.map(([k, v]) => `${k}×${v}`).join(', ');
  }
}

export const round = (v: number, digits = 1) => {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
};

export const now = () => performance.now();
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
export const fmt = (v: number) => Math.round(v).toLocaleString('en-US');

// ---------------------------------------------------------------------------------------------
// Where the time went: this process's CPU and event loop, and the whole machine (Linux /proc/stat).

export interface CpuSample {
  /** CPU time of this process over the window, in % of one core. */
  client_cpu_pct: number;
  /** Main-thread event-loop utilisation of this process (0..1): near 1 = the load generator is the bottleneck. */
  client_elu: number;
  /** Busy share of all cores of the machine over the window (%), null off Linux. */
  machine_busy_pct: number | null;
}

function procStat(): { busy: number; total: number } | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: total - idle, total };
  } catch {
    return null;
  }
}

export function cpuMeter(): { stop(): CpuSample } {
  const t0 = now();
  const c0 = process.cpuUsage();
  const e0 = performance.eventLoopUtilization();
  const s0 = procStat();
  return {
    stop() {
      const wallUs = (now() - t0) * 1000;
      const c = process.cpuUsage(c0);
      const elu = performance.eventLoopUtilization(e0);
      const s1 = procStat();
      const machine = s0 && s1 && s1.total > s0.total ? round((100 * (s1.busy - s0.busy)) / (s1.total - s0.total), 1) : null;
      return { client_cpu_pct: round((100 * (c.user + c.system)) / Math.max(1, wallUs), 1), client_elu: round(elu.utilization, 3), machine_busy_pct: machine };
    },
  };
}

export function machineInfo(): Record<string, unknown> {
  const list = cpus();
  return {
    cpus: availableParallelism(),
    cpu_model: list[0]?.model.trim() ?? 'unknown',
    node: process.version,
    platform: `${process.platform} ${release()}`,
    mem_gib: round(totalmem() / 2 ** 30, 1),
    loadavg_1m_at_start: round(loadavg()[0] ?? 0, 2),
  };
}

/** The soft limit on open files of this process (Linux), or null where unknown. */
export function openFileLimit(): number | null {
  try {
    const m = /Max open files\s+(\d+|unlimited)/.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (!m) return null;
    return m[1] === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(m[1]);
  } catch {
    return null;
  }
}

/** Runs `worker(i)` for i in [0, n) with at most `concurrency` at a time; rejects on the first failure. */
export async function mapLimit<T>(n: number, concurrency: number, worker: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(n);
  let next = 0;
  let failed: unknown;
  const lanes = Array.from({ length: Math.min(n, Math.max(1, concurrency)) }, async () => {
    while (failed === undefined && next < n) {
      const i = next++;
      try {
        out[i] = await worker(i);
      } catch (err) {
        failed ??= err;
      }
    }
  });
  await Promise.all(lanes);
  if (failed !== undefined) throw failed;
  return out;
}
