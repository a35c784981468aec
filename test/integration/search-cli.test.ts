// Integration tests: the blind index across configuration and key changes (docs/design.md, search; README.md, Commands).
// SEARCH_ENABLED=false (no route, no token rows), `sotalk reindex` (resumable after SIGKILL,
// --conversation, --all), master-key rotation (search before, during and after rotate-master,
// tokens recomputed under the new key), `sotalk verify` reporting search index mismatches.
// The CLI runs as real child processes (`node bin/sotalk.js ...`) against a test database.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac, hkdfSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { searchWords } from '../../src/crypto/search-tokens.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import type { ApiResponse } from '../helpers/http.js';
import { apiClient } from '../helpers/http.js';
import { signIn, startTestServer, type SignedInUser, type TestServer } from '../helpers/server.js';
import { FP_A, FP_B, KEY_A_B64, KEY_B_B64, ON_A, ON_B_WITH_A, ONLY_B, holdMessageLock, inParallel, lockWaiters, waitFor, type Keys } from '../helpers/jobs.js';

// ---------------------------------------------------------------- keys

/** Tokens must survive restarts with other master keys (the default secret derives from the key). */
const COMMON = { AUTH_TOKEN_SECRET: 'search-cli-tests-token-secret-0123456789abcdef', RATE_LIMIT_SEND_PER_MIN: '0', RATE_LIMIT_SEARCH_PER_MIN: '0' };
const OFF = { SEARCH_ENABLED: 'false' };

/** docs/design.md by hand: HMAC-SHA256(HKDF(master, salt = conversation id, "sotalk-search-v1"), word)[0:16]. */
function handToken(masterB64: string, conversationId: string, word: string): string {
  const key = Buffer.from(hkdfSync('sha256', Buffer.from(masterB64, 'base64'), Buffer.from(conversationId, 'utf8'), Buffer.from('sotalk-search-v1', 'utf8'), 32));
  return createHmac('sha256', key).update(Buffer.from(word, 'utf8')).digest().subarray(0, 16).toString('hex');
}

// ---------------------------------------------------------------- the CLI as a child process

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const cliDataDir = mkdtempSync(join(tmpdir(), 'sotalk-search-cli-'));
afterAll(() => rmSync(cliDataDir, { recursive: true, force: true }));

interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function startCli(db: TestDatabase, keys: Keys, args: string[], extraEnv: Record<string, string> = {}): { child: ChildProcess; stderr(): string; done: Promise<CliResult> } {
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
  // SEARCH_ENABLED unset unless a test sets it: the default (true) is what is exercised.
  if (!('SEARCH_ENABLED' in extraEnv)) delete env.SEARCH_ENABLED;
  const child = spawn(process.execPath, ['bin/sotalk.js', ...args], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
  const done = new Promise<CliResult>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stdout: out, stderr: err }));
  });
  return { child, stderr: () => err, done };
}

const runCli = (db: TestDatabase, keys: Keys, args: string[], extraEnv?: Record<string, string>) => startCli(db, keys, args, extraEnv).done;

const mismatchLines = (stdout: string) =>
  stdout
    .split('\n')
    .filter((l) => l.startsWith('search index mismatch: '))
    .map((l) => l.slice('search index mismatch: '.length).trim())
    .sort();

// ---------------------------------------------------------------- API helpers and data

interface Live {
  content: string;
  conversationId: string;
  sender: SignedInUser;
}

async function group(owner: SignedInUser, members: SignedInUser[], title = 'search-cli'): Promise<string> {
  const res = await owner.api.post('/api/v1/conversations', { type: 'group', title, member_ids: members.map((m) => m.user.id) });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.conversation.id;
}

async function sendAs(s: TestServer, u: SignedInUser, conversationId: string, content: string): Promise<any> {
  const res = await apiClient(s.baseUrl, u.token).post('/api/v1/messages', { conversation_id: conversationId, content });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.message;
}

function searchOn(s: TestServer, u: SignedInUser, q: string, params: Record<string, string | number | undefined> = {}): Promise<ApiResponse> {
  let path = `/api/v1/search?q=${encodeURIComponent(q)}`;
  for (const [k, v] of Object.entries(params)) if (v !== undefined) path += `&${k}=${encodeURIComponent(String(v))}`;
  return apiClient(s.baseUrl, u.token).get(path);
}

