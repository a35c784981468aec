// SOTALK_PROCESSES: N server processes on one port under a supervisor (the real `sotalk` binary).
// The kernel spreads connections over the processes, so the tests make many fresh connections
// and check what each process reports (metrics carry a `process` label).
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { availableParallelism } from 'node:os';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sotalk } from '../helpers/cli.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { TEST_MASTER_KEY_B64, signIn } from '../helpers/server.js';
import { openSocket } from '../helpers/socket.js';
import { spawnServer, type Spawned } from '../helpers/spawned-server.js';

const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

let db: TestDatabase;
let env: Record<string, string>;
beforeAll(async () => {
  db = await createTestDatabase();
  cleanups.push(() => db.drop());
  const dataDir = mkdtempSync(join(tmpdir(), 'sotalk-procs-'));
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  // CRYPTO_POOL_SIZE unset: the supervisor shares the cores out
  env = { DATABASE_URL: db.url, REDIS_URL, ENCRYPTION_MASTER_KEY: TEST_MASTER_KEY_B64, SOTALK_DATA_DIR: dataDir, LOG_FORMAT: 'json', CRYPTO_POOL_SIZE: '' };
});

/** A TCP port that was free a moment ago. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Whether anything accepts connections on the port. */
const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function until(what: string, check: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`not within 30 s: ${what}`);
}

/** The supervisor's direct children (the server processes). */
const childPids = (pid: number) =>
  execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' }).split('\n').map(Number).filter((p) => p > 0);

interface Supervised {
  supervisor: Spawned;
  port: number;
  /** The `sotalk listening` records of the server processes. */
  started: Record<string, unknown>[];
  children: number[];
}

/** `sotalk serve` with SOTALK_PROCESSES=n on a fixed port; resolves once every process listens. */
async function supervised(n: number, extra: Record<string, string> = {}): Promise<Supervised> {
  const port = await freePort();
  const started: Record<string, unknown>[] = [];
  let allUp: () => void;
  const up = new Promise<void>((resolve) => (allUp = resolve));
  const onLine = (line: string) => {
    try {
      const rec = JSON.parse(line);
      if (rec.msg === 'sotalk listening' && started.push(rec) === n) allUp();
    } catch {
      /* not JSON */
    }
  };
  const supervisor = await spawnServer({ ...env, PORT: String(port), SOTALK_PROCESSES: String(n), ...extra }, { onLine });
  cleanups.push(() => supervisor.stop());
  await up;
  return { supervisor, port, started, children: childPids(supervisor.child.pid!) };
}

/** GET over a fresh connection (no keep-alive): each one may land on another process. */
function freshRequest(port: number, method: string, path: string, token?: string, body?: unknown): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        agent: false,
        headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(data ? { 'content-type': 'application/json' } : {}) },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (s: string) => (text += s));
        res.on('end', () => resolve({ status: res.statusCode!, text }));
      },
    );
    req.once('error', reject);
    req.end(data);
  });
}

/** Scrapes /metrics over fresh connections until every process answered once; by process label. */
async function scrapeEach(port: number, n: number): Promise<Map<string, string>> {
  const byProcess = new Map<string, string>();
  for (let i = 0; i < 400 && byProcess.size < n; i++) {
    const { text } = await freshRequest(port, 'GET', '/metrics');
    const label = /^sotalk_crypto_pool_size\{process="(\d+)"\}/m.exec(text)?.[1];
    expect(label, 'every series carries the process label').toBeDefined();
    byProcess.set(label!, text);
  }
  expect([...byProcess.keys()].sort()).toEqual(Array.from({ length: n }, (_, i) => String(i)));
  return byProcess;
}

const sample = (text: string, name: string) => Number(new RegExp(`^${name}\\{process="\\d+"\\} (\\S+)$`, 'm').exec(text)?.[1]);

