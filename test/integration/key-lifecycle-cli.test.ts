// Integration tests: the key-lifecycle CLI jobs (README.md, Commands; docs/protocol.md) run as real child processes
// (`node bin/sotalk.js ...`) against a test database while a server keeps running:
// rotate-master (interrupted by SIGKILL and resumed; with concurrent edits), verify (tampered
// rows, fingerprints still needed), export (NDJSON, audited) and rotate-conversation.
import { spawn, type ChildProcess } from 'node:child_process';
import { createDecipheriv, hkdfSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { apiClient, type ApiClient } from '../helpers/http.js';
import { signIn, startTestServer, type SignedInUser, type TestServer } from '../helpers/server.js';
import { FP_A, FP_B, KEY_A_B64, KEY_B_B64, ON_A, ON_B_WITH_A, ONLY_B, holdMessageLock, inParallel, lockWaiters, waitFor, type Keys } from '../helpers/jobs.js';

// ---------------------------------------------------------------- keys and hand-made crypto (docs/design.md, Crypto)

const MASTER_BY_FP = new Map([
  [FP_A, Buffer.from(KEY_A_B64, 'base64')],
  [FP_B, Buffer.from(KEY_B_B64, 'base64')],
]);
/** Tokens must survive a restart with another master key (the default secret derives from it). */
const COMMON = { AUTH_TOKEN_SECRET: 'key-lifecycle-tests-token-secret-0123456789abcdef', RATE_LIMIT_SEND_PER_MIN: '0' };

function handDerivedKey(master: Buffer, conversationId: string, createdUnixSeconds: number, version: number): Buffer {
  return Buffer.from(
    hkdfSync('sha256', master, Buffer.from(`${conversationId.toLowerCase()}:${createdUnixSeconds}:${version}`, 'utf8'), Buffer.from('sotalk-conversation-encryption-v1', 'utf8'), 32),
  );
}

function handDecrypt(key: Buffer, nonce: Buffer, ciphertext: Buffer, tag: Buffer, aad: string): string | null {
  const d = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: 16 });
  d.setAAD(Buffer.from(aad, 'utf8'));
  d.setAuthTag(tag);
  const body = d.update(ciphertext);
  try {
    return Buffer.concat([body, d.final()]).toString('utf8');
  } catch {
    return null;
  }
}

interface StoredRow {
  id: string;
  conversation_id: string;
  sender_id: string;
  content: Buffer | null;
  deleted_at: Date | null;
  nonce: Buffer | null;
  tag: Buffer | null;
  key_version: number | null;
  created_unix_seconds: number | null;
  master_key_fingerprint: string | null;
}

/** Every message row (tombstones included) with its metadata and key version. */
async function storedRows(pool: pg.Pool, where = 'true', params: unknown[] = []): Promise<StoredRow[]> {
  const { rows } = await pool.query<StoredRow>(
    `SELECT m.id, m.conversation_id, m.sender_id, m.content, m.deleted_at, e.nonce, e.tag, e.key_version,
            k.created_unix_seconds::float8 AS created_unix_seconds, k.master_key_fingerprint
     FROM messages m
     LEFT JOIN message_encryption_metadata e ON e.message_id = m.id
     LEFT JOIN conversation_keys k ON k.conversation_id = m.conversation_id AND k.version = e.key_version
     WHERE ${where} ORDER BY m.id`,
    params,
  );
  return rows;
}

const derivedCache = new Map<string, Buffer>();
/** Decrypts a stored row by hand (docs/design.md, Crypto) with the master key its key version names; null if that fails. */
function handOpen(r: StoredRow): string | null {
  if (!r.content || !r.nonce || !r.tag || r.key_version === null || r.created_unix_seconds === null || !r.master_key_fingerprint) return null;
  const master = MASTER_BY_FP.get(r.master_key_fingerprint);
  if (!master) return null;
  const id = `${r.conversation_id}:${r.key_version}:${r.created_unix_seconds}:${r.master_key_fingerprint}`;
  let key = derivedCache.get(id);
  if (!key) derivedCache.set(id, (key = handDerivedKey(master, r.conversation_id, r.created_unix_seconds, r.key_version)));
  return handDecrypt(key, r.nonce, r.content, r.tag, `${r.conversation_id}:${r.id}:${r.sender_id}`);
}

async function countByFingerprint(pool: pg.Pool): Promise<Record<string, number>> {
  const { rows } = await pool.query<{ fp: string; n: number }>(
    `SELECT k.master_key_fingerprint AS fp, count(*)::int AS n FROM messages m
     JOIN message_encryption_metadata e ON e.message_id = m.id
     JOIN conversation_keys k ON k.conversation_id = m.conversation_id AND k.version = e.key_version GROUP BY 1`,
  );
  return Object.fromEntries(rows.map((r) => [r.fp, r.n]));
}

