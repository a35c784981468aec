import { describe, expect, it } from 'vitest';
import pg from 'pg';
import { Redis } from 'ioredis';

describe('test runner smoke', () => {
  it('has TEST_DATABASE_URL and REDIS_URL, both usable', async () => {
    expect(process.env.TEST_DATABASE_URL).toBeTruthy();
    expect(process.env.REDIS_URL).toBeTruthy();
    console.log('SMOKE', process.env.TEST_DATABASE_URL, process.env.REDIS_URL);
    const c = new pg.Client({ connectionString: process.env.TEST_DATABASE_URL });
    await c.connect();
    const r = await c.query('SELECT 41 + 1 AS v');
    await c.end();
    expect(r.rows[0].v).toBe(42);
    const redis = new Redis(process.env.REDIS_URL!);
    expect(await redis.ping()).toBe('PONG');
    redis.disconnect();
  });
});
