// Sweeps CRYPTO_POOL_SIZE × CRYPTO_INLINE_MAX for MessageCipher.open on history-like batches and
// prints a recommendation for this machine. See bench/README.md.
//
//   npm run bench:pool                      # ~2 minutes on 2 cores
//   npm run bench:pool -- --time 500 --in-flight 4 --pool-sizes 0,1,2
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import { sealBatch, type OpenJob, type SealJob } from '../src/crypto/batch.js';
import { NonceSource } from '../src/crypto/nonce.js';
import { MessageCipher } from '../src/cipher/message-cipher.js';
import { ConversationKeyCache, type KeyRef } from '../src/keys/conversation-keys.js';
import { MasterKeyring } from '../src/keys/keyring.js';
import { Latency, cpuMeter, fmt, machineInfo, num, parseArgs, round, sleep, type OptionSpec } from './lib/common.js';

const cores = availableParallelism();
const SPEC: Record<string, OptionSpec> = {
  time: { default: '700', help: 'measured milliseconds per cell and round' },
  rounds: { default: '3', help: 'measurements per cell (median reported), interleaved across the matrix' },
  warmup: { default: '300', help: 'unmeasured milliseconds per cell' },
  'in-flight': { default: '8', help: 'batches in flight at once (concurrent history requests)' },
  batch: { default: '100', help: 'messages per history batch' },
  size: { default: '256', help: 'bytes per message' },
  'pool-sizes': { default: Array.from({ length: cores + 1 }, (_, i) => i).join(','), help: 'CRYPTO_POOL_SIZE values' },
  'inline-max': { default: '0,16,64,256,inf', help: 'CRYPTO_INLINE_MAX values (inf = everything inline)' },
  mixed: { default: '1,10,50,100,200', help: 'batch sizes cycled in the "mixed" workload' },
  conversations: { default: '16', help: 'distinct conversation keys across the jobs' },
};
const a = parseArgs(process.argv.slice(2), SPEC, 'usage: npm run bench:pool -- [options]\noptions:');
const O = {
  time: num(a, 'time', 50, 600_000),
  rounds: num(a, 'rounds', 1, 100),
  warmup: num(a, 'warmup', 0, 600_000),
  inFlight: num(a, 'in-flight', 1, 1024),
  batch: num(a, 'batch', 1, 100_000),
  size: num(a, 'size', 1, 1 << 20),
  conversations: num(a, 'conversations', 1, 10_000),
};
const list = (name: string) =>
  a[name]!.split(',').map((s) => {
    const t = s.trim().toLowerCase();
    if (['inf', 'infinity', '∞'].includes(t)) return Number.POSITIVE_INFINITY;
    const v = Number(t);
    if (!Number.isInteger(v) || v < 0) {
      console.error(`error: --${name}: "${s}" is not a whole number`);
      process.exit(2);
    }
    return v;
  });
const poolSizes = list('pool-sizes');
const inlineMaxes = list('inline-max');
const mixedSizes = list('mixed').filter((n) => n > 0);

// ---------------------------------------------------------------------------------------------
// Jobs: real ciphertexts (sealed once, inline) under `conversations` different key references.

const keyring = new MasterKeyring(randomBytes(32));
const refs: KeyRef[] = Array.from({ length: O.conversations }, (_, i) => ({
  conversationId: `0b8f6c2e-3d4a-4c1e-9a57-${(0x2f1d6b8e9c01 + i).toString(16).padStart(12, '0')}`,
  version: 1,
  createdUnixSeconds: 1732838400 + i,
  fingerprint: keyring.active.fingerprint,
}));
const cache = new ConversationKeyCache(keyring);
const nonces = new NonceSource();

/** `count` batches of `n` open jobs; each batch belongs to one conversation, like a history page. */
function makeBatches(n: number, count: number): OpenJob<KeyRef>[][] {
  return Array.from({ length: count }, (_, b) => {
    const ref = refs[b % refs.length]!;
    const seal: SealJob<KeyRef>[] = Array.from({ length: n }, (_, i) => ({
      key: ref,
      aad: `${ref.conversationId}:018f3a6e-7b1c-7d2e-8f30-${i.toString(16).padStart(12, '0')}:5a1e3c9d-2b4f-4e6a-8c0d-1f2e3a4b5c6d`,
      plaintext: randomBytes(O.size),
    }));
    return sealBatch(seal, (r) => cache.get(r), nonces).map((s, i) => ({ key: ref, aad: seal[i]!.aad, ...s }));
  });
}

