// The guards of every `sotalk` command, driving the real binary: --help does nothing else, a
// wrong flag or a stray argument is exit 2 before anything is opened, every database command
// names its database (and refuses the embedded one in production), expected failures are one
// line, and `sotalk instances` shows what the running servers hold. One database and one
// in-process server for the whole file.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { keyFingerprint } from '../../src/crypto/kdf.js';
import { sotalk, type CliResult } from '../helpers/cli.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { signIn, startTestServer, type TestServer } from '../helpers/server.js';
import { spawnServer } from '../helpers/spawned-server.js';

// Each test runs a dozen or more short child processes: generous on a loaded machine.
vi.setConfig({ testTimeout: 120_000 });

const KEY_A = randomBytes(32).toString('base64');
const KEY_B = randomBytes(32).toString('base64');
const fp = (b64: string) => keyFingerprint(Buffer.from(b64, 'base64'));
const UNKNOWN = '0190f0aa-0000-7000-8000-00000000abcd';

/** Every command with a valid line for it, its flags included. */
const LINES: Record<string, string[]> = {
  serve: [],
  keygen: [],
  fingerprint: [],
  migrate: ['down', '--yes'],
  'rotate-conversation': [UNKNOWN, '--reencrypt'],
  instances: [],
  'rotate-master': ['--force'],
  verify: [],
  export: [UNKNOWN],
  reindex: ['--conversation', UNKNOWN, '--all'],
};
const COMMANDS = Object.keys(LINES);
const DATABASE_COMMANDS = COMMANDS.filter((c) => !['keygen', 'fingerprint'].includes(c));
/** The positionals alone (a stray argument goes after them). */
const positionals = (command: string) => LINES[command]!.filter((a, i, all) => !a.startsWith('--') && !all[i - 1]?.startsWith('--conversation'));

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'sotalk-cli-guards-'));
  dirs.push(dir);
  return dir;
}

/**
 * Production without a database or a key: any command that got as far as reading its
 * configuration would fail loudly, so an empty stderr shows it did nothing.
 */
const NOTHING = () => ({ NODE_ENV: 'production', DATABASE_URL: '', ENCRYPTION_MASTER_KEY: '', SOTALK_DATA_DIR: tempDir() });

/** Runs `lines` a few at a time (the machine is shared); results in order. */
async function runAll(lines: string[][], env: Record<string, string>): Promise<CliResult[]> {
  const results: CliResult[] = [];
  for (let i = 0; i < lines.length; i += 6) results.push(...(await Promise.all(lines.slice(i, i + 6).map((l) => sotalk(l, env)))));
  return results;
}

/** stderr without the context lines a database command prints first. */
const errorLines = (stderr: string) => stderr.trim().split('\n').filter((l) => !/^(database|master keys): /.test(l));

let db: TestDatabase;
let server: TestServer;
let env: Record<string, string>;
let conversation: string;
beforeAll(async () => {
  db = await createTestDatabase();
  // The running instance holds A (active) and B, like phase 1 of a rotation to B.
  server = await startTestServer({ database: db, env: { ENCRYPTION_MASTER_KEY: KEY_A, ENCRYPTION_OLD_MASTER_KEYS: KEY_B } });
  const [a, b] = await Promise.all([signIn(server.baseUrl), signIn(server.baseUrl)]);
  const sent = await a.api.post('/api/v1/messages', { recipient_id: b.user.id, content: 'hello' });
  conversation = sent.body.message.conversation_id;
  env = { DATABASE_URL: db.url, ENCRYPTION_MASTER_KEY: KEY_A, ENCRYPTION_OLD_MASTER_KEYS: KEY_B, SOTALK_DATA_DIR: tempDir() };
});

