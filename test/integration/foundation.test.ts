import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { loadMigrations, migrateDown, migrateUp, migrationStatus } from '../../src/db/migrations.js';
import { uwsIsNative } from '../../src/http/uws.js';
import { startServer } from '../../src/main.js';
import { createTestDatabase, type TestDatabase, testPool } from '../helpers/db.js';

const ROOT = new URL('../../', import.meta.url).pathname;

const tables = async (pool: pg.Pool) =>
  (await pool.query<{ t: string }>(`SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1`)).rows.map((r) => r.t);

describe('migrations on Postgres', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  beforeAll(async () => {
    db = await createTestDatabase();
    pool = testPool(db.url, 8);
  });
  afterAll(async () => {
    await pool.end();
    await db.drop();
  });

  it('go up, all the way down and up again', async () => {
    const all = loadMigrations().map((m) => m.version);
    expect(await migrateUp(pool)).toEqual(all);
    expect(await tables(pool)).toEqual(
      expect.arrayContaining(['users', 'auth_challenges', 'conversations', 'conversation_members', 'conversation_keys', 'messages', 'message_encryption_metadata', 'decryption_audit']),
    );
    expect(await migrateUp(pool)).toEqual([]);
    for (const v of [...all].reverse()) expect(await migrateDown(pool)).toBe(v);
    expect(await migrateDown(pool)).toBeNull();
    expect(await tables(pool)).toEqual(['schema_migrations']);
    expect((await migrationStatus(pool)).every((m) => m.appliedAt === null)).toBe(true);
    expect(await migrateUp(pool)).toEqual(all);
    expect((await migrationStatus(pool)).every((m) => m.appliedAt instanceof Date)).toBe(true);
  });

  it('enforce one direct conversation per pair, gap-free seq uniqueness and metadata cascade in the database', async () => {
    const [a, b] = ['00000000-0000-4000-8000-00000000000a', '00000000-0000-4000-8000-00000000000b'];
    await pool.query(`INSERT INTO users (id, wallet) VALUES ($1, 'wa'), ($2, 'wb')`, [a, b]);
    const direct = `INSERT INTO conversations (id, type, created_by, direct_low, direct_high) VALUES ($1, 'direct', $2, $2, $3)`;
    await pool.query(direct, ['00000000-0000-4000-8000-0000000000c1', a, b]);
    await expect(pool.query(direct, ['00000000-0000-4000-8000-0000000000c2', a, b])).rejects.toMatchObject({ code: '23505' });
    // the pair is ordered, so the reverse order cannot sneak in either
    await expect(pool.query(direct, ['00000000-0000-4000-8000-0000000000c3', b, a])).rejects.toMatchObject({ code: '23514' });
    const msg = `INSERT INTO messages (id, conversation_id, sender_id, seq, content) VALUES ($1, '00000000-0000-4000-8000-0000000000c1', $2, $3, '\\x00')`;
    await pool.query(msg, ['00000000-0000-4000-8000-0000000000d1', a, 1]);
    await expect(pool.query(msg, ['00000000-0000-4000-8000-0000000000d2', a, 1])).rejects.toMatchObject({ code: '23505' });
    await pool.query(
      `INSERT INTO message_encryption_metadata (message_id, nonce, tag, key_version) VALUES ('00000000-0000-4000-8000-0000000000d1', $1, $2, 1)`,
      [Buffer.alloc(12), Buffer.alloc(16)],
    );
    await pool.query(`DELETE FROM messages WHERE id = '00000000-0000-4000-8000-0000000000d1'`);
    expect((await pool.query('SELECT count(*)::int AS n FROM message_encryption_metadata')).rows[0].n).toBe(0);
  });
});

describe('two concurrent migrators', () => {
  it('apply each migration exactly once', async () => {
    const db = await createTestDatabase();
    const pools = [0, 1, 2, 3].map(() => testPool(db.url, 2));
    try {
      const results = await Promise.all(pools.map((p) => migrateUp(p)));
      const applied = results.flat().sort((x, y) => x - y);
      expect(applied).toEqual(loadMigrations().map((m) => m.version));
      const { rows } = await pools[0]!.query('SELECT version FROM schema_migrations ORDER BY version');
      expect(rows.map((r) => r.version)).toEqual(applied);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
      await db.drop();
    }
  });
});

describe('uWebSockets.js', () => {
  it('runs on the native binary, not the ws fallback', () => {
    expect(uwsIsNative).toBe(true);
  });
});

describe('embedded mode', () => {
  it('starts on PGlite from an empty data dir, creates the dev key and answers /healthz and /readyz', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sotalk-embedded-'));
    const server = await startServer(loadConfig({ SOTALK_DATA_DIR: dir, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'silent', CRYPTO_POOL_SIZE: '0' }));
    try {
      expect(server.embeddedDatabase).toBe(true);
      expect(server.nativeUws).toBe(true);
      expect(statSync(join(dir, 'master.key')).mode & 0o777).toBe(0o600);
      const health = await fetch(`http://127.0.0.1:${server.port}/healthz`);
      expect(health.status).toBe(200);
      const ready = await fetch(`http://127.0.0.1:${server.port}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toMatchObject({ status: 'ok', checks: { database: 'ok' } });
    } finally {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});

function runCli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(ROOT, 'bin/sotalk.js'), ...args], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
      cwd: ROOT,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('sotalk command', () => {
  it('keygen prints a fresh base64 32-byte key', async () => {
    const [a, b] = await Promise.all([runCli(['keygen'], {}), runCli(['keygen'], {})]);
    expect(a.code).toBe(0);
    expect(Buffer.from(a.stdout.trim(), 'base64')).toHaveLength(32);
    expect(a.stdout).not.toBe(b.stdout);
  });

  it('a bad ENCRYPTION_MASTER_KEY stops start-up with a message naming it, never the value', async () => {
    const value = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
    const r = await runCli(['serve'], { ENCRYPTION_MASTER_KEY: value, PORT: '0' });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('ENCRYPTION_MASTER_KEY');
    expect(r.stderr + r.stdout).not.toContain(value);
  });

  it('migrate status / up / down work against DATABASE_URL', async () => {
    const db = await createTestDatabase();
    try {
      const env = { DATABASE_URL: db.url, ENCRYPTION_MASTER_KEY: Buffer.alloc(32, 1).toString('base64') };
      expect((await runCli(['migrate', 'status'], env)).stdout).toMatch(/0001_core\s+pending/);
      const up = await runCli(['migrate', 'up'], env);
      expect(up.code).toBe(0);
      const all = loadMigrations();
      const newest = all[all.length - 1]!;
      expect(up.stdout).toContain(`applied: ${all.map((m) => m.version).join(', ')}`);
      const down = await runCli(['migrate', 'down'], env);
      expect(down.stdout).toContain(`reverted: ${newest.version}`);
      expect((await runCli(['migrate', 'status'], env)).stdout).toMatch(new RegExp(`${String(newest.version).padStart(4, '0')}_${newest.name}\\s+pending`));
    } finally {
      await db.drop();
    }
  });
});