async function auditSum(pool: pg.Pool, purpose: string, conversationId?: string): Promise<{ rows: number; sum: number; withActor: number }> {
  const { rows } = await pool.query<{ rows: number; sum: number; with_actor: number }>(
    `SELECT count(*)::int AS rows, coalesce(sum(message_count), 0)::int AS sum, count(actor_id)::int AS with_actor
     FROM decryption_audit WHERE purpose = $1 AND ($2::uuid IS NULL OR conversation_id = $2)`,
    [purpose, conversationId ?? null],
  );
  return { rows: rows[0]!.rows, sum: rows[0]!.sum, withActor: rows[0]!.with_actor };
}

// ---------------------------------------------------------------- the CLI as a child process

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const cliDataDir = mkdtempSync(join(tmpdir(), 'sotalk-cli-test-'));
afterAll(() => rmSync(cliDataDir, { recursive: true, force: true }));

interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface CliRun {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  done: Promise<CliResult>;
}

function startCli(db: TestDatabase, keys: Keys, args: string[], extraEnv: Record<string, string> = {}): CliRun {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    NODE_ENV: 'test',
    DATABASE_URL: db.url,
    ...keys,
    CRYPTO_POOL_SIZE: '1',
    SOTALK_DATA_DIR: cliDataDir,
    LOG_LEVEL: 'warn',
    ...extraEnv,
  };
  const child = spawn(process.execPath, ['bin/sotalk.js', ...args], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
  const done = new Promise<CliResult>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stdout: out, stderr: err }));
  });
  return { child, stdout: () => out, stderr: () => err, done };
}

const runCli = (db: TestDatabase, keys: Keys, args: string[], extraEnv?: Record<string, string>) => startCli(db, keys, args, extraEnv).done;

/** The `master key <fp>: needed|not needed` lines, which must be the last lines of verify's output. */
function neededLines(stdout: string): Map<string, string> {
  const lines = stdout.trimEnd().split('\n');
  const tail: string[] = [];
  for (let i = lines.length - 1; i >= 0 && /^master key /.test(lines[i]!); i--) tail.unshift(lines[i]!);
  const result = new Map<string, string>();
  for (const line of tail) {
    const m = /^master key ([0-9a-f]{16}): (needed|not needed)\b/.exec(line);
    expect(m, `verify line "${line}"`).not.toBeNull();
    result.set(m![1]!, m![2]!);
  }
  return result;
}

// ---------------------------------------------------------------- API helpers and bulk data

const on = (s: TestServer, u: SignedInUser): ApiClient => apiClient(s.baseUrl, u.token);

async function send(api: ApiClient, conversationId: string, content: string): Promise<any> {
  const res = await api.post('/api/v1/messages', { conversation_id: conversationId, content });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.message;
}

async function history(api: ApiClient, conversationId: string): Promise<any[]> {
  const res = await api.get(`/api/v1/conversations/${conversationId}/messages?limit=200`);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.messages;
}

async function group(owner: ApiClient, members: SignedInUser[], title = 'keys'): Promise<string> {
  const res = await owner.post('/api/v1/conversations', { type: 'group', title, member_ids: members.map((m) => m.user.id) });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.conversation.id;
}

interface Seeded {
  users: SignedInUser[];
  conversations: string[];
  /** message id → { plaintext, sender } */
  messages: Map<string, { content: string; sender: SignedInUser; conversationId: string }>;
}

/** `conversations` groups of two users with `perConversation` messages each, sent 20 at a time. */
async function seed(s: TestServer, conversations: number, perConversation: number): Promise<Seeded> {
  const users = await Promise.all([signIn(s.baseUrl), signIn(s.baseUrl)]);
  const ids: string[] = [];
  for (let i = 0; i < conversations; i++) ids.push(await group(users[0]!.api, [users[1]!], `bulk ${i}`));
  const jobs = ids.flatMap((conversationId, ci) => Array.from({ length: perConversation }, (_, mi) => ({ conversationId, ci, mi })));
  const messages: Seeded['messages'] = new Map();
  await inParallel(jobs, 20, async ({ conversationId, ci, mi }) => {
    const sender = users[mi % 2]!;
    const content = `bulk c${ci} m${mi} — ünïcødé ✓ ${'x'.repeat(mi % 7)}`;
    const m = await send(sender.api, conversationId, content);
    messages.set(m.id, { content, sender, conversationId });
  });
  return { users, conversations: ids, messages };
}


async function idAtRank(pool: pg.Pool, rank: number): Promise<string> {
  const { rows } = await pool.query<{ id: string }>('SELECT id FROM messages ORDER BY id OFFSET $1 LIMIT 1', [rank]);
  return rows[0]!.id;
}

// ---------------------------------------------------------------- tests