/** Every result id of a query (all pages, limit 100). */
async function searchIds(s: TestServer, u: SignedInUser, q: string, conversationId?: string): Promise<string[]> {
  const out: string[] = [];
  let before: string | undefined;
  for (let pages = 0; pages < 100; pages++) {
    const res = await searchOn(s, u, q, { limit: 100, before, conversation_id: conversationId });
    expect(res.status, `${q}: ${JSON.stringify(res.body)}`).toBe(200);
    for (const r of res.body.results) {
      expect(r.message.integrity_error, r.message.id).toBeUndefined();
      out.push(r.message.id);
    }
    if (res.body.next_cursor === null) return out.sort();
    before = res.body.next_cursor;
  }
  throw new Error('runaway paging');
}

function bruteForce(live: Map<string, Live>, q: string, conversations?: Set<string>): string[] {
  const words = searchWords(q);
  return [...live]
    .filter(([, m]) => (!conversations || conversations.has(m.conversationId)) && words.every((w) => searchWords(m.content).includes(w)))
    .map(([id]) => id)
    .sort();
}

async function expectExact(s: TestServer, u: SignedInUser, live: Map<string, Live>, queries: string[], conversations?: Set<string>): Promise<void> {
  for (const q of queries) expect(await searchIds(s, u, q), `query "${q}"`).toEqual(bruteForce(live, q, conversations));
}

async function count(pool: pg.Pool, sql: string, params: unknown[] = []): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(sql, params);
  return Number(rows[0]!.n);
}

async function stateByFingerprint(pool: pg.Pool): Promise<Record<string, number>> {
  const { rows } = await pool.query<{ fp: string; n: number }>('SELECT master_key_fingerprint AS fp, count(*)::int AS n FROM message_search_state GROUP BY 1');
  return Object.fromEntries(rows.map((r) => [r.fp, r.n]));
}

/** The token rows of every live message equal the hand-computed tokens of its words under `masterB64`. */
async function expectTokensUnder(pool: pg.Pool, live: Map<string, Live>, masterB64: string): Promise<void> {
  const { rows } = await pool.query<{ message_id: string; conversation_id: string; token: Buffer }>('SELECT message_id, conversation_id, token FROM message_search_tokens');
  const stored = new Map<string, string[]>();
  for (const r of rows) {
    expect(live.has(r.message_id), `token row of a message that is not live: ${r.message_id}`).toBe(true);
    expect(r.conversation_id).toBe(live.get(r.message_id)!.conversationId);
    stored.set(r.message_id, [...(stored.get(r.message_id) ?? []), r.token.toString('hex')]);
  }
  const wrong: string[] = [];
  for (const [id, m] of live) {
    const want = searchWords(m.content).map((w) => handToken(masterB64, m.conversationId, w)).sort();
    const got = (stored.get(id) ?? []).sort();
    if (JSON.stringify(want) !== JSON.stringify(got)) wrong.push(id);
  }
  expect(wrong, 'messages whose tokens are not the hand-computed ones').toEqual([]);
}


// ---------------------------------------------------------------- SEARCH_ENABLED=false, then reindex

