import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../paths.js';
import type pg from 'pg';
import { withClient } from './transaction.js';

export const MIGRATIONS_DIR = join(PACKAGE_ROOT, 'migrations');

/** Arbitrary constant shared by every SoTalk instance: serialises migrators across processes. */
const MIGRATION_LOCK_ID = 0x50_7a_1c;

export interface Migration {
  version: number;
  name: string;
  up: string;
  down: string;
}

export interface MigrationStatus {
  version: number;
  name: string;
  appliedAt: Date | null;
}

export function loadMigrations(dir = MIGRATIONS_DIR): Migration[] {
  const files = readdirSync(dir);
  const migrations: Migration[] = [];
  for (const file of files) {
    const match = /^(\d{4})_([a-z0-9_]+)\.up\.sql$/.exec(file);
    if (!match) continue;
    const [, num, name] = match as unknown as [string, string, string];
    const downFile = `${num}_${name}.down.sql`;
    if (!files.includes(downFile)) throw new Error(`migration ${file} has no ${downFile}`);
    migrations.push({
      version: Number(num),
      name,
      up: readFileSync(`${dir}/${file}`, 'utf8'),
      down: readFileSync(`${dir}/${downFile}`, 'utf8'),
    });
  }
  migrations.sort((a, b) => a.version - b.version);
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) throw new Error(`migrations must be numbered 0001 upwards without gaps (found ${m.version})`);
  });
  return migrations;
}

async function withLock<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  return withClient(pool, async (client) => {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_ID]);
    try {
      await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
      return await fn(client);
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_ID]);
    }
  });
}

async function appliedVersions(client: pg.PoolClient): Promise<Map<number, Date>> {
  const { rows } = await client.query<{ version: number; applied_at: Date }>('SELECT version, applied_at FROM schema_migrations');
  return new Map(rows.map((r) => [r.version, r.applied_at]));
}

async function inTransaction(client: pg.PoolClient, fn: () => Promise<void>): Promise<void> {
  await client.query('BEGIN');
  try {
    await fn();
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  }
}

/** Applies every pending migration in order, each in its own transaction; returns the versions applied. */
export async function migrateUp(pool: pg.Pool, migrations = loadMigrations()): Promise<number[]> {
  return withLock(pool, async (client) => {
    const applied = await appliedVersions(client);
    const done: number[] = [];
    for (const m of migrations) {
      if (applied.has(m.version)) continue;
      await inTransaction(client, async () => {
        await client.query(m.up);
        await client.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
      });
      done.push(m.version);
    }
    return done;
  });
}

/** Reverts the newest applied migration; returns its version, or null when none is applied. */
export async function migrateDown(pool: pg.Pool, migrations = loadMigrations()): Promise<number | null> {
  return withLock(pool, async (client) => {
    const applied = await appliedVersions(client);
    const latest = [...applied.keys()].sort((a, b) => b - a)[0];
    if (latest === undefined) return null;
    const m = migrations.find((x) => x.version === latest);
    if (!m) throw new Error(`applied migration ${latest} has no file in migrations/`);
    await inTransaction(client, async () => {
      await client.query(m.down);
      await client.query('DELETE FROM schema_migrations WHERE version = $1', [m.version]);
    });
    return m.version;
  });
}

export async function migrationStatus(pool: pg.Pool, migrations = loadMigrations()): Promise<MigrationStatus[]> {
  return withLock(pool, async (client) => {
    const applied = await appliedVersions(client);
    return migrations.map((m) => ({ version: m.version, name: m.name, appliedAt: applied.get(m.version) ?? null }));
  });
}