describe('rotate-master over 3000 messages: SIGKILL part way, resume, then drop the old key', () => {
  const CONVERSATIONS = 30;
  const PER_CONVERSATION = 100;
  const TOTAL = CONVERSATIONS * PER_CONVERSATION;
  let db: TestDatabase;
  let s: TestServer;
  let data: Seeded;

  beforeAll(async () => {
    db = await createTestDatabase();
    s = await startTestServer({ database: db, env: { ...COMMON, ...ON_A } });
    data = await seed(s, CONVERSATIONS, PER_CONVERSATION);
    expect(data.messages.size).toBe(TOTAL);
    await s.close();
    // Phase 2 of the documented rotation: B active, A kept for decryption; the service keeps running.
    s = await startTestServer({ database: db, env: { ...COMMON, ...ON_B_WITH_A } });
  }, 600_000);

  afterAll(async () => {
    await s?.close();
    await db?.drop();
  });

  it('killed with SIGKILL part way: no message lost, every one decrypts (with A or with B) to its original text', async () => {
    expect(await countByFingerprint(s.pool)).toEqual({ [FP_A]: TOTAL });
    // The job works in batches of 500 ordered by id. Holding a lock on a row of the second batch
    // makes it stop there with exactly one batch committed, so the kill lands part way for sure.
    const lock = await holdMessageLock(db, await idAtRank(s.pool, 700));
    const job = startCli(db, ON_B_WITH_A, ['rotate-master']);
    let exited: CliResult | undefined;
    void job.done.then((r) => (exited = r));
    try {
      await waitFor(
        'one batch re-encrypted and the job waiting on the second',
        async () => (await countByFingerprint(s.pool))[FP_B] === 500 && (await lockWaiters(s.pool, db)) > 0,
        240_000,
        () => (exited ? `the job exited early: ${JSON.stringify(exited)}` : undefined),
      );
      // Its progress started from the full count and has not finished.
      expect(job.stderr()).toMatch(new RegExp(`rotate-master: 0/${TOTAL} `));
      expect(job.stderr()).not.toMatch(/done in/);
      job.child.kill('SIGKILL');
      const result = await job.done;
      expect(result.signal).toBe('SIGKILL');
    } finally {
      if (!exited) job.child.kill('SIGKILL');
      await lock.release();
    }

    const rows = await storedRows(s.pool);
    expect(rows).toHaveLength(TOTAL);
    expect(await countByFingerprint(s.pool)).toEqual({ [FP_A]: TOTAL - 500, [FP_B]: 500 });
    const wrong = rows.filter((r) => handOpen(r) !== data.messages.get(r.id)?.content);
    expect(wrong.map((r) => r.id)).toEqual([]);
    // The running server reads all of it.
    for (const conversationId of data.conversations.slice(0, 5)) {
      const page = await history(on(s, data.users[0]!), conversationId);
      expect(page).toHaveLength(PER_CONVERSATION);
      for (const m of page) expect(m.content).toBe(data.messages.get(m.id)!.content);
    }
  }, 600_000);

  it('run again: it continues with what is left (finished batches are not redone) and completes', async () => {
    const result = await runCli(db, ON_B_WITH_A, ['rotate-master']);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toMatch(new RegExp(`re-encrypted ${TOTAL - 500} of ${TOTAL - 500} messages`));
    expect(result.stderr).toMatch(/done in/);
    expect(await countByFingerprint(s.pool)).toEqual({ [FP_B]: TOTAL });
    const rows = await storedRows(s.pool);
    expect(rows).toHaveLength(TOTAL);
    expect(rows.filter((r) => handOpen(r) !== data.messages.get(r.id)?.content).map((r) => r.id)).toEqual([]);
    // Every decryption the jobs did is audited as `reencrypt`, by no user. The killed run may have
    // audited the batch it decrypted but never committed.
    const audit = await auditSum(s.pool, 'reencrypt');
    expect(audit.withActor).toBe(0);
    expect(audit.sum).toBeGreaterThanOrEqual(TOTAL);
    expect(audit.sum).toBeLessThanOrEqual(TOTAL + 500);
  }, 600_000);

  it('a server with ONLY key B reads every message back; verify exits 0 and says A not needed, B needed', async () => {
    await s.close();
    s = await startTestServer({ database: db, env: { ...COMMON, ...ONLY_B } });
    await inParallel(data.conversations, 5, async (conversationId) => {
      const page = await history(on(s, data.users[1]!), conversationId);
      expect(page).toHaveLength(PER_CONVERSATION);
      for (const m of page) {
        expect(m.integrity_error, m.id).toBeUndefined();
        expect(m.content).toBe(data.messages.get(m.id)!.content);
      }
    });
    const verify = await runCli(db, ONLY_B, ['verify']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    expect(verify.stdout).toMatch(new RegExp(`checked ${TOTAL} messages, 0 failed`));
    const needed = neededLines(verify.stdout);
    expect(needed.get(FP_A)).toBe('not needed');
    expect(needed.get(FP_B)).toBe('needed');
  }, 600_000);
});

describe('rotate-master while messages are edited and deleted through the API', () => {
  const CONVERSATIONS = 10;
  const PER_CONVERSATION = 150;
  const TOTAL = CONVERSATIONS * PER_CONVERSATION;
  let db: TestDatabase;
  let s: TestServer;
  let data: Seeded;

  beforeAll(async () => {
    db = await createTestDatabase();
    s = await startTestServer({ database: db, env: { ...COMMON, ...ON_A } });
    data = await seed(s, CONVERSATIONS, PER_CONVERSATION);
    await s.close();
    s = await startTestServer({ database: db, env: { ...COMMON, ...ON_B_WITH_A } });
  }, 600_000);

  afterAll(async () => {
    await s?.close();
    await db?.drop();
  });

  it('edits committed while the job runs survive it (never the old content), deletes stay deleted, everything decrypts', async () => {
    const ranked = (await s.pool.query<{ id: string }>('SELECT id FROM messages ORDER BY id')).rows.map((r) => r.id);
    expect(ranked).toHaveLength(TOTAL);
    const expected = new Map([...data.messages].map(([id, m]) => [id, m.content as string | null]));
    const edit = async (id: string, content: string) => {
      const m = data.messages.get(id)!;
      const res = await on(s, m.sender).patch(`/api/v1/messages/${id}`, { content });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(res.body.message.content).toBe(content);
      expected.set(id, content);
    };
    const remove = async (id: string) => {
      const res = await on(s, data.messages.get(id)!.sender).delete(`/api/v1/messages/${id}`);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expected.set(id, null);
    };

    // Batches of 500 by id: batch 1 = ranks 0..499, batch 2 = 500..999 (held at rank 750), batch 3 = 1000..1499.
    const lock = await holdMessageLock(db, ranked[750]!);
    const job = startCli(db, ON_B_WITH_A, ['rotate-master']);
    let exited: CliResult | undefined;
    void job.done.then((r) => (exited = r));
    const background: Promise<void>[] = [];
    let released = false;
    try {
      await waitFor(
        'batch 1 re-encrypted and the job holding at batch 2',
        async () => (await countByFingerprint(s.pool))[FP_B] === 500 && (await lockWaiters(s.pool, db)) > 0,
        240_000,
        () => (exited ? `the job exited early: ${JSON.stringify(exited)}` : undefined),
      );
      // Batch 2 is decrypted and sealed, its rows up to rank 750 locked by the job. These writes
      // commit now, before the job writes batch 2 or reads batch 3 (from its older snapshot):
      await edit(ranked[100]!, 'edited: batch 1, after its re-encryption');
      await edit(ranked[900]!, 'edited: batch 2, decrypted by the job before this edit');
      await edit(ranked[980]!, 'edited: batch 2, first edit');
      await edit(ranked[980]!, 'edited: batch 2, second edit');
      await edit(ranked[1200]!, 'edited: batch 3, in the job snapshot');
      await edit(ranked[1499]!, 'edited: batch 3, the very last row');
      await remove(ranked[950]!);
      await remove(ranked[1300]!);
      // These rows are locked by the job (batch 2 below the held row): the writes wait for it.
      background.push(edit(ranked[600]!, 'edited: batch 2, waited for the job'));
      background.push(remove(ranked[610]!));
      await waitFor('the blocked edit and delete to wait on the job', async () => (await lockWaiters(s.pool, db)) >= 3, 60_000);
      await lock.release();
      released = true;
      // And a stream of edits while the job finishes.
      let stop = false;
      const stream = (async () => {
        for (let i = 1100; !stop && i < 1500; i += 37) await edit(ranked[i]!, `edited: while running #${i}`);
      })();
      const result = await job.done;
      stop = true;
      await stream;
      await Promise.all(background);
      expect(result.code, result.stdout + result.stderr).toBe(0);
      const m = /re-encrypted (\d+) of (\d+) messages(?:, (\d+) changed meanwhile)?/.exec(result.stdout);
      expect(m, result.stdout).not.toBeNull();
      expect(Number(m![2])).toBe(TOTAL);
      // 900, 980, 1200, 1499 (edited) and 950, 1300 (deleted) changed after the job read them.
      expect(Number(m![3] ?? 0)).toBeGreaterThanOrEqual(6);
      expect(Number(m![1]) + Number(m![3] ?? 0)).toBe(TOTAL);
    } finally {
      if (!exited) job.child.kill('SIGKILL');
      if (!released) await lock.release();
      await Promise.allSettled(background);
    }

    // The database: no row left under A, every live row decrypts with B to the latest write.
    const rows = await storedRows(s.pool);
    expect(rows).toHaveLength(TOTAL);
    expect(await countByFingerprint(s.pool)).toEqual({ [FP_B]: TOTAL - 3 });
    const mismatched = rows.filter((r) => (r.deleted_at ? r.content !== null || r.nonce !== null : handOpen(r) !== expected.get(r.id)));
    expect(mismatched.map((r) => ({ id: r.id, fp: r.master_key_fingerprint, got: handOpen(r), want: expected.get(r.id) }))).toEqual([]);
    expect(rows.filter((r) => r.deleted_at).map((r) => r.id).sort()).toEqual([ranked[610]!, ranked[950]!, ranked[1300]!].sort());

    // The API: the edited content, never the old one.
    for (const conversationId of data.conversations) {
      const page = await history(on(s, data.users[0]!), conversationId);
      expect(page).toHaveLength(PER_CONVERSATION);
      for (const msg of page) {
        expect(msg.integrity_error, msg.id).toBeUndefined();
        expect(msg.content, msg.id).toBe(expected.get(msg.id));
        expect(msg.deleted).toBe(expected.get(msg.id) === null);
      }
    }
    const verify = await runCli(db, ONLY_B, ['verify']);
    expect(verify.code, verify.stdout).toBe(0);
    expect(neededLines(verify.stdout).get(FP_A)).toBe('not needed');
  }, 600_000);
});

describe('verify', () => {
  let db: TestDatabase;
  let s: TestServer;
  let conv: string;
  const underA: string[] = [];
  const underB: string[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    s = await startTestServer({ database: db, env: { ...COMMON, ...ON_A } });
    const [a, b] = await Promise.all([signIn(s.baseUrl), signIn(s.baseUrl)]);
    conv = await group(a.api, [b]);
    for (let i = 0; i < 5; i++) underA.push((await send(a.api, conv, `verify A ${i}`)).id);
    await s.close();
    s = await startTestServer({ database: db, env: { ...COMMON, ...ON_B_WITH_A } });
    for (let i = 0; i < 3; i++) underB.push((await send(on(s, b), conv, `verify B ${i}`)).id);
  }, 300_000);

  afterAll(async () => {
    await s?.close();
    await db?.drop();
  });

  it('on intact data: exits 0, both keys needed, audited as verify', async () => {
    const result = await runCli(db, ON_B_WITH_A, ['verify']);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toMatch(/checked 8 messages, 0 failed/);
    expect(result.stdout).not.toMatch(/integrity failure/);
    const needed = neededLines(result.stdout);
    expect(needed.get(FP_A)).toBe('needed');
    expect(needed.get(FP_B)).toBe('needed');
    const audit = await auditSum(s.pool, 'verify', conv);
    expect(audit).toEqual({ rows: audit.rows, sum: 8, withActor: 0 });
  }, 120_000);

  it('a flipped ciphertext byte: exits 1, prints the message id, and still lists the fingerprints needed', async () => {
    const victim = underB[1]!;
    await s.pool.query('UPDATE messages SET content = set_byte(content, 0, get_byte(content, 0) # 1) WHERE id = $1', [victim]);
    const result = await runCli(db, ON_B_WITH_A, ['verify']);
    expect(result.code, result.stdout + result.stderr).toBe(1);
    expect(result.stdout).toContain(`integrity failure: ${victim}`);
    const failures = result.stdout.split('\n').filter((l) => l.startsWith('integrity failure'));
    expect(failures).toEqual([`integrity failure: ${victim}`]);
    expect(result.stdout).toMatch(/checked 8 messages, 1 failed/);
    const needed = neededLines(result.stdout);
    expect(needed.get(FP_A)).toBe('needed');
    expect(needed.get(FP_B)).toBe('needed');
  }, 120_000);

  it('without the old key: every message under A fails too, and A is listed as needed (not held)', async () => {
    const result = await runCli(db, ONLY_B, ['verify']);
    expect(result.code).toBe(1);
    const failed = new Set(result.stdout.split('\n').filter((l) => l.startsWith('integrity failure: ')).map((l) => l.slice('integrity failure: '.length)));
    expect(failed).toEqual(new Set([...underA, underB[1]!]));
    const needed = neededLines(result.stdout);
    expect(needed.get(FP_A)).toBe('needed');
    expect(needed.get(FP_B)).toBe('needed');
    expect(result.stdout).toMatch(new RegExp(`master key ${FP_A}: needed \\(not held`));
  }, 120_000);
});