describe('SEARCH_ENABLED=false, then sotalk reindex', () => {
  const SMALL = 30; // conversation 1
  const BIG = 530; // conversation 2: more than one batch of 500
  let db: TestDatabase;
  let s: TestServer;
  let a: SignedInUser;
  let b: SignedInUser;
  let c1: string;
  let c2: string;
  const live = new Map<string, Live>();
  const QUERIES = ['reindexword', 'first', 'second', 'even', 'odd item3', 'Grüße 北京', 'item7 second', 'edited', 'deleted', 'nowhere'];

  beforeAll(async () => {
    db = await createTestDatabase();
    s = await startTestServer({ database: db, env: { ...COMMON, ...ON_A, ...OFF } });
    [a, b] = (await Promise.all([signIn(s.baseUrl), signIn(s.baseUrl)])) as [SignedInUser, SignedInUser];
    c1 = await group(a, [b]);
    c2 = await group(b, [a]);
    const jobs = [
      ...Array.from({ length: SMALL }, (_, i) => ({ c: c1, i, name: 'first' })),
      ...Array.from({ length: BIG }, (_, i) => ({ c: c2, i, name: 'second' })),
    ];
    await inParallel(jobs, 16, async ({ c, i, name }) => {
      const sender = i % 2 ? a : b;
      const content = `reindexword ${name} item${i % 13} ${i % 2 ? 'odd' : 'even'} Grüße aus 北京`;
      const m = await sendAs(s, sender, c, content);
      live.set(m.id, { content, conversationId: c, sender });
    });
  }, 600_000);

  afterAll(async () => {
    await s?.close();
    await db?.drop();
  });

  it('search answers 404 and sends, edits and deletes write no token or state rows', async () => {
    const res = await searchOn(s, a, 'reindexword');
    expect(res.status).toBe(404);
    expect(res.body?.error?.code).toBe('not_found');
    expect((await searchOn(s, a, 'reindexword', { conversation_id: c1 })).status).toBe(404);
    // Edits and deletes while search is off.
    const ids = [...live.keys()];
    for (const id of ids.slice(0, 3)) {
      const m = live.get(id)!;
      const content = `${m.content} edited`;
      expect((await apiClient(s.baseUrl, m.sender.token).patch(`/api/v1/messages/${id}`, { content })).status).toBe(200);
      m.content = content;
    }
    for (const id of ids.slice(3, 6)) {
      const m = live.get(id)!;
      expect((await apiClient(s.baseUrl, m.sender.token).delete(`/api/v1/messages/${id}`)).status).toBe(200);
      live.delete(id);
    }
    expect(await count(s.pool, 'SELECT count(*)::int AS n FROM message_search_tokens')).toBe(0);
    expect(await count(s.pool, 'SELECT count(*)::int AS n FROM message_search_state')).toBe(0);
  });

  it('reindex --conversation, killed part way (SIGKILL), then run again: only that conversation, finished batches not redone', async () => {
    const bigLive = [...live].filter(([, m]) => m.conversationId === c2).map(([id]) => id).sort();
    expect(bigLive.length).toBeGreaterThan(500);
    // The job works in batches of 500 ordered by id: a lock on a row of the second batch stops it there.
    const lock = await holdMessageLock(db, bigLive[510]!);
    const job = startCli(db, ON_A, ['reindex', '--conversation', c2]);
    let exited: CliResult | undefined;
    void job.done.then((r) => (exited = r));
    try {
      await waitFor(
        'one batch indexed and the job waiting on the second',
        async () => (await count(s.pool, 'SELECT count(*)::int AS n FROM message_search_state')) === 500 && (await lockWaiters(s.pool, db)) > 0,
        240_000,
        () => (exited ? `the job exited early: ${JSON.stringify(exited)}` : undefined),
      );
      job.child.kill('SIGKILL');
      expect((await job.done).signal).toBe('SIGKILL');
    } finally {
      if (!exited) job.child.kill('SIGKILL');
      await lock.release();
    }
    expect(await stateByFingerprint(s.pool)).toEqual({ [FP_A]: 500 });
    expect(await count(s.pool, 'SELECT count(*)::int AS n FROM message_search_state s JOIN messages m ON m.id = s.message_id WHERE m.conversation_id <> $1', [c2])).toBe(0);

    const again = await runCli(db, ON_A, ['reindex', '--conversation', c2]);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.stdout).toContain(`indexed ${bigLive.length - 500} of ${bigLive.length - 500} messages`);
    expect(await count(s.pool, 'SELECT count(*)::int AS n FROM message_search_state')).toBe(bigLive.length);
    expect(await count(s.pool, 'SELECT count(*)::int AS n FROM message_search_tokens WHERE conversation_id <> $1', [c2])).toBe(0);
  }, 600_000);

  it('a server with search on finds the reindexed conversation only; reindex (no option) does the rest; a second run indexes 0', async () => {
    await s.close();
    s = await startTestServer({ database: db, env: { ...COMMON, ...ON_A } });
    await expectExact(s, a, live, QUERIES, new Set([c2]));
    expect(await searchIds(s, a, 'first')).toEqual([]);

    const smallLive = [...live.values()].filter((m) => m.conversationId === c1).length;
    const rest = await runCli(db, ON_A, ['reindex']);
    expect(rest.code, rest.stdout + rest.stderr).toBe(0);
    expect(rest.stdout).toContain(`indexed ${smallLive} of ${smallLive} messages`);
    expect(rest.stderr).toMatch(/reindex: .*msg\/s/);
    const second = await runCli(db, ON_A, ['reindex']);
    expect(second.code, second.stdout + second.stderr).toBe(0);
    expect(second.stdout).toContain('indexed 0 of 0 messages');

    await expectExact(s, a, live, QUERIES);
    await expectExact(s, b, live, QUERIES, new Set([c1]).add(c2));
    expect(await stateByFingerprint(s.pool)).toEqual({ [FP_A]: live.size });
    await expectTokensUnder(s.pool, live, KEY_A_B64);
    // Tombstones are not indexed.
    expect(await count(s.pool, 'SELECT count(*)::int AS n FROM message_search_tokens t JOIN messages m ON m.id = t.message_id WHERE m.deleted_at IS NOT NULL')).toBe(0);
  }, 600_000);

  it('reindex decryptions are audited by no user; reindex --all redoes everything; verify then reports no mismatch', async () => {
    const { rows } = await s.pool.query<{ purpose: string; with_actor: number; sum: number }>(
      `SELECT purpose, count(actor_id)::int AS with_actor, sum(message_count)::int AS sum FROM decryption_audit WHERE actor_id IS NULL GROUP BY 1`,
    );
    const reindexRows = rows.filter((r) => r.purpose !== 'verify' && r.purpose !== 'reencrypt' && r.purpose !== 'export');
    expect(reindexRows.reduce((n, r) => n + r.sum, 0)).toBeGreaterThanOrEqual(live.size);

    const all = await runCli(db, ON_A, ['reindex', '--all']);
    expect(all.code, all.stdout + all.stderr).toBe(0);
    expect(all.stdout).toContain(`indexed ${live.size} of ${live.size} messages`);
    await expectTokensUnder(s.pool, live, KEY_A_B64);
    const verify = await runCli(db, ON_A, ['verify']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    expect(verify.stdout).toContain(`checked ${live.size} messages, 0 failed, 0 search index mismatches`);
  }, 600_000);

  it('reindex with SEARCH_ENABLED=false refuses with a message and a non-zero exit; a bad --conversation is a usage error', async () => {
    const off = await runCli(db, ON_A, ['reindex'], OFF);
    expect(off.code).not.toBe(0);
    expect(off.stdout + off.stderr).toMatch(/SEARCH_ENABLED|disabled/i);
    const bad = await runCli(db, ON_A, ['reindex', '--conversation', 'not-a-uuid']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/usage/);
  }, 120_000);
});