describe('SOTALK_PROCESSES=2', () => {
  it('two processes serve one port, each labelled in metrics, with the crypto pool shared out; an event sent through one reaches a socket on the other', async () => {
    const { port, started } = await supervised(2);
    expect(started.map((r) => r.process).sort()).toEqual([0, 1]);
    expect(new Set(started.map((r) => r.port))).toEqual(new Set([port]));
    // cores shared out: each process gets floor(cores / 2) − 1 workers, so the host is not over-subscribed
    const perProcess = Math.max(0, Math.floor(availableParallelism() / 2) - 1);
    expect(started.map((r) => r.pool)).toEqual([perProcess, perProcess]);

    const before = await scrapeEach(port, 2);
    for (const text of before.values()) expect(sample(text, 'sotalk_crypto_pool_size')).toBe(perProcess);

    // Bob's socket is on one process; Alice's sends arrive on both (fresh connections): every one reaches him
    const base = `http://127.0.0.1:${port}`;
    const [alice, bob] = await Promise.all([signIn(base), signIn(base)]);
    const created = await freshRequest(port, 'POST', '/api/v1/conversations', alice.token, { type: 'direct', member_ids: [bob.user.id] });
    expect(created.status, created.text).toBeLessThan(300);
    const conversationId = JSON.parse(created.text).conversation.id;
    const socket = await openSocket(base, bob.token);
    cleanups.push(() => socket.close());
    for (let i = 0; i < 30; i++) {
      const r = await freshRequest(port, 'POST', '/api/v1/messages', alice.token, { conversation_id: conversationId, content: `m${i}` });
      expect(r.status, r.text).toBe(201);
    }
    for (let i = 0; i < 30; i++) await socket.next((f) => f.type === 'new_message' && f.message?.content === `m${i}`, 10_000);
    // …and the sends were really handled by both processes
    const after = await scrapeEach(port, 2);
    for (const [p, text] of after) expect(sample(text, 'sotalk_messages_encrypted_total'), `process ${p} encrypted some`).toBeGreaterThan(0);
  }, 120_000);

  it('SIGTERM to the supervisor stops every process (exit 0, nothing listens)', async () => {
    const { supervisor, port, children } = await supervised(2);
    expect(children).toHaveLength(2);
    supervisor.child.kill('SIGTERM');
    expect(await supervisor.exited, supervisor.lines.join('\n')).toEqual({ code: 0, signal: null });
    for (const pid of children) expect(alive(pid), `process ${pid}`).toBe(false);
    await until('the port is free', async () => !(await listening(port)));
  }, 90_000);

  it('a process that dies is restarted under the same number; the other serves the port meanwhile', async () => {
    const { supervisor, port, started, children } = await supervised(2);
    // its number, as the supervisor gave it (Linux: the process's environment)
    const index = Number(/(?:^|\0)SOTALK_PROCESS_INDEX=(\d+)\0/.exec(readFileSync(`/proc/${children[0]}/environ`, 'utf8'))![1]);
    process.kill(children[0]!, 'SIGKILL');
    await until('the process is gone', () => !alive(children[0]!));
    // until it is back, the other one takes every connection
    for (let i = 0; i < 10 && started.length === 2; i++) expect((await freshRequest(port, 'GET', '/healthz')).status).toBe(200);
    await until('the process is restarted', () => started.length === 3);
    expect(supervisor.lines.some((l) => /"msg":"server process exited; restarting it"/.test(l))).toBe(true);
    expect(started[2]!.process).toBe(index);
    const now = childPids(supervisor.child.pid!);
    expect(now).toHaveLength(2);
    expect(now).not.toContain(children[0]);
    expect(now).toContain(children[1]);
    expect((await freshRequest(port, 'GET', '/healthz')).status).toBe(200);
    await scrapeEach(port, 2);
  }, 90_000);

  it('the supervisor killed with SIGKILL: its processes stop by themselves, no orphan keeps the port', async () => {
    const { supervisor, port, children } = await supervised(2);
    supervisor.child.kill('SIGKILL');
    await supervisor.exited;
    await until('the server processes have exited', () => children.every((pid) => !alive(pid)));
    await until('the port is free', async () => !(await listening(port)));
  }, 90_000);

  it('never shares the port with an unrelated server: a second server or supervisor on it fails with "address in use" in one line', async () => {
    const { port } = await supervised(2);
    for (const processes of ['1', '2']) {
      const second = await sotalk(['serve'], { ...env, PORT: String(port), HOST: '127.0.0.1', SOTALK_PROCESSES: processes, LOG_LEVEL: 'warn' });
      expect(second.code, second.stderr).toBe(1);
      expect(second.stderr.trim().split('\n').at(-1), `SOTALK_PROCESSES=${processes}`).toBe(`sotalk: cannot listen on 127.0.0.1:${port}: address in use (or not available)`);
    }
    // the other way round: a lone server holds the port, a supervisor does not join it
    const port2 = await freePort();
    const lone = await spawnServer({ ...env, PORT: String(port2) });
    cleanups.push(() => lone.stop());
    const joining = await sotalk(['serve'], { ...env, PORT: String(port2), HOST: '127.0.0.1', SOTALK_PROCESSES: '2', LOG_LEVEL: 'warn' });
    expect(joining.code, joining.stderr).toBe(1);
    expect(joining.stderr.trim().split('\n').at(-1)).toBe(`sotalk: cannot listen on 127.0.0.1:${port2}: address in use (or not available)`);
  }, 90_000);

  it('needs REDIS_URL (cross-process events), DATABASE_URL and a fixed PORT: one-line configuration errors', async () => {
    for (const [extra, message] of [
      [{ REDIS_URL: '' }, 'SOTALK_PROCESSES: above 1 needs REDIS_URL (events reach sockets on the other processes through Redis)'],
      [{ DATABASE_URL: '' }, 'SOTALK_PROCESSES: above 1 needs DATABASE_URL (the embedded database belongs to one process)'],
      [{ PORT: '0' }, 'SOTALK_PROCESSES: above 1 needs a fixed PORT (the processes share it)'],
    ] as const) {
      const r = await sotalk(['serve'], { ...env, PORT: '8080', SOTALK_PROCESSES: '2', ...extra });
      expect(r.code, message).toBe(1);
      expect(r.stderr.trim().split('\n').filter((l) => !l.startsWith('database: '))).toEqual([`sotalk: configuration error: ${message}`]);
    }
  }, 60_000);
});
