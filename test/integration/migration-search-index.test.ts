// Migrations 0007/0008 (one search row per message, the send function) go down and up again
// without losing a message's tokens.
import { randomBytes, randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadMigrations, migrateDown, migrateUp } from '../../src/db/migrations.js';
import { createTestDatabase, type TestDatabase, testPool } from '../helpers/db.js';

let db: TestDatabase;
let pool: pg.Pool;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = testPool(db.url, 2);
  await migrateUp(pool);
});

afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

it('down to the per-word layout and back keeps every token and fingerprint', async () => {
  const [u, c] = [randomUUID(), randomUUID()];
  await pool.query('INSERT INTO users (id, wallet) VALUES ($1, $2)', [u, `w-${u}`]);
  await pool.query(`INSERT INTO conversations (id, type, created_by, current_key_version) VALUES ($1, 'group', $2, 1)`, [c, u]);
  const messages = Array.from({ length: 5 }, (_, i) => ({ id: randomUUID(), seq: i + 1, tokens: Array.from({ length: i + 1 }, () => randomBytes(16)) }));
  for (const m of messages) {
    await pool.query(`INSERT INTO messages (id, conversation_id, sender_id, seq, content) VALUES ($1, $2, $3, $4, '\\x00')`, [m.id, c, u, m.seq]);
    await pool.query(`INSERT INTO message_search_index VALUES ($1, $2, 'fp${m.seq}', $3::bytea[], now())`, [m.id, c, m.tokens]);
  }
  const snapshot = async () =>
    (await pool.query<{ message_id: string; token: Buffer }>('SELECT message_id, token FROM message_search_tokens ORDER BY 1, 2')).rows.map((r) => `${r.message_id}:${r.token.toString('hex')}`);
  const before = await snapshot();
  expect(before).toHaveLength(15);
  // every migration from 0007 on, newest first (whatever came after the search migrations)
  const fromSeven = loadMigrations()
    .map((m) => m.version)
    .filter((v) => v >= 7)
    .reverse();
  expect(fromSeven.slice(-2)).toEqual([8, 7]);
  for (const v of fromSeven) expect(await migrateDown(pool)).toBe(v);
  const { rows: kinds } = await pool.query<{ relkind: string }>(`SELECT relkind::text FROM pg_class WHERE oid = to_regclass('message_search_tokens')`);
  expect(kinds[0]!.relkind).toBe('r'); // the per-word table again
  expect(await snapshot()).toEqual(before);
  expect(await migrateUp(pool)).toEqual([...fromSeven].reverse());
  expect(await snapshot()).toEqual(before);
  const { rows } = await pool.query<{ message_id: string; master_key_fingerprint: string; n: number }>(
    'SELECT message_id, master_key_fingerprint, array_length(tokens, 1) AS n FROM message_search_index ORDER BY n',
  );
  expect(rows.map((r) => [r.master_key_fingerprint, r.n])).toEqual(messages.map((m) => [`fp${m.seq}`, m.seq]));
});