describe('an edit made while SEARCH_ENABLED=false, then reindex', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('after reindex, search finds the message by its current words and not by the ones it had when indexed', async () => {
    let s = await startTestServer({ database: db, env: { ...COMMON, ...ON_A } });
    const [a, b] = (await Promise.all([signIn(s.baseUrl), signIn(s.baseUrl)])) as [SignedInUser, SignedInUser];
    let edited: any;
    let other: any;
    try {
      const c = await group(a, [b]);
      edited = await sendAs(s, a, c, 'alpha original words');
      other = await sendAs(s, b, c, 'alpha other message');
    } finally {
      await s.close();
    }
    // Search off: the message is edited.
    s = await startTestServer({ database: db, env: { ...COMMON, ...ON_A, ...OFF } });
    try {
      expect((await apiClient(s.baseUrl, a.token).patch(`/api/v1/messages/${edited.id}`, { content: 'bravo replacement text' })).status).toBe(200);
    } finally {
      await s.close();
    }
    const reindex = await runCli(db, ON_A, ['reindex']);
    expect(reindex.code, reindex.stdout + reindex.stderr).toBe(0);
    s = await startTestServer({ database: db, env: { ...COMMON, ...ON_A } });
    try {
      expect({
        bravo: await searchIds(s, b, 'bravo'),
        replacement: await searchIds(s, b, 'replacement text'),
        alpha: await searchIds(s, b, 'alpha'),
        original: await searchIds(s, b, 'original'),
      }).toEqual({ bravo: [edited.id], replacement: [edited.id], alpha: [other.id], original: [] });
      const verify = await runCli(db, ON_A, ['verify']);
      expect(verify.code, verify.stdout).toBe(0);
      expect(mismatchLines(verify.stdout)).toEqual([]);
    } finally {
      await s.close();
    }
  }, 300_000);
});

// ---------------------------------------------------------------- master-key rotation

