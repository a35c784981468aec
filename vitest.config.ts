import { defineConfig } from 'vitest/config';

// Run through `npm test` (test/run.mjs), which provides TEST_DATABASE_URL and
// REDIS_URL (starting throwaway servers when needed) before invoking vitest.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    // Test files run in parallel, but on at most 2 workers (2-core machines).
    fileParallelism: true,
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