describe('rotate-master with rows it cannot decrypt', () => {
  let db: TestDatabase;
  let s: TestServer;
  const underA = new Map<string, string>();

  beforeAll(async () => {
    db = await createTestDatabase();
    s = await startTestServer({ database: db, env: { ...COMMON, ...ON_A } });
    const [a, b] = await Promise.all([signIn(s.baseUrl), signIn(s.baseUrl)]);
    const conv = await group(a.api, [b]);
    for (let i = 0; i < 6; i++) {
      const m = await send(i % 2 ? a.api : b.api, conv, `hard to move ${i}`);
      underA.set(m.id, m.content);
    }
  }, 120_000);

  afterAll(async () => {
    await s?.close();
    await db?.drop();
  });

  it('without the old key: exits 1, lists every message it could not decrypt, and changes none of them', async () => {
    // The server still runs on A alone, so rotate-master has to be forced past its instance check.
    const result = await runCli(db, ONLY_B, ['rotate-master', '--force']);
    expect(result.code, result.stdout + result.stderr).toBe(1);
    const failed = result.stdout.split('\n').filter((l) => l.startsWith('integrity failure: ')).map((l) => l.slice('integrity failure: '.length));
    expect(new Set(failed)).toEqual(new Set(underA.keys()));
    expect(result.stdout).toMatch(/re-encrypted 0 of 6 messages, 6 could not be decrypted/);
    expect(await countByFingerprint(s.pool)).toEqual({ [FP_A]: 6 });
    for (const r of await storedRows(s.pool)) expect(handOpen(r)).toBe(underA.get(r.id));
  }, 120_000);

  it('with a tampered row: moves the others, lists the tampered one, exits 1; verify still needs A for it', async () => {
    const [victim] = [...underA.keys()];
    await s.pool.query('UPDATE messages SET content = set_byte(content, 0, get_byte(content, 0) # 1) WHERE id = $1', [victim]);
    const result = await runCli(db, ON_B_WITH_A, ['rotate-master', '--force']);
    expect(result.code, result.stdout + result.stderr).toBe(1);
    expect(result.stdout).toMatch(/re-encrypted 5 of 6 messages, 1 could not be decrypted/);
    expect(result.stdout.split('\n').filter((l) => l.startsWith('integrity failure'))).toEqual([`integrity failure: ${victim}`]);
    expect(await countByFingerprint(s.pool)).toEqual({ [FP_A]: 1, [FP_B]: 5 });
    const rows = await storedRows(s.pool);
    for (const r of rows) expect(handOpen(r)).toBe(r.id === victim ? null : underA.get(r.id));
    const verify = await runCli(db, ON_B_WITH_A, ['verify']);
    expect(verify.code).toBe(1);
    expect(verify.stdout).toContain(`integrity failure: ${victim}`);
    const needed = neededLines(verify.stdout);
    expect(needed.get(FP_A)).toBe('needed');
    expect(needed.get(FP_B)).toBe('needed');
  }, 120_000);
});