describe('master-key rotation: search keeps working before, during and after rotate-master', () => {
  let db: TestDatabase;
  let s: TestServer;
  let a: SignedInUser;
  let b: SignedInUser;
  let c: SignedInUser;
  let conversations: string[];
  const live = new Map<string, Live>();
  const oldIds = new Set<string>();
  const VOCAB = ['rotation', 'alpha', 'beta', 'gamma', 'Привет', 'Köln', '東京タワー', 'emoji🎉party', 'seven'];
  const QUERIES = ['rotation', 'alpha', 'beta gamma', 'привет', 'köln alpha', '東京', 'タワー', 'party', 'seven rotation', 'fresh', 'onb', 'changed'];
  let counter = 0;
  const text = (extra = '') => {
    const i = counter++;
    const words = [VOCAB[0]!, VOCAB[1 + (i % (VOCAB.length - 1))]!, VOCAB[1 + ((i * 7) % (VOCAB.length - 1))]!];
    return `${words.join(' ')} n${i} ${extra}`.trim();
  };
  const all = () => new Set(conversations);
  /** r1 and r3 have a, b and c; r2 only a and b. */
  const memberOf = (conversation: number, i: number): SignedInUser => (conversation === 1 ? [a, b] : [a, b, c])[i % (conversation === 1 ? 2 : 3)]!;

  beforeAll(async () => {
    db = await createTestDatabase();
    s = await startTestServer({ database: db, env: { ...COMMON, ...ON_A } });
    [a, b, c] = (await Promise.all([signIn(s.baseUrl), signIn(s.baseUrl), signIn(s.baseUrl)])) as [SignedInUser, SignedInUser, SignedInUser];
    conversations = [await group(a, [b, c], 'r1'), await group(b, [a], 'r2'), await group(c, [a, b], 'r3')];
    const jobs = Array.from({ length: 90 }, (_, i) => ({ conversationId: conversations[i % 3]!, sender: memberOf(i % 3, i), content: text() }));
    await inParallel(jobs, 8, async (job) => {
      const m = await sendAs(s, job.sender, job.conversationId, job.content);
      live.set(m.id, { content: job.content, conversationId: job.conversationId, sender: job.sender });
      oldIds.add(m.id);
    });
  }, 300_000);

  afterAll(async () => {
    await s?.close();
    await db?.drop();
  });

  it('under key A: indexed under A, found', async () => {
    expect(await stateByFingerprint(s.pool)).toEqual({ [FP_A]: live.size });
    await expectTokensUnder(s.pool, live, KEY_A_B64);
    await expectExact(s, a, live, QUERIES, all());
  });

  it('server on key B (A kept for decryption): old messages still found, new ones (indexed under B) too, edits move to B', async () => {
    await s.close();
    s = await startTestServer({ database: db, env: { ...COMMON, ...ON_B_WITH_A } });
    await expectExact(s, a, live, QUERIES, all());
    for (let i = 0; i < 15; i++) {
      const conversationId = conversations[i % 3]!;
      const sender = memberOf(i % 3, i);
      const content = text('fresh onb');
      const m = await sendAs(s, sender, conversationId, content);
      live.set(m.id, { content, conversationId, sender });
    }
    // Edit two old messages and delete one.
    const old = [...oldIds];
    for (const id of old.slice(0, 2)) {
      const m = live.get(id)!;
      const content = `${text()} changed`;
      expect((await apiClient(s.baseUrl, m.sender.token).patch(`/api/v1/messages/${id}`, { content })).status).toBe(200);
      m.content = content;
      oldIds.delete(id);
    }
    const gone = old[2]!;
    expect((await apiClient(s.baseUrl, live.get(gone)!.sender.token).delete(`/api/v1/messages/${gone}`)).status).toBe(200);
    live.delete(gone);
    oldIds.delete(gone);

    await expectExact(s, a, live, QUERIES, all());
    await expectExact(s, b, live, QUERIES, new Set(conversations));
    expect(await searchIds(s, c, 'fresh onb')).toEqual(bruteForce(live, 'fresh onb', new Set([conversations[0]!, conversations[2]!])));
    expect(await stateByFingerprint(s.pool)).toEqual({ [FP_A]: oldIds.size, [FP_B]: live.size - oldIds.size });
    // The new and edited messages carry tokens under B.
    const underB = new Map([...live].filter(([id]) => !oldIds.has(id)));
    const { rows } = await s.pool.query<{ message_id: string; token: Buffer }>('SELECT message_id, token FROM message_search_tokens WHERE message_id = ANY($1::uuid[])', [[...underB.keys()]]);
    for (const [id, m] of underB) {
      const want = searchWords(m.content).map((w) => handToken(KEY_B_B64, m.conversationId, w)).sort();
      expect(rows.filter((r) => r.message_id === id).map((r) => r.token.toString('hex')).sort(), id).toEqual(want);
    }
  }, 120_000);

  it('part way (one conversation re-encrypted with rotate-conversation --reencrypt): still exact', async () => {
    const r = await runCli(db, ON_B_WITH_A, ['rotate-conversation', conversations[0]!, '--reencrypt']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const { rows } = await s.pool.query<{ fp: string; n: number }>(
      `SELECT s.master_key_fingerprint AS fp, count(*)::int AS n FROM message_search_state s JOIN messages m ON m.id = s.message_id WHERE m.conversation_id = $1 GROUP BY 1`,
      [conversations[0]],
    );
    expect(rows).toEqual([{ fp: FP_B, n: [...live.values()].filter((m) => m.conversationId === conversations[0]).length }]);
    const fps = await stateByFingerprint(s.pool);
    expect(fps[FP_A]).toBeGreaterThan(0);
    await expectExact(s, a, live, QUERIES, all());
  }, 120_000);

  it('during rotate-master: every search answered while it runs is exact; afterwards message_search_state is all fingerprint(B)', async () => {
    const job = startCli(db, ON_B_WITH_A, ['rotate-master']);
    let exited: CliResult | undefined;
    void job.done.then((r) => (exited = r));
    let rounds = 0;
    while (!exited) {
      for (const q of QUERIES) {
        const got = await searchIds(s, a, q);
        expect(got, `query "${q}" while rotate-master runs`).toEqual(bruteForce(live, q, all()));
      }
      rounds++;
    }
    const result = await job.done;
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toMatch(/re-encrypted \d+ of \d+ messages/);
    expect(rounds).toBeGreaterThan(0);
    expect(await stateByFingerprint(s.pool)).toEqual({ [FP_B]: live.size });
    await expectTokensUnder(s.pool, live, KEY_B_B64);
    await expectExact(s, a, live, QUERIES, all());
  }, 300_000);

  it('a server with ONLY key B finds everything; verify reports 0 search index mismatches', async () => {
    await s.close();
    s = await startTestServer({ database: db, env: { ...COMMON, ...ONLY_B } });
    await expectExact(s, a, live, QUERIES, all());
    await expectExact(s, c, live, QUERIES, new Set([conversations[0]!, conversations[2]!]));
    const verify = await runCli(db, ONLY_B, ['verify']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    expect(verify.stdout).toContain(`checked ${live.size} messages, 0 failed, 0 search index mismatches`);
    expect(mismatchLines(verify.stdout)).toEqual([]);
  }, 120_000);

  it('a tampered token, a missing token and a missing state row: verify prints "search index mismatch: <id>" for each and exits 1; reindex --all repairs', async () => {
    const ids = [...live.keys()].sort();
    const [flipped, missing, unindexed] = [ids[5]!, ids[17]!, ids[29]!];
    // one row of tokens per message (message_search_index); the *_tokens/_state names are views over it
    await s.pool.query(
      `UPDATE message_search_index SET tokens[1] = set_byte(tokens[1], 0, (get_byte(tokens[1], 0) + 1) % 256) WHERE message_id = $1`,
      [flipped],
    );
    await s.pool.query('UPDATE message_search_index SET tokens = tokens[2:] WHERE message_id = $1', [missing]);
    await s.pool.query('DELETE FROM message_search_index WHERE message_id = $1', [unindexed]);

    const verify = await runCli(db, ONLY_B, ['verify']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(1);
    expect(mismatchLines(verify.stdout)).toEqual([flipped, missing, unindexed].sort());
    expect(verify.stdout).toContain(`checked ${live.size} messages, 0 failed, 3 search index mismatches`);
    expect(verify.stdout).not.toMatch(/integrity failure/);

    // reindex (no option) picks up the message without state; --all rebuilds the rest.
    const partial = await runCli(db, ONLY_B, ['reindex']);
    expect(partial.code, partial.stdout + partial.stderr).toBe(0);
    expect(partial.stdout).toContain('indexed 1 of 1 messages');
    const full = await runCli(db, ONLY_B, ['reindex', '--all']);
    expect(full.code, full.stdout + full.stderr).toBe(0);
    await expectTokensUnder(s.pool, live, KEY_B_B64);
    const again = await runCli(db, ONLY_B, ['verify']);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(mismatchLines(again.stdout)).toEqual([]);
    await expectExact(s, a, live, QUERIES, all());
  }, 300_000);
});
