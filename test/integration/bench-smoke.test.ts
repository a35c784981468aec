import { execFile } from 'node:child_process';
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
  expect(scripts).toEqual(expect.arrayContaining(['bench', 'bench:load', 'bench:pool', 'bench:soak', 'bench:search', 'bench:rate-limiter']));
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