describe('re-encryption and KEY_ROTATION_MESSAGES', () => {
  it('a version that --reencrypt filled beyond KEY_ROTATION_MESSAGES takes at most one more message before it is retired', async () => {
    const limit = { KEY_ROTATION_MESSAGES: '5' };
    const s = await startTestServer({ env: { ...COMMON, ...ONLY_B, ...limit } });
    try {
      const [a, b] = await Promise.all([signIn(s.baseUrl), signIn(s.baseUrl)]);
      const conv = await group(a.api, [b]);
      for (let i = 0; i < 8; i++) await send(i % 2 ? a.api : b.api, conv, `counted ${i}`); // versions 1×5, 2×3
      const result = await runCli(s.database, ONLY_B, ['rotate-conversation', conv, '--reencrypt'], limit);
      expect(result.code, result.stdout + result.stderr).toBe(0);
      expect(result.stdout).toContain('key version 3 is current');
      expect((await storedRows(s.pool, 'm.conversation_id = $1', [conv])).map((r) => r.key_version)).toEqual(Array(8).fill(3));
      // Version 3 now holds 8 messages encrypted under it, more than the limit of 5.
      const next = [await send(a.api, conv, 'next 1'), await send(b.api, conv, 'next 2')];
      const versions = (await storedRows(s.pool, 'm.id = ANY($1::uuid[])', [next.map((m) => m.id)])).map((r) => r.key_version);
      expect(versions.filter((v) => v === 3).length, `versions of the two messages after the re-encryption: ${versions}`).toBeLessThanOrEqual(1);
    } finally {
      await s.close();
    }
  }, 180_000);
});

