// A throwaway PostgreSQL cluster for tests that must stop or restart Postgres (so the shared server
// on 127.0.0.1:5432 is never disturbed). Same approach as test/run.mjs: initdb + postgres from the
// highest installed version, run as the `postgres` user (spawn uid/gid) when we are root, trust
// auth on 127.0.0.1, fsync off, in a temp dir. Unlike run.mjs the data directory survives stop(),
// so start() brings the same cluster (same data, same port) back.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { accessSync, chownSync, closeSync, constants as fsConstants, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

export interface ThrowawayPostgres {
  /** Admin URL (database `postgres`, user `postgres`, trust). */
  url: string;
  port: number;
  dataDir: string;
  /** Fast shutdown (SIGINT: disconnects clients, no waiting); resolves once the server has exited. */
  stop(): Promise<void>;
  /** Immediate shutdown (SIGQUIT: like a crash, recovery on the next start). */
  kill(): Promise<void>;
  /** Starts the cluster again on the same port with the same data; resolves when it answers SELECT 1. */
  start(): Promise<void>;
  restart(): Promise<void>;
  /** A new empty database on this cluster; returns its URL. */
  createDatabase(name?: string): Promise<string>;
  /** Stops the server and removes the temp dir. */
  destroy(): Promise<void>;
  /** The last lines of the server log (for failure messages). */
  logTail(lines?: number): string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const IS_ROOT = typeof process.getuid === 'function' && process.getuid() === 0;

function isExecutable(file: string): boolean {
  try {
    accessSync(file, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** initdb + postgres of the highest version under /usr/lib/postgresql/<v>/bin (Debian), else PATH. */
export function findPostgresBin(): { initdb: string; postgres: string } {
  const candidates: string[] = [];
  try {
    const versions = readdirSync('/usr/lib/postgresql').filter((v) => /^\d/.test(v));
    versions.sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a));
    for (const v of versions) candidates.push(join('/usr/lib/postgresql', v, 'bin'));
  } catch {
    /* not Debian */
  }
  candidates.push(...(process.env.PATH ?? '').split(':').filter(Boolean));
  for (const dir of candidates) {
    const initdb = join(dir, 'initdb');
    const postgres = join(dir, 'postgres');
    if (isExecutable(initdb) && isExecutable(postgres)) return { initdb, postgres };
  }
  throw new Error('no PostgreSQL server binaries (initdb, postgres) found');
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function lookupUser(name: string): { uid: number; gid: number } | undefined {
  try {
    const uid = Number(execFileSync('id', ['-u', name], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim());
    const gid = Number(execFileSync('id', ['-g', name], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim());
    if (Number.isInteger(uid) && uid !== 0) return { uid, gid };
  } catch {
    /* no such user */
  }
  return undefined;
}

async function probe(url: string, timeoutMs = 1000): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

const live = new Set<ChildProcess>();
let exitHook = false;
function installExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  // Last resort: never leave a postgres behind when the test process goes away.
  process.on('exit', () => {
    for (const c of live) {
      try {
        c.kill('SIGQUIT');
      } catch {
        /* gone */
      }
    }
  });
}

export async function startPostgres(options: { startTimeoutMs?: number } = {}): Promise<ThrowawayPostgres> {
  installExitHook();
  const startTimeoutMs = options.startTimeoutMs ?? 60_000;
  const bins = findPostgresBin();
  const runAs = IS_ROOT ? (lookupUser('postgres') ?? lookupUser('nobody')) : undefined;
  if (IS_ROOT && !runAs) throw new Error('running as root without a "postgres" or "nobody" user to run postgres as');
  const ids = runAs ? { uid: runAs.uid, gid: runAs.gid } : {};
  // Short path for the unix socket; /tmp is traversable by the unprivileged user.
  const base = IS_ROOT && existsSync('/tmp') ? '/tmp' : tmpdir();
  const dir = mkdtempSync(join(base, 'sotalk-pgt-'));
  const dataDir = join(dir, 'data');
  const logFile = join(dir, 'postgres.log');
  closeSync(openSync(logFile, 'a'));
  if (runAs) {
    chownSync(dir, runAs.uid, runAs.gid);
    chownSync(logFile, runAs.uid, runAs.gid);
  }
  const env: Record<string, string | undefined> = { ...process.env, LC_ALL: 'C', LANG: 'C', HOME: dir };
  for (const k of Object.keys(env)) if (k.startsWith('PG')) delete env[k];
  const logTail = (lines = 30) => {
    try {
      return readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  };

  try {
    await new Promise<void>((resolve, reject) => {
      const fd = openSync(logFile, 'a');
      const c = spawn(bins.initdb, ['-D', dataDir, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--no-sync'], {
        ...ids,
        env,
        cwd: dir,
        stdio: ['ignore', fd, fd],
      });
      closeSync(fd);
      c.once('error', reject);
      c.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`initdb exited ${code}:\n${logTail()}`))));
    });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }

  let child: ChildProcess | undefined;
  let port = 0;
  const url = () => `postgresql://postgres@127.0.0.1:${port}/postgres`;

  const launch = async (): Promise<void> => {
    const fd = openSync(logFile, 'a');
    const c = spawn(
      bins.postgres,
      [
        '-D', dataDir,
        '-p', String(port),
        '-c', 'listen_addresses=127.0.0.1',
        '-c', `unix_socket_directories=${dir}`,
        '-c', 'fsync=off',
        '-c', 'full_page_writes=off',
        '-c', 'max_connections=100',
      ],
      // Own process group: a Ctrl-C in the terminal must not take it down before teardown.
      { ...ids, env, cwd: dir, detached: true, stdio: ['ignore', fd, fd] },
    );
    closeSync(fd);
    child = c;
    live.add(c);
    c.once('exit', () => live.delete(c));
    let spawnError: Error | undefined;
    c.once('error', (err) => (spawnError = err));
    const deadline = Date.now() + startTimeoutMs;
    while (Date.now() < deadline) {
      if (spawnError) throw spawnError;
      if (c.exitCode !== null || c.signalCode !== null) throw new Error(`postgres exited early (${c.signalCode ?? c.exitCode}):\n${logTail()}`);
      if (await probe(url())) return;
      await sleep(100);
    }
    c.kill('SIGQUIT');
    throw new Error(`postgres on port ${port} not ready within ${startTimeoutMs} ms:\n${logTail()}`);
  };

  const shutdown = async (signal: NodeJS.Signals): Promise<void> => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    c.kill(signal);
    if (!(await waitForExit(c, 15_000))) {
      c.kill('SIGQUIT');
      if (!(await waitForExit(c, 5_000))) {
        c.kill('SIGKILL');
        await waitForExit(c, 5_000);
      }
    }
  };

