// An operator's command line that cannot mislead (issue "Production build and an operator's
// command line"): the real `sotalk` binary against real databases.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { keyFingerprint } from '../../src/crypto/kdf.js';
import { sotalk, sotalkPipeline } from '../helpers/cli.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { signIn, startTestServer, type TestServer } from '../helpers/server.js';

// Each test runs several child processes (and some a server): generous on a loaded machine.
vi.setConfig({ testTimeout: 120_000 });

const KEY_A = randomBytes(32).toString('base64');
const KEY_B = randomBytes(32).toString('base64');
const fp = (b64: string) => keyFingerprint(Buffer.from(b64, 'base64'));

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function database(): Promise<TestDatabase> {
  const db = await createTestDatabase();
  cleanups.push(() => db.drop());
  return db;
}

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'sotalk-cli-op-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function query<T extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<T>(sql, params)).rows;
  } finally {
    await c.end();
  }
}

/** The lines of stderr that are not the context lines every command prints first. */
const errorLines = (stderr: string) => stderr.trim().split('\n').filter((l) => !/^(database|master keys): /.test(l));

let db: TestDatabase;
let env: Record<string, string>;
beforeAll(async () => {
  db = await database();
  env = { DATABASE_URL: db.url, ENCRYPTION_MASTER_KEY: KEY_A, SOTALK_DATA_DIR: tempDir() };
  expect((await sotalk(['migrate', 'up'], env)).code).toBe(0);
});

// Every command's --help, flags, arguments and database line: cli-guards.test.ts.
describe('a mistyped flag', () => {
  it('a mistyped flag is exit 2 with the usage, and nothing happens (`--re-encrypt`)', async () => {
    const server = await startTestServer({ database: db, env: { ENCRYPTION_MASTER_KEY: KEY_A } });
    cleanups.push(() => server.close());
    const [a, b] = await Promise.all([signIn(server.baseUrl), signIn(server.baseUrl)]);
    const sent = await a.api.post('/api/v1/messages', { recipient_id: b.user.id, content: 'hi' });
    const conversation = sent.body.message.conversation_id;
    const r = await sotalk(['rotate-conversation', conversation, '--re-encrypt'], env);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("sotalk rotate-conversation: Unknown option '--re-encrypt'");
    expect(r.stderr).toContain('usage: sotalk rotate-conversation <conversation_id> [--reencrypt]');
    const [row] = await query<{ v: number }>(db.url, 'SELECT current_key_version AS v FROM conversations WHERE id = $1', [conversation]);
    expect(row!.v).toBe(1);
    // the right flag works
    const ok = await sotalk(['rotate-conversation', conversation, '--reencrypt'], env);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain(`conversation ${conversation}: key version 2 is current`);
  });
});

describe('which database, which keys', () => {
  it('every database command names the database on stderr: host/db for Postgres, the path for the embedded one', async () => {
    const r = await sotalk(['migrate', 'status'], env);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`database: postgres 127.0.0.1:5432/${db.name}`);
    expect(r.stderr).not.toMatch(/postgres@|password/);
    const dataDir = tempDir();
    const embedded = await sotalk(['migrate', 'status'], { DATABASE_URL: '', ENCRYPTION_MASTER_KEY: KEY_A, SOTALK_DATA_DIR: dataDir });
    expect(embedded.code, embedded.stderr).toBe(0);
    expect(embedded.stderr).toContain(`database: embedded at ${join(dataDir, 'pgdata')}`);
  }); // a fresh embedded database is initialised first: tens of seconds on a loaded machine

  it('fingerprint prints the active and old keys; keygen prints the new key\'s fingerprint on stderr', async () => {
    const r = await sotalk(['fingerprint'], { ...env, ENCRYPTION_OLD_MASTER_KEYS: KEY_B });
    expect(r.stdout).toBe(`active ${fp(KEY_A)}\nold    ${fp(KEY_B)}\n`);
    const k = await sotalk(['keygen'], {});
    expect(k.stderr.trim()).toBe(`fingerprint: ${fp(k.stdout.trim())}`);
  });

});

function randomUUIDLike(): string {
  return '0190f0aa-0000-7000-8000-000000000001';
}

