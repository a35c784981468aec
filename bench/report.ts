import type { Bench } from 'tinybench';

/** Prints one row per task: throughput and latency percentiles (µs), plus a JSON line per task. */
export function report(title: string, bench: Bench, unitsPerOp = 1): void {
  console.log(`\n## ${title}`);
  console.log('task'.padEnd(48), 'ops/s'.padStart(12), 'p50 µs'.padStart(10), 'p99 µs'.padStart(10), 'samples'.padStart(9));
  for (const task of bench.tasks) {
    const r = task.result as unknown as { state?: string; throughput?: { mean: number }; latency?: { p50: number; p99: number; samplesCount?: number }; error?: Error };
    if (!r?.latency || !r.throughput) {
      console.log(task.name.padEnd(48), `failed: ${r?.error?.message ?? r?.state ?? 'no result'}`);
      process.exitCode = 1;
      continue;
    }
    const ops = r.throughput.mean * unitsPerOp;
    console.log(
      task.name.padEnd(48),
      Math.round(ops).toLocaleString('en-US').padStart(12),
      (r.latency.p50 * 1000).toFixed(2).padStart(10),
      (r.latency.p99 * 1000).toFixed(2).padStart(10),
      String(r.latency.samplesCount ?? '').padStart(9),
    );
    if (process.env.BENCH_JSON) {
      console.log(JSON.stringify({ bench: title, task: task.name, ops_per_s: ops, p50_us: r.latency.p50 * 1000, p99_us: r.latency.p99 * 1000 }));
    }
  }
}
