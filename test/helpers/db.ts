import { randomBytes } from 'node:crypto';
import pg from 'pg';

/** The server every test database is created on: TEST_DATABASE_URL, else the local default. */
export const ADMIN_DATABASE_URL = process.env.TEST_DATABASE_URL || 'postgresql://postgres@127.0.0.1:5432/postgres';

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

/** A fresh, empty database of its own, so test files run independently and in parallel. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `sotalk_t_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: ADMIN_DATABASE_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(ADMIN_DATABASE_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    async drop() {
      const c = new pg.Client({ connectionString: ADMIN_DATABASE_URL });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

/**
 * A pg pool for a test's own queries. Its idle connections may be cut while it ends — pool.end()
 * resolves before they have closed, and a database dropped WITH (FORCE) right after terminates them
 * ("terminating connection due to administrator command") — or while a test stops Postgres on
 * purpose: such an error is expected, and a pool without an 'error' listener would rethrow it as an
 * uncaught exception. Queries still fail the test the normal way.
 */
export function testPool(connectionString: string, max: number): pg.Pool {
  const pool = new pg.Pool({ connectionString, max });
  pool.on('error', () => {});
  return pool;
}