describe('export', () => {
  let db: TestDatabase;
  let s: TestServer;
  let a: SignedInUser, b: SignedInUser;
  let conv: string;
  let other: string;
  /** seq order: content (null for tombstones) */
  const expected: { id: string; content: string | null }[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    s = await startTestServer({ database: db, env: { ...COMMON, ...ON_A } });
    [a, b] = await Promise.all([signIn(s.baseUrl), signIn(s.baseUrl)]);
    conv = await group(a.api, [b], 'exported');
    other = await group(b.api, [a], 'not exported');
    for (let i = 0; i < 10; i++) {
      const content = i === 4 ? 'multi\nline "quoted" {json-ish} ✓' : `export A ${i}`;
      expected.push({ id: (await send(i % 2 ? b.api : a.api, conv, content)).id, content });
    }
    for (let i = 0; i < 4; i++) await send(b.api, other, `other ${i}`);
    await s.close();
    s = await startTestServer({ database: db, env: { ...COMMON, ...ON_B_WITH_A } });
    for (let i = 0; i < 5; i++) expected.push({ id: (await send(on(s, i % 2 ? a : b), conv, `export B ${i}`)).id, content: `export B ${i}` });
    // Edit one written under A (now under B), delete one under A and one under B.
    expect((await on(s, a).patch(`/api/v1/messages/${expected[2]!.id}`, { content: 'export A 2, edited' })).status).toBe(200);
    expected[2]!.content = 'export A 2, edited';
    expect((await on(s, b).delete(`/api/v1/messages/${expected[3]!.id}`)).status).toBe(200);
    expected[3]!.content = null;
    expect((await on(s, a).delete(`/api/v1/messages/${expected[11]!.id}`)).status).toBe(200);
    expected[11]!.content = null;
  }, 300_000);

  afterAll(async () => {
    await s?.close();
    await db?.drop();
  });

  it('prints one message object per line in seq order with the original plaintexts; tombstones as content null, deleted true', async () => {
    const result = await runCli(db, ON_B_WITH_A, ['export', conv]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout.endsWith('\n')).toBe(true);
    const lines = result.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(15);
    const exported = lines.map((l) => JSON.parse(l));
    expect(exported.map((m) => m.seq)).toEqual(Array.from({ length: 15 }, (_, i) => i + 1));
    expect(exported.map((m) => m.id)).toEqual(expected.map((e) => e.id));
    expect(exported.map((m) => m.content)).toEqual(expected.map((e) => e.content));
    expect(exported.map((m) => m.deleted)).toEqual(expected.map((e) => e.content === null));
    expect(exported.every((m) => m.conversation_id === conv)).toBe(true);
    expect(exported.some((m) => m.integrity_error)).toBe(false);
    expect(exported[2].edited_at).not.toBeNull();
    expect(result.stderr).toMatch(/exported 15 messages/);
    // The same message objects as the API (docs/protocol.md).
    const page = await history(on(s, a), conv);
    expect(exported.map((m) => Object.keys(m).sort())).toEqual(page.map((m) => Object.keys(m).sort()));
    for (const [i, m] of exported.entries()) {
      const { status: _s1, ...fromExport } = m;
      const { status: _s2, ...fromApi } = page[i];
      expect(fromExport).toEqual(fromApi);
    }
  }, 120_000);

  it('is audited: purpose export, actor_id null, summing to the number of live messages', async () => {
    const audit = await auditSum(s.pool, 'export', conv);
    expect(audit.withActor).toBe(0);
    expect(audit.sum).toBe(13);
    expect(await auditSum(s.pool, 'export', other)).toEqual({ rows: 0, sum: 0, withActor: 0 });
  });

  it('an unknown conversation or a bad id fails with a non-zero exit and prints no messages', async () => {
    const unknown = await runCli(db, ON_B_WITH_A, ['export', '0b8f6c2e-3d4a-4c1e-9a57-2f1d6b8e9c01']);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stdout).toBe('');
    const bad = await runCli(db, ON_B_WITH_A, ['export', 'not-a-uuid']);
    expect(bad.code).not.toBe(0);
    expect(bad.stdout).toBe('');
  }, 120_000);

  it("rotate-master's decryptions are audited as reencrypt (actor null), one per message moved", async () => {
    const underA = (await countByFingerprint(s.pool))[FP_A]!;
    expect(underA).toBe(8 + 4); // conv: 10 - 1 edited - 1 deleted; other: 4
    const before = await auditSum(s.pool, 'reencrypt');
    const result = await runCli(db, ON_B_WITH_A, ['rotate-master']);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toMatch(new RegExp(`re-encrypted ${underA} of ${underA} messages`));
    const after = await auditSum(s.pool, 'reencrypt');
    expect(after.sum - before.sum).toBe(underA);
    expect(after.withActor).toBe(0);
    expect((await auditSum(s.pool, 'reencrypt', conv)).sum).toBe(8);
    expect((await auditSum(s.pool, 'reencrypt', other)).sum).toBe(4);
    // And the export reads the same after the move, now with only B.
    const again = await runCli(db, ONLY_B, ['export', conv]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout.trimEnd().split('\n').map((l) => JSON.parse(l).content)).toEqual(expected.map((e) => e.content));
  }, 180_000);
});

