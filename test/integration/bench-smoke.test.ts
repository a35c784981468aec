import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';

// The micro-benchmarks run briefly on every CI run: a crash fails, timings never do.
it('npm run bench runs to the end (brief mode)', async () => {
  const root = new URL('../../', import.meta.url).pathname;
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'bench/micro.ts'], {
    cwd: root,
    env: { ...process.env, BENCH_TIME_MS: '10', CRYPTO_POOL_SIZE: '1' },
    timeout: 120_000,
  });
  for (const section of ['AES-256-GCM, 256 B message', 'conversation key derivation', 'batch of 1000 × 256 B']) expect(stdout).toContain(section);
  expect(stdout).not.toContain('failed:');
}, 150_000);

// Every bench script answers --help with its usage and exit 0 (running nothing), and an unknown
// option with exit 2: `npm run bench -- --help` used to run the whole micro-benchmark.
it('every `npm run bench*` script prints its help for --help and refuses an unknown option', async () => {
  const root = new URL('../../', import.meta.url).pathname;
  const scripts = Object.keys(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).scripts).filter((s) => /^bench(:|$)/.test(s));
  expect(scripts).toEqual(expect.arrayContaining(['bench', 'bench:load', 'bench:pool', 'bench:soak', 'bench:search', 'bench:rate-limiter', 'bench:commit']));
  const npm = (args: string[]) =>
    promisify(execFile)('npm', ['run', '--silent', ...args], { cwd: root, env: { ...process.env, BENCH_TIME_MS: '10' }, timeout: 60_000 }).then(
      ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
      (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
    );
  for (const script of scripts) {
    const help = await npm([script, '--', '--help']);
    expect(help.code, `${script} --help: ${help.stderr}`).toBe(0);
    expect(help.stdout, script).toMatch(/^usage: /);
    expect(help.stdout, script).toMatch(/--[a-z]/); // lists its options
    // nothing ran: no result section (`## …`), table row or JSON line after the help
    expect(help.stdout, script).not.toMatch(/^(## |\{|task )/m);
    const bad = await npm([script, '--', '--no-such-option']);
    expect(bad.code, `${script} --no-such-option`).toBe(2);
    expect(bad.stderr, script).toMatch(/no-such-option/);
  }
}, 180_000);

// bench:load --redis cluster: a throwaway Redis Cluster under the spawned server; the Redis figures
// are summed over its masters (one SPUBLISH per event, on one shard).
it('bench:load --redis cluster runs fan-out on a throwaway Redis Cluster and counts one publish per event', async () => {
  const root = new URL('../../', import.meta.url).pathname;
  const run = (args: string[]) =>
    promisify(execFile)(process.execPath, ['--import', 'tsx', 'bench/load.ts', ...args], {
      cwd: root,
      env: { ...process.env, BENCH_DATABASE_URL: process.env.TEST_DATABASE_URL ?? '', REDIS_URL: '', RATE_LIMIT_SEND_PER_MIN: '1000000', LOG_LEVEL: 'warn' },
      timeout: 120_000,
    }).then(
      ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
      (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
    );
  const bad = await run(['--redis', 'sentinel']);
  expect(bad.code).toBe(2);
  expect(bad.stderr).toMatch(/--redis: expected cluster/);
  const { code, stdout, stderr } = await run(['--scenario', 'fanout', '--redis', 'cluster', '--duration', '1', '--warmup', '0', '--group-size', '10', '--window', '4']);
  expect(code, stderr).toBe(0);
  expect(stdout).toMatch(/throwaway Redis Cluster: redis\+cluster:\/\/127\.0\.0\.1:\d+,/);
  const result = JSON.parse(stdout.split('\n').find((l) => l.startsWith('{'))!);
  expect(result.delivery_ratio).toBe(1);
  // sends still in flight at the phase's edges may shift a count by a few in hundreds
  expect(Math.abs(result.redis_publish_per_send - 1)).toBeLessThan(0.05);
  expect(Math.abs(result.server_publish_per_send - 1)).toBeLessThan(0.05);
  expect(result.cost_notes.filter((n: string) => n.startsWith('redis'))).toEqual([]);
}, 150_000);

// The load generator drives the client library: under load every message reaches its receiver's
// stream once and in order (a repeated or out-of-order seq would be listed in socket_closes).
it('bench:load client-send runs through the client library and every send is delivered once, in order', async () => {
  const root = new URL('../../', import.meta.url).pathname;
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--import', 'tsx', 'bench/load.ts', '--scenario', 'client-send', '--duration', '1', '--warmup', '0', '--conversations', '4', '--connections', '8'],
    { cwd: root, env: { ...process.env, BENCH_DATABASE_URL: process.env.TEST_DATABASE_URL ?? '', CRYPTO_POOL_SIZE: '1' }, timeout: 150_000 },
  );
  const line = stdout.split('\n').find((l) => l.startsWith('{"scenario":"client-send"'));
  expect(line, stdout).toBeDefined();
  const result = JSON.parse(line!);
  expect(result.error).toBeUndefined();
  expect(result.sends).toBeGreaterThan(0);
  expect(result.error_count).toBe(0);
  expect(result.delivered).toBe(result.sends);
  expect(result.socket_closes).toEqual({});
}, 180_000);

// bench:commit briefly: it runs to the end, every message is stored, and its JSON line reports the
// scans per call (the numbers themselves are test/integration/send-commit.test.ts's business).
it('bench:commit runs the group commit alone and reports its costs', async () => {
  const root = new URL('../../', import.meta.url).pathname;
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--import', 'tsx', 'bench/send-commit.ts', '--flushes', '40', '--batch', '8', '--conversations', '8', '--client-message-ids', '--replies'],
    { cwd: root, env: { ...process.env, BENCH_DATABASE_URL: process.env.TEST_DATABASE_URL ?? '' }, timeout: 120_000 },
  );
  const result = JSON.parse(stdout.split('\n').find((l) => l.startsWith('{'))!);
  expect(result).toMatchObject({ bench: 'send-commit', flushes: 40, batch: 8, rejected: 0 });
  expect(result.messages_per_s).toBeGreaterThan(0);
  expect(Object.keys(result.seq_scans_per_call).sort()).toEqual(['conversation_keys', 'conversation_members', 'conversations', 'messages']);
}, 150_000);

// `npm run bench | head`: the reader goes away after the first lines; the bench ends quietly.
it('a bench whose reader closes the pipe early exits 0 without an EPIPE trace', async () => {
  const root = new URL('../../', import.meta.url).pathname;
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/micro.ts', '--time', '20'], { cwd: root, env: { ...process.env, CRYPTO_POOL_SIZE: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout.once('data', () => child.stdout.destroy()); // like `head -1`
  const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])));
  expect({ code, signal }).toEqual({ code: 0, signal: null });
  expect(stderr).not.toMatch(/EPIPE|Error/);
}, 150_000);