describe('live instances: rotate-master and migrate down', () => {
  it('a running server registers itself with its key fingerprints and removes itself when it stops', async () => {
    const own = await database();
    const server = await startTestServer({ database: own, env: { ENCRYPTION_MASTER_KEY: KEY_A, ENCRYPTION_OLD_MASTER_KEYS: KEY_B } });
    const rows = await query<{ active_fingerprint: string; key_fingerprints: string[]; pid: number }>(own.url, 'SELECT * FROM instances');
    expect(rows).toEqual([expect.objectContaining({ active_fingerprint: fp(KEY_A), key_fingerprints: [fp(KEY_A), fp(KEY_B)], pid: process.pid })]);
    await server.close();
    expect(await query(own.url, 'SELECT * FROM instances')).toEqual([]);
  });

  it('rotate-master refuses while a live instance lacks the new key, runs once it holds it (or with --force)', async () => {
    const own = await database();
    const dataDir = tempDir();
    let server: TestServer = await startTestServer({ database: own, env: { ENCRYPTION_MASTER_KEY: KEY_A } });
    // phase 2 on the CLI's side only: B active, A old; the instance still knows only A
    const cli = { DATABASE_URL: own.url, ENCRYPTION_MASTER_KEY: KEY_B, ENCRYPTION_OLD_MASTER_KEYS: KEY_A, SOTALK_DATA_DIR: dataDir };
    const refused = await sotalk(['rotate-master'], cli);
    expect(refused.code).toBe(1);
    const lines = errorLines(refused.stderr);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^sotalk: rotate-master: 1 live instance\\(s\\) do not hold the active key ${fp(KEY_B)}.*pid ${process.pid} \\(active key ${fp(KEY_A)}\\).*--force$`));
    expect(refused.stdout).not.toMatch(/re-encrypted/);
    await server.close();
    // phase 1 done: the instance holds B (still active A) → runs, with a note
    server = await startTestServer({ database: own, env: { ENCRYPTION_MASTER_KEY: KEY_A, ENCRYPTION_OLD_MASTER_KEYS: KEY_B } });
    cleanups.push(() => server.close());
    const ran = await sotalk(['rotate-master'], cli);
    expect(ran.code, ran.stderr).toBe(0);
    expect(ran.stderr).toContain('still creates key versions under its old active key');
    expect(ran.stdout).toMatch(/re-encrypted 0 of 0 messages/);
    const forced = await sotalk(['rotate-master', '--force'], { ...cli, ENCRYPTION_MASTER_KEY: randomBytes(32).toString('base64') });
    expect(forced.code, forced.stderr).toBe(0);
  });

  it('migrate down names the migration and needs --yes while instances use the database', async () => {
    const own = await database();
    const cli = { DATABASE_URL: own.url, ENCRYPTION_MASTER_KEY: KEY_A, SOTALK_DATA_DIR: tempDir() };
    const server = await startTestServer({ database: own, env: { ENCRYPTION_MASTER_KEY: KEY_A } });
    const refused = await sotalk(['migrate', 'down'], cli);
    expect(refused.code).toBe(1);
    expect(errorLines(refused.stderr)).toEqual([expect.stringMatching(/^sotalk: migrate down would revert 0010_send_batch_probes while 1 live instance\(s\) use this database .*pass --yes$/)]);
    expect(await query(own.url, 'SELECT max(version) AS v FROM schema_migrations')).toEqual([{ v: 10 }]);
    await server.close();
    const ran = await sotalk(['migrate', 'down'], cli);
    expect(ran.code, ran.stderr).toBe(0);
    expect(ran.stdout).toBe('reverting 0010_send_batch_probes\nreverted: 10\n');
    expect((await sotalk(['migrate', 'up'], cli)).code).toBe(0);
  });
});

describe('export', () => {
  let conversation: string;
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ database: db, env: { ENCRYPTION_MASTER_KEY: KEY_A, RATE_LIMIT_SEND_PER_MIN: '0' } });
    cleanups.push(() => server.close());
    const [a, b] = await Promise.all([signIn(server.baseUrl), signIn(server.baseUrl)]);
    const first = await a.api.post('/api/v1/messages', { recipient_id: b.user.id, content: 'm0' });
    conversation = first.body.message.conversation_id;
    for (let i = 1; i < 300; i++) await a.api.post('/api/v1/messages', { conversation_id: conversation, content: `m${i}` });
  });

  it('a closed pipe (`| head -1`) ends quietly with exit 0', async () => {
    const r = await sotalkPipeline(`$SOTALK export ${conversation} | head -1`, env);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).content).toBe('m0');
    expect(r.stderr).not.toMatch(/EPIPE|Error|at /);
  });

  it('progress and the count on stderr; a message that does not decrypt makes the exit code 1', async () => {
    const ok = await sotalk(['export', conversation], env);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout.trim().split('\n')).toHaveLength(300);
    expect(ok.stderr).toMatch(/export: 300\/300 \(100\.0%\).* done in/);
    expect(ok.stderr).toContain('exported 300 messages\n');
    // one ciphertext damaged at rest
    await query(db.url, `UPDATE message_encryption_metadata SET tag = decode('00000000000000000000000000000000', 'hex') WHERE message_id = (SELECT id FROM messages WHERE conversation_id = $1 AND seq = 7)`, [conversation]);
    const bad = await sotalk(['export', conversation], env);
    expect(bad.code).toBe(1);
    expect(bad.stdout.trim().split('\n')).toHaveLength(300);
    expect(bad.stderr).toContain('exported 300 messages, 1 could not be decrypted (integrity_error: true)');
  });

  it('an unknown conversation is one line, exit 1', async () => {
    const r = await sotalk(['export', randomUUIDLike()], env);
    expect(r.code).toBe(1);
    expect(errorLines(r.stderr)).toEqual([`sotalk: conversation ${randomUUIDLike()} not found`]);
  });
});

describe('expected failures are one line, without a stack', () => {
  it('search disabled, database down, bad LOG_LEVEL / HOST, a locked data dir', async () => {
    const reindex = await sotalk(['reindex'], { ...env, SEARCH_ENABLED: 'false' });
    expect(reindex.code).toBe(1);
    expect(errorLines(reindex.stderr)).toEqual(['sotalk: reindex: search is disabled (SEARCH_ENABLED=false)']);

    const down = await sotalk(['verify'], { ...env, DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/nothing' });
    expect(down.code).toBe(1);
    expect(errorLines(down.stderr)).toEqual(['sotalk: database postgres 127.0.0.1:1/nothing unreachable (ECONNREFUSED) after 1 attempts']);

    for (const [name, value, message] of [
      ['LOG_LEVEL', 'loud', 'LOG_LEVEL: must be one of fatal, error, warn, info, debug, trace, silent'],
      ['HOST', 'not a host!', 'HOST: must be an IP address or a host name'],
      ['LOG_FORMAT', 'xml', 'LOG_FORMAT: must be json or pretty'],
    ]) {
      const r = await sotalk(['serve'], { ...env, [name!]: value });
      expect(r.code, name).toBe(1);
      expect(r.stderr.trim(), name).toBe(`sotalk: configuration error: ${message}`);
    }

    const dataDir = tempDir();
    writeFileSync(join(dataDir, 'pgdata.lock'), String(process.pid)); // held by a live process (this one)
    const locked = await sotalk(['migrate', 'status'], { DATABASE_URL: '', ENCRYPTION_MASTER_KEY: KEY_A, SOTALK_DATA_DIR: dataDir });
    expect(locked.code).toBe(1);
    expect(errorLines(locked.stderr)).toEqual([`sotalk: the embedded database in ${dataDir} is in use by process ${process.pid}; stop it or set SOTALK_DATA_DIR`]);
  });

  it('the server retries an unreachable database with backoff, one line per attempt, then gives up in one line', async () => {
    const r = await sotalk(['serve'], { ...env, DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/nothing', DATABASE_CONNECT_TIMEOUT_S: '2', LOG_LEVEL: 'info', LOG_FORMAT: 'json' });
    expect(r.code).toBe(1);
    const retries = r.stdout.trim().split('\n').map((l) => JSON.parse(l)).filter((l) => /unreachable; retrying/.test(l.msg));
    expect(retries.length).toBeGreaterThanOrEqual(2);
    expect(retries.map((l) => l.retryInMs)).toEqual([500, 1000, 2000, 4000].slice(0, retries.length));
    expect(r.stderr.trim().split('\n').at(-1)).toMatch(/^sotalk: database postgres 127\.0\.0\.1:1\/nothing unreachable \(ECONNREFUSED\) after \d+ attempts$/);
  });
});