  // The port may be taken between freePort() and bind: a few attempts.
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    port = await freePort();
    try {
      await launch();
      lastErr = undefined;
      break;
    } catch (err) {
      lastErr = err;
      await shutdown('SIGQUIT');
    }
  }
  if (lastErr) {
    rmSync(dir, { recursive: true, force: true });
    throw lastErr;
  }

  const start = async (): Promise<void> => {
    if (child && child.exitCode === null && child.signalCode === null) return;
    let err: unknown;
    // The old listen socket may linger for a moment: retry on the same port.
    for (let attempt = 0; attempt < 20; attempt++) {
      try {
        await launch();
        return;
      } catch (e) {
        err = e;
        await shutdown('SIGQUIT');
        await sleep(200);
      }
    }
    throw err;
  };

  return {
    get url() {
      return url();
    },
    port,
    dataDir,
    stop: () => shutdown('SIGINT'),
    kill: () => shutdown('SIGQUIT'),
    start,
    async restart() {
      await shutdown('SIGINT');
      await start();
    },
    async createDatabase(name = `sotalk_t_${Math.random().toString(16).slice(2, 14)}`) {
      const admin = new pg.Client({ connectionString: url() });
      await admin.connect();
      try {
        await admin.query(`CREATE DATABASE ${name}`);
      } finally {
        await admin.end();
      }
      return `postgresql://postgres@127.0.0.1:${port}/${name}`;
    },
    async destroy() {
      await shutdown('SIGINT');
      rmSync(dir, { recursive: true, force: true });
    },
    logTail,
  };
}
