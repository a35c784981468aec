import { execFile } from 'node:child_process';
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