describe('rotate-conversation', () => {
  let db: TestDatabase;
  let s: TestServer;
  let a: SignedInUser, b: SignedInUser;
  let conv: string;
  let bystander: string;
  const contents = new Map<string, string | null>();

  const versionsOf = async (id: string) =>
    (await s.pool.query('SELECT version, master_key_fingerprint FROM conversation_keys WHERE conversation_id = $1 ORDER BY version', [id])).rows.map(
      (r) => [r.version, r.master_key_fingerprint],
    );
  const messageVersions = async (id: string) =>
    (await storedRows(s.pool, 'm.conversation_id = $1 AND m.deleted_at IS NULL', [id])).map((r) => r.key_version);

  beforeAll(async () => {
    db = await createTestDatabase();
    s = await startTestServer({ database: db, env: { ...COMMON, ...ONLY_B } });
    [a, b] = await Promise.all([signIn(s.baseUrl), signIn(s.baseUrl)]);
    conv = await group(a.api, [b], 'rotated');
    bystander = await group(a.api, [b], 'bystander');
    for (let i = 0; i < 6; i++) {
      const m = await send(i % 2 ? b.api : a.api, conv, `rotate me ${i}`);
      contents.set(m.id, m.content);
    }
    for (let i = 0; i < 3; i++) await send(a.api, bystander, `leave me ${i}`);
  }, 300_000);

  afterAll(async () => {
    await s?.close();
    await db?.drop();
  });

  it('without --reencrypt: a new version becomes current; old messages stay under the old version and readable', async () => {
    const warm = await send(a.api, conv, 'just before rotation'); // the server now knows version 1 as current
    contents.set(warm.id, warm.content);
    const result = await runCli(db, ONLY_B, ['rotate-conversation', conv]);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toContain(`conversation ${conv}: key version 2 is current`);
    expect(await versionsOf(conv)).toEqual([
      [1, FP_B],
      [2, FP_B],
    ]);
    expect(await messageVersions(conv)).toEqual([1, 1, 1, 1, 1, 1, 1]);
    const res = await a.api.get(`/api/v1/conversations/${conv}`);
    expect(res.body.conversation.current_key_version).toBe(2);
    // At once, although this server used version 1 a moment ago.
    const fresh = await send(b.api, conv, 'after rotation');
    contents.set(fresh.id, fresh.content);
    expect((await storedRows(s.pool, 'm.id = $1', [fresh.id]))[0]!.key_version).toBe(2);
    const page = await history(a.api, conv);
    expect(page.map((m) => m.content)).toEqual([...contents.values()]);
    expect(page.some((m) => m.integrity_error)).toBe(false);
    for (const r of await storedRows(s.pool, 'm.conversation_id = $1', [conv])) expect(handOpen(r)).toBe(contents.get(r.id));
    expect(await versionsOf(bystander)).toEqual([[1, FP_B]]);
  }, 120_000);

  it('with --reencrypt: every message of that conversation moves to the new version (tombstones stay tombstones), others untouched', async () => {
    const [deleted] = [...contents.keys()];
    expect((await a.api.delete(`/api/v1/messages/${deleted}`)).status).toBe(200);
    contents.set(deleted!, null);
    const before = await auditSum(s.pool, 'reencrypt', conv);

    const result = await runCli(db, ONLY_B, ['rotate-conversation', conv, '--reencrypt']);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toContain(`conversation ${conv}: key version 3 is current`);
    expect(result.stdout).toMatch(/re-encrypted 7 of 7 messages/);
    expect(await versionsOf(conv)).toEqual([
      [1, FP_B],
      [2, FP_B],
      [3, FP_B],
    ]);
    expect(await messageVersions(conv)).toEqual([3, 3, 3, 3, 3, 3, 3]);
    const rows = await storedRows(s.pool, 'm.conversation_id = $1', [conv]);
    expect(rows).toHaveLength(8);
    for (const r of rows) {
      if (r.id === deleted) expect([r.content, r.nonce, r.deleted_at !== null]).toEqual([null, null, true]);
      else expect(handOpen(r)).toBe(contents.get(r.id));
    }
    expect((await auditSum(s.pool, 'reencrypt', conv)).sum - before.sum).toBe(7);
    expect(await versionsOf(bystander)).toEqual([[1, FP_B]]);
    expect(await messageVersions(bystander)).toEqual([1, 1, 1]);
    const page = await history(b.api, conv);
    expect(page.map((m) => m.content)).toEqual([...contents.values()]);
    expect(page.some((m) => m.integrity_error)).toBe(false);
    expect((await a.api.get(`/api/v1/conversations/${conv}`)).body.conversation.current_key_version).toBe(3);
  }, 120_000);

  it('a bad or unknown conversation id fails with a non-zero exit and creates nothing', async () => {
    const bad = await runCli(db, ONLY_B, ['rotate-conversation', 'nope']);
    expect(bad.code).not.toBe(0);
    const unknown = await runCli(db, ONLY_B, ['rotate-conversation', '0b8f6c2e-3d4a-4c1e-9a57-2f1d6b8e9c01']);
    expect(unknown.code).not.toBe(0);
    const { rows } = await s.pool.query(`SELECT count(*)::int AS n FROM conversation_keys WHERE conversation_id = '0b8f6c2e-3d4a-4c1e-9a57-2f1d6b8e9c01'`);
    expect(rows[0].n).toBe(0);
  }, 120_000);
});