afterAll(async () => {
  await server?.close();
  await db?.drop();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe('--help and -h', () => {
  it('anywhere on any command line, even next to a wrong flag: the help on stdout, nothing else, exit 0', async () => {
    const lines = [
      ...COMMANDS.map((c) => [c, ...LINES[c]!, '--bogus', '-h']),
      ['migrate', '--help', 'down', '--yes'],
      ['rotate-master', '-h', '--force'],
      ['serve', '--help'],
    ];
    const results = await runAll(lines, NOTHING());
    results.forEach((r, i) => {
      const line = lines[i]!.join(' ');
      expect(r.code, line).toBe(0);
      expect(r.stdout, line).toMatch(new RegExp(`^usage: sotalk ${lines[i]![0]}\\b`));
      expect(r.stderr, line).toBe('');
    });
    // after `--` it is an argument like any other
    expect(await sotalk(['export', '--', '--help'], NOTHING())).toMatchObject({ code: 2, stderr: expect.stringContaining('conversation_id must be a UUID') });
  });

  it('changes nothing: no migration reverted, no message re-encrypted, no key version made, nothing decrypted', async () => {
    const state = async () => ({
      migrations: (await server.pool.query('SELECT version FROM schema_migrations ORDER BY version')).rows,
      keyVersion: (await server.pool.query('SELECT current_key_version AS v FROM conversations WHERE id = $1', [conversation])).rows[0].v,
      fingerprints: (await server.pool.query('SELECT DISTINCT master_key_fingerprint AS f FROM conversation_keys')).rows.map((r) => r.f),
      audited: (await server.pool.query('SELECT count(*)::int AS n FROM decryption_audit')).rows[0].n,
    });
    const before = await state();
    expect(before.fingerprints).toEqual([fp(KEY_A)]);
    const phase2 = { ...env, ENCRYPTION_MASTER_KEY: KEY_B, ENCRYPTION_OLD_MASTER_KEYS: KEY_A }; // the CLI's side of phase 2
    const results = await runAll(
      [
        ['migrate', 'down', '--yes', '--help'],
        ['rotate-conversation', conversation, '--reencrypt', '-h'],
        ['export', conversation, '--help'],
        ['reindex', '--all', '-h'],
      ],
      env,
    );
    results.push(await sotalk(['rotate-master', '--force', '-h'], phase2));
    for (const r of results) expect(r).toMatchObject({ code: 0, stderr: '', stdout: expect.stringMatching(/^usage: sotalk /) });
    expect(await state()).toEqual(before);

    // The same line without -h does the work: the check above can fail.
    const ran = await sotalk(['rotate-master', '--force'], phase2);
    expect(ran.code, ran.stderr).toBe(0);
    expect(ran.stderr.split('\n')[0]).toBe(`database: postgres 127.0.0.1:5432/${db.name}`);
    expect(ran.stdout).toContain('re-encrypted 1 of 1 messages');
    expect((await state()).fingerprints).toContain(fp(KEY_B));
  });
});

describe('unknown flags and stray arguments', () => {
  it('every command: an unknown flag is exit 2 with its usage, before its configuration is read', async () => {
    const results = await runAll(
      COMMANDS.map((c) => [c, ...LINES[c]!, '--bogus']),
      NOTHING(),
    );
    results.forEach((r, i) => {
      const c = COMMANDS[i]!;
      expect(r.code, c).toBe(2);
      expect(r.stdout, c).toBe('');
      expect(r.stderr.split('\n'), c).toEqual([`sotalk ${c}: Unknown option '--bogus'`, expect.stringMatching(new RegExp(`^usage: sotalk ${c}\\b`)), '']);
    });
  });

  it('every command: a stray argument is exit 2 with its usage', async () => {
    const results = await runAll(
      COMMANDS.map((c) => [c, ...positionals(c), 'extra']),
      NOTHING(),
    );
    results.forEach((r, i) => {
      const c = COMMANDS[i]!;
      expect(r.code, c).toBe(2);
      expect(r.stderr.split('\n'), c).toEqual([`sotalk ${c}: unexpected argument "extra"`, expect.stringMatching(new RegExp(`^usage: sotalk ${c}\\b`)), '']);
    });
  });

  it('an unknown command or top-level option is exit 2 with the list of commands', async () => {
    for (const line of [['frobnicate'], ['--bogus'], ['help', 'frobnicate'], ['help', 'serve', 'extra']]) {
      const r = await sotalk(line, NOTHING());
      expect(r.code, line.join(' ')).toBe(2);
      expect(r.stderr, line.join(' ')).toMatch(/^sotalk: (unknown (command|option)|unexpected argument) .*\nusage: sotalk \[command\]/);
      expect(r.stderr, line.join(' ')).toContain('  instances ');
    }
  });

  it('a malformed id or action is a usage error too, before the database is opened', async () => {
    const lines = [
      ['rotate-conversation', 'abc'],
      ['export', '42'],
      ['reindex', '--conversation', 'nope'],
      ['migrate', 'sideways'],
      ['reindex', '--conversation'],
    ];
    const results = await runAll(lines, NOTHING());
    expect(results.map((r) => [r.code, r.stderr.split('\n')[0]])).toEqual([
      [2, 'sotalk rotate-conversation: conversation_id must be a UUID'],
      [2, 'sotalk export: conversation_id must be a UUID'],
      [2, 'sotalk reindex: --conversation must be a UUID'],
      [2, 'sotalk migrate: unknown action "sideways" (up, down or status)'],
      [2, "sotalk reindex: Option '--conversation <value>' argument missing"],
    ]);
  });
});

describe('the database a command uses', () => {
  it('NODE_ENV=production without DATABASE_URL: every database command refuses in one line; the others still run', async () => {
    const prod = { ...NOTHING(), ENCRYPTION_MASTER_KEY: KEY_A };
    const results = await runAll(
      DATABASE_COMMANDS.map((c) => [c, ...LINES[c]!]),
      prod,
    );
    results.forEach((r, i) => {
      expect(r.code, DATABASE_COMMANDS[i]).toBe(1);
      expect(r.stderr, DATABASE_COMMANDS[i]).toBe(
        'sotalk: configuration error: DATABASE_URL: is required when NODE_ENV=production (the embedded database is for development)\n',
      );
    });
    expect(await sotalk(['fingerprint'], prod)).toMatchObject({ code: 0, stdout: `active ${fp(KEY_A)}\n` });
    expect((await sotalk(['keygen'], prod)).code).toBe(0);
  });

  it('every database command names it first; an unknown conversation is one line, exit 1', async () => {
    const lines = [['migrate', 'status'], ['instances'], ['verify'], ['export', UNKNOWN], ['rotate-conversation', UNKNOWN], ['reindex', '--conversation', UNKNOWN]];
    const results = await runAll(lines, env);
    results.forEach((r, i) => {
      const line = lines[i]!.join(' ');
      expect(r.stderr.split('\n')[0], line).toBe(`database: postgres 127.0.0.1:5432/${db.name}`);
      if (i < 3) expect(r.code, `${line}: ${r.stderr}`).toBe(0);
      else expect([r.code, errorLines(r.stderr)], line).toEqual([1, [`sotalk: conversation ${UNKNOWN} not found`]]);
    });
  });

  it('a job on a database behind the code says which migrations it applied first', async () => {
    const fresh = await createTestDatabase();
    try {
      const r = await sotalk(['verify'], { ...env, DATABASE_URL: fresh.url });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/^migrations applied first: 1, 2, [\d, ]+$/m);
      expect((await sotalk(['verify'], { ...env, DATABASE_URL: fresh.url })).stderr).not.toContain('migrations applied');
    } finally {
      await fresh.drop();
    }
  });

  it('a database that is down: every command names it and fails in one line', async () => {
    const down = { ...env, DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/nothing', DATABASE_CONNECT_TIMEOUT_S: '0' };
    const lines = DATABASE_COMMANDS.map((c) => [c, ...LINES[c]!]);
    const results = await runAll(lines, down);
    results.forEach((r, i) => {
      const line = lines[i]!.join(' ');
      expect(r.code, line).toBe(1);
      expect(r.stderr.split('\n')[0], line).toBe('database: postgres 127.0.0.1:1/nothing');
      expect(errorLines(r.stderr), line).toEqual(['sotalk: database postgres 127.0.0.1:1/nothing unreachable (ECONNREFUSED) after 1 attempts']);
    });
  });
});

describe('master keys', () => {
  it('without ENCRYPTION_MASTER_KEY, only the server and migrate make a development key; the others say it is missing', async () => {
    const dir = tempDir();
    const noKey = { DATABASE_URL: db.url, ENCRYPTION_MASTER_KEY: '', SOTALK_DATA_DIR: dir };
    const results = await runAll([['fingerprint'], ['verify'], ['instances'], ['rotate-master']], noKey);
    for (const r of results) {
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(
        `sotalk: configuration error: ENCRYPTION_MASTER_KEY: is unset and there is no development key at ${join(dir, 'master.key')} (set it, or SOTALK_DATA_DIR)\n`,
      );
    }
    expect(existsSync(join(dir, 'master.key'))).toBe(false);
    // migrate creates it (a fresh development setup), and from then on the others read it
    expect((await sotalk(['migrate', 'status'], noKey)).code).toBe(0);
    expect(existsSync(join(dir, 'master.key'))).toBe(true);
    expect(await sotalk(['fingerprint'], noKey)).toMatchObject({ code: 0, stdout: expect.stringMatching(/^active [0-9a-f]{16}\n$/) });
  });

  it('verify names each key it holds, active or old, and whether it is still needed', async () => {
    const r = await sotalk(['verify'], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`master keys: active ${fp(KEY_A)}, old ${fp(KEY_B)}\n`);
    // the earlier rotate-master moved the message to B
    expect(r.stdout).toContain(`master key ${fp(KEY_A)}: not needed (active)\n`);
    expect(r.stdout).toContain(`master key ${fp(KEY_B)}: needed (old)\n`);
  });
});

describe('sotalk instances', () => {
  it('lists each live instance with its keys, and how many hold and use this environment\'s active key', async () => {
    const KEY_C = randomBytes(32).toString('base64');
    const [asA, asB, asC] = await Promise.all([
      sotalk(['instances'], env),
      sotalk(['instances'], { ...env, ENCRYPTION_MASTER_KEY: KEY_B, ENCRYPTION_OLD_MASTER_KEYS: KEY_A }),
      sotalk(['instances'], { ...env, ENCRYPTION_MASTER_KEY: KEY_C }),
    ]);
    const rows = asA.stdout.trim().split('\n');
    expect(rows[0]).toMatch(/^host +pid +started +seen +active key +old keys$/);
    expect(rows[1]).toMatch(new RegExp(`^\\S+ +${process.pid} +\\S+Z +\\d+ s ago +${fp(KEY_A)} +${fp(KEY_B)}$`));
    expect(rows[2]).toBe(`active key ${fp(KEY_A)}: held by 1 of 1 live instance(s), active on 1`);
    // phase 1 of a rotation to B is done (held everywhere), phase 2 is not (active nowhere)
    expect(asB.stdout.trim().split('\n').at(-1)).toBe(`active key ${fp(KEY_B)}: held by 1 of 1 live instance(s), active on 0`);
    expect(asC.stdout.trim().split('\n').at(-1)).toBe(`active key ${fp(KEY_C)}: held by 0 of 1 live instance(s), active on 0`);
  });

  it('a server that cannot bind never registers; one stopped by SIGTERM removes its row', async () => {
    const pids = async () => (await server.pool.query<{ pid: number }>('SELECT pid FROM instances ORDER BY pid')).rows.map((r) => r.pid);
    const taken = await sotalk(['serve'], { ...env, HOST: '127.0.0.1', PORT: String(server.port) });
    expect(taken.code).toBe(1);
    expect(taken.stderr.trim().split('\n').at(-1)).toBe(`sotalk: cannot listen on 127.0.0.1:${server.port}: address in use (or not available)`);
    expect(await pids()).toEqual([process.pid]);

    const other = await spawnServer({ ...env, LOG_FORMAT: 'json' });
    const pid = other.child.pid!;
    expect(await pids()).toEqual([process.pid, pid].sort((x, y) => x - y));
    await other.stop();
    expect(await other.exited).toEqual({ code: 0, signal: null });
    expect(await pids()).toEqual([process.pid]);
    expect((await sotalk(['instances'], env)).stdout).not.toContain(` ${pid} `);
  });

  it('an instance not seen for over 30 s is listed apart, and rotate-master notes one that lacks the key', async () => {
    const KEY_C = randomBytes(32).toString('base64');
    await server.pool.query(
      `INSERT INTO instances (id, host, pid, started_at, last_seen, active_fingerprint, key_fingerprints)
       VALUES (gen_random_uuid(), 'gone-host', 999999, now() - interval '1 day', now() - interval '300 seconds', $1, $2)`,
      [fp(KEY_C), [fp(KEY_C)]],
    );
    try {
      const listed = await sotalk(['instances'], env);
      expect(listed.code, listed.stderr).toBe(0);
      const lines = listed.stdout.trim().split('\n');
      expect(lines.slice(-3)).toEqual([
        `active key ${fp(KEY_A)}: held by 1 of 1 live instance(s), active on 1`,
        'not seen for over 30 s (stopped without removing its row, or cut off from the database):',
        expect.stringMatching(new RegExp(`^  gone-host pid 999999 \\(last seen 30\\d s ago, active key ${fp(KEY_C)}\\), does not hold ${fp(KEY_A)}$`)),
      ]);
      const rotated = await sotalk(['rotate-master'], env);
      expect(rotated.code, rotated.stderr).toBe(0);
      expect(rotated.stderr).toContain(`rotate-master: note: gone-host pid 999999 (last seen`);
      expect(rotated.stderr).toContain(`does not hold ${fp(KEY_A)}; make sure it is gone, not only cut off from the database`);
    } finally {
      await server.pool.query("DELETE FROM instances WHERE host = 'gone-host'");
    }
  });
});