const history = makeBatches(O.batch, Math.max(8, O.inFlight * 2));
const mixed = mixedSizes.flatMap((n) => makeBatches(n, 4));

// ---------------------------------------------------------------------------------------------

interface Cell {
  workload: 'history' | 'mixed';
  pool: number;
  inlineMax: number;
  msgs_per_s: number;
  batches_per_s: number;
  /** Main-thread event-loop utilisation while running (0..1). */
  main_elu: number;
  /** Main-thread busy time per message, µs: what the crypto costs the thread that serves requests. */
  main_us_per_msg: number;
  batch_p50_ms: number | null;
  batch_p99_ms: number | null;
  errors: number;
  /** (max − min) / median of msgs/s over the rounds, %: how noisy this cell was. */
  spread_pct: number;
}

async function measure(cipher: MessageCipher, batches: OpenJob<KeyRef>[][], ms: number, record: boolean) {
  const latency = new Latency();
  let msgs = 0;
  let count = 0;
  let errors = 0;
  let next = 0;
  const elu0 = performance.eventLoopUtilization();
  const started = performance.now();
  const end = started + ms;
  await Promise.all(
    Array.from({ length: O.inFlight }, async () => {
      while (performance.now() < end) {
        const batch = batches[next++ % batches.length]!;
        const t0 = performance.now();
        try {
          const out = await cipher.open(batch);
          if (out.length !== batch.length || out.some((p) => p === null || p.length !== O.size)) errors++;
        } catch {
          errors++;
        }
        latency.record(performance.now() - t0);
        msgs += batch.length;
        count++;
        // Inline batches complete synchronously: yield so the lanes interleave as requests would.
        await new Promise<void>((r) => setImmediate(r));
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const elu = performance.eventLoopUtilization(elu0);
  if (!record) return null;
  return {
    msgs_per_s: msgs / seconds,
    batches_per_s: count / seconds,
    main_elu: elu.utilization,
    main_us_per_msg: (elu.active * 1000) / Math.max(1, msgs),
    batch_p50_ms: latency.pct(50),
    batch_p99_ms: latency.pct(99),
    errors,
  };
}

/** Waits (≤ 5 s) until this process's threads use < 20 % of a core over 100 ms: workers have booted. */
async function quiet(): Promise<void> {
  const until = performance.now() + 5000;
  while (performance.now() < until) {
    const c0 = process.cpuUsage();
    await sleep(100);
    const c = process.cpuUsage(c0);
    if (c.user + c.system < 20_000) return;
  }
}

const label = (v: number) => (v === Number.POSITIVE_INFINITY ? '∞' : String(v));

async function main(): Promise<void> {
  const machine = machineInfo();
  console.log(
    `sotalk pool sweep: open() of ${O.batch} × ${O.size} B batches (and a mixed workload of ${mixedSizes.join('/')}-message batches), ` +
      `${O.inFlight} in flight, ${O.time} ms per cell × ${O.rounds} rounds; ${machine.cpus} cpus (${machine.cpu_model}), node ${machine.node}, load ${machine.loadavg_1m_at_start}`,
  );
  // Every cell is measured `rounds` times, the rounds interleaved across the whole matrix (odd
  // rounds in reverse order) so that a burst of load elsewhere on the machine hits all cells alike;
  // each figure reported is the median over rounds.
  const plan = poolSizes.flatMap((pool) => (pool === 0 ? [Number.POSITIVE_INFINITY] : inlineMaxes).map((inlineMax) => ({ pool, inlineMax })));
  const samples = new Map<string, Omit<Cell, 'spread_pct'>[]>();
  const meter = cpuMeter();
  for (let round = 0; round < O.rounds; round++) {
    const order = round % 2 === 0 ? plan : [...plan].reverse();
    for (const { pool, inlineMax } of order) {
      const cipher = new MessageCipher({ keyring, poolSize: pool, inlineMax });
      try {
        // Workers load through tsx (a second or so): wait until they answer before the clock starts.
        const pooledBatch = [...history, ...mixed].find((b) => b.length > inlineMax);
        if (pool > 0 && pooledBatch) await Promise.all(Array.from({ length: pool * 4 }, () => cipher.open(pooledBatch)));
        // A threshold above every batch never dispatches, yet its workers still boot: let them finish.
        if (pool > 0) await quiet();
        for (const [workload, batches] of [
          ['history', history],
          ['mixed', mixed],
        ] as const) {
          if (O.warmup > 0) await measure(cipher, batches, O.warmup, false);
          const r = (await measure(cipher, batches, O.time, true))!;
          const key = `${workload}:${pool}:${inlineMax}`;
          samples.set(key, [...(samples.get(key) ?? []), { workload, pool, inlineMax, ...r }]);
        }
      } finally {
        await cipher.close();
      }
      await sleep(20);
    }
    console.log(`  round ${round + 1}/${O.rounds} done`);
  }
  const usage = meter.stop();
  // Cores used by other processes while we ran: the machine's busy cores minus our own.
  const othersCores = usage.machine_busy_pct === null ? null : Math.max(0, (usage.machine_busy_pct / 100) * Number(machine.cpus) - usage.client_cpu_pct / 100);
  const median = (xs: number[]) => {
    const v = [...xs].sort((x, y) => x - y);
    return v.length % 2 ? v[(v.length - 1) / 2]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2;
  };
  const cells: Cell[] = [];
  for (const workload of ['history', 'mixed'] as const) {
    for (const { pool, inlineMax } of plan) {
      const xs = samples.get(`${workload}:${pool}:${inlineMax}`)!;
      const m = (f: (c: Omit<Cell, 'spread_pct'>) => number | null) => median(xs.map((c) => f(c) ?? 0));
      const rates = xs.map((c) => c.msgs_per_s);
      cells.push({
        workload,
        pool,
        inlineMax,
        msgs_per_s: m((c) => c.msgs_per_s),
        batches_per_s: m((c) => c.batches_per_s),
        main_elu: m((c) => c.main_elu),
        main_us_per_msg: m((c) => c.main_us_per_msg),
        batch_p50_ms: m((c) => c.batch_p50_ms),
        batch_p99_ms: m((c) => c.batch_p99_ms),
        errors: xs.reduce((t, c) => t + c.errors, 0),
        spread_pct: (100 * (Math.max(...rates) - Math.min(...rates))) / Math.max(1, median(rates)),
      });
    }
  }

  // Table
  for (const workload of ['history', 'mixed'] as const) {
    console.log(`\n## ${workload === 'history' ? `history batches (${O.batch} × ${O.size} B)` : `mixed batches (${mixedSizes.join(', ')} messages)`}`);
    console.log(
      ['pool', 'inline max', 'msgs/s', 'spread %', 'batches/s', 'main ELU', 'main µs/msg', 'batch p50 ms', 'batch p99 ms', 'errors'].map((h, i) => (i < 2 ? h.padEnd(10) : h.padStart(12))).join(' '),
    );
    for (const c of cells.filter((x) => x.workload === workload)) {
      console.log(
        [
          String(c.pool).padEnd(10),
          (c.pool === 0 ? '-' : label(c.inlineMax)).padEnd(10),
          fmt(c.msgs_per_s).padStart(12),
          c.spread_pct.toFixed(0).padStart(12),
          fmt(c.batches_per_s).padStart(12),
          c.main_elu.toFixed(2).padStart(12),
          c.main_us_per_msg.toFixed(2).padStart(12),
          String(c.batch_p50_ms ?? '-').padStart(12),
          String(c.batch_p99_ms ?? '-').padStart(12),
          String(c.errors).padStart(12),
        ].join(' '),
      );
    }
  }

  const rec = recommend(cells);
  const medianSpread = median(cells.map((c) => c.spread_pct));
  const busy = Number(machine.loadavg_1m_at_start) > Number(machine.cpus) || (othersCores !== null && othersCores > 0.25);
  const confidence = medianSpread > 30 || busy ? 'low' : 'ok';
  console.log(`\nrecommendation for this machine: CRYPTO_POOL_SIZE=${rec.pool} CRYPTO_INLINE_MAX=${rec.inlineMax === Number.POSITIVE_INFINITY ? 1_000_000 : rec.inlineMax}`);
  for (const why of rec.why) console.log(`  - ${why}`);
  console.log(
    `  noise: median spread between rounds ${medianSpread.toFixed(0)} %; other processes used ${othersCores === null ? '?' : othersCores.toFixed(2)} cores on average` +
      ` (load ${machine.loadavg_1m_at_start} at start) → confidence ${confidence}`,
  );
  if (confidence === 'low') console.log('  ! the numbers are noisy or the machine was busy: rerun on a quiet machine (or with more --rounds) before acting on this');
  console.log(
    JSON.stringify({
      bench: 'pool-sweep',
      batch: O.batch,
      size: O.size,
      in_flight: O.inFlight,
      time_ms: O.time,
      rounds: O.rounds,
      mixed_sizes: mixedSizes,
      cells: cells.map((c) => ({
        ...c,
        inlineMax: c.inlineMax === Number.POSITIVE_INFINITY ? 'inf' : c.inlineMax,
        msgs_per_s: round(c.msgs_per_s, 0),
        batches_per_s: round(c.batches_per_s, 1),
        main_elu: round(c.main_elu, 3),
        main_us_per_msg: round(c.main_us_per_msg, 3),
        spread_pct: round(c.spread_pct, 1),
      })),
      recommendation: { CRYPTO_POOL_SIZE: rec.pool, CRYPTO_INLINE_MAX: rec.inlineMax === Number.POSITIVE_INFINITY ? 'inf' : rec.inlineMax, confidence },
      median_spread_pct: round(medianSpread, 1),
      other_processes_cores: othersCores === null ? null : round(othersCores, 2),
      self_cpu_pct: usage.client_cpu_pct,
      machine,
    }),
  );
  if (cells.some((c) => c.errors > 0)) process.exitCode = 1;
}

/**
 * The rule (documented in bench/README.md):
 * 1. Pool size, from the history workload with every batch pooled (the smallest inline max
 *    swept): a pool is worth its threads when it takes crypto off the main thread — main-thread
 *    µs per message at most 75 % of inline's — and keeps ≥ 75 % of inline's msgs/s. Among the sizes
 *    that qualify, the smallest whose msgs/s is within 5 % of the best. None qualifies → 0.
 * 2. Inline max, with that pool size, from the mixed workload: the threshold with the most
 *    messages per main-thread second (msgs/s ÷ main ELU: what one fully busy main thread could
 *    serve), ties (within 5 %) broken towards the lowest batch p99.
 */
function recommend(cells: Cell[]): { pool: number; inlineMax: number; why: string[] } {
  const why: string[] = [];
  const inline = cells.find((c) => c.workload === 'history' && c.pool === 0);
  const lowestMax = Math.min(...inlineMaxes);
  const pooled = cells.filter((c) => c.workload === 'history' && c.pool > 0 && c.inlineMax === lowestMax);
  if (pooled.length === 0) return { pool: 0, inlineMax: Number.POSITIVE_INFINITY, why: ['no pooled cell was measured'] };
  const qualifies = (c: Cell) => !inline || (c.main_us_per_msg <= 0.75 * inline.main_us_per_msg && c.msgs_per_s >= 0.75 * inline.msgs_per_s);
  const ok = pooled.filter(qualifies);
  if (inline) {
    why.push(`inline (pool 0): ${fmt(inline.msgs_per_s)} msgs/s at ${inline.main_us_per_msg.toFixed(2)} main-thread µs/msg`);
  }
  for (const c of pooled) {
    why.push(`pool ${c.pool} (all batches pooled): ${fmt(c.msgs_per_s)} msgs/s at ${c.main_us_per_msg.toFixed(2)} main-thread µs/msg${qualifies(c) ? '' : ' — does not qualify'}`);
  }
  if (ok.length === 0) {
    why.push('no pool size cuts the main-thread cost by ≥ 25 % while keeping ≥ 75 % of inline throughput: keep crypto inline');
    return { pool: 0, inlineMax: Number.POSITIVE_INFINITY, why };
  }
  const best = Math.max(...ok.map((c) => c.msgs_per_s));
  const pool = ok.filter((c) => c.msgs_per_s >= 0.95 * best).sort((x, y) => x.pool - y.pool)[0]!.pool;
  why.push(`pool size ${pool}: the smallest within 5 % of the best qualifying throughput (${fmt(best)} msgs/s)`);

  const mixedCells = cells.filter((c) => c.workload === 'mixed' && c.pool === pool);
  const capacity = (c: Cell) => c.msgs_per_s / Math.max(0.01, c.main_elu);
  const top = Math.max(...mixedCells.map(capacity));
  const near = mixedCells.filter((c) => capacity(c) >= 0.95 * top).sort((x, y) => (x.batch_p99_ms ?? 0) - (y.batch_p99_ms ?? 0));
  const chosen = near[0]!;
  for (const c of mixedCells) {
    why.push(`mixed, pool ${pool}, inline max ${label(c.inlineMax)}: ${fmt(capacity(c))} msgs per main-thread second, batch p99 ${c.batch_p99_ms} ms`);
  }
  why.push(`inline max ${label(chosen.inlineMax)}: most messages per main-thread second (within 5 %), then the lowest batch p99`);
  return { pool, inlineMax: chosen.inlineMax, why };
}

await main();
