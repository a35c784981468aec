#!/usr/bin/env node
// Test entry point (`npm test`). Plain JS so it runs before anything is compiled.
//
// 1. Finds a Postgres and a Redis for the tests:
//      Postgres: TEST_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/postgres
//      Redis:    REDIS_URL,         else redis://127.0.0.1:6379
//    Each one is probed for real (pg: SELECT 1; redis: PING).
// 2. If a default (not explicitly configured) server does not answer, starts a
//    throwaway one from the installed binaries on a free port, in a temp dir.
//    An explicitly configured URL that does not answer is an error.
// 3. Starts a throwaway 3-master Redis Cluster (redis-server --cluster-enabled yes on free ports,
//    joined with `redis-cli --cluster create`) unless REDIS_CLUSTER_URL names one
//    (redis+cluster://host:port,...). Without redis-server/redis-cli the cluster tests are skipped,
//    except under CI (CI=true), where not having the cluster is an error.
// 4. Runs `vitest run <args...>` with TEST_DATABASE_URL, REDIS_URL and REDIS_CLUSTER_URL set and
//    exits with its exit code. Throwaway servers are stopped and their temp
//    dirs deleted on exit, including on SIGINT/SIGTERM/SIGHUP.
//    Before that it compiles the server (`npm run build`, incremental): tests that run the
//    real `sotalk` binary then run the compiled dist/, as production does.
//
// The functions are exported so they can be exercised on their own; the
// entry-point logic only runs when this file is executed directly.

import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { accessSync, closeSync, constants as fsConstants, chownSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, realpathSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const DEFAULT_DATABASE_URL = 'postgresql://postgres@127.0.0.1:5432/postgres';
export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TAG = '[test/run]';
const PROBE_TIMEOUT_MS = 3000;
const START_TIMEOUT_MS = 60_000;
const IS_ROOT = typeof process.getuid === 'function' && process.getuid() === 0;

// ---------------------------------------------------------------- helpers

/** URL with any password replaced by ***, safe to print. */
export function maskUrl(url) {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return String(url).replace(/\/\/([^:/@]*):[^@/]*@/, '//$1:***@');
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function log(msg) {
  process.stderr.write(`${TAG} ${msg}\n`);
}

function errorText(err) {
  if (!err) return 'unknown error';
  if (err instanceof AggregateError && err.errors?.length) return err.errors.map(errorText).join('; ');
  return err.message || err.code || String(err);
}

async function loadDep(name) {
  try {
    const mod = await import(name);
    return mod.default ?? mod;
  } catch (err) {
    throw new Error(`cannot load "${name}" (${errorText(err)}); run \`npm ci\` first`, { cause: err });
  }
}

/** A TCP port that was free a moment ago (the OS picks it). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function isExecutable(file) {
  try {
    if (!statSync(file).isFile()) return false;
    accessSync(file, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function pathDirs() {
  return (process.env.PATH || '').split(path.delimiter).filter(Boolean);
}

/** First executable called `name` on PATH or in the extra dirs, else null. */
function which(name, extraDirs = []) {
  for (const dir of [...pathDirs(), ...extraDirs]) {
    const file = path.join(dir, name);
    if (isExecutable(file)) return file;
  }
  return null;
}

function versionKey(s) {
  return (s.match(/\d+/g) || []).map(Number);
}
function compareVersionsDesc(a, b) {
  const ka = versionKey(a);
  const kb = versionKey(b);
  for (let i = 0; i < Math.max(ka.length, kb.length); i++) {
    const d = (kb[i] ?? -1) - (ka[i] ?? -1);
    if (d) return d;
  }
  return 0;
}

/** Versioned install dirs like /usr/lib/postgresql/16/bin, highest version first. */
function versionedPgBinDirs() {
  const dirs = [];
  const scan = (parent, match, suffix) => {
    let entries;
    try {
      entries = readdirSync(parent).filter((e) => match.test(e));
    } catch {
      return;
    }
    entries.sort(compareVersionsDesc);
    for (const e of entries) dirs.push(path.join(parent, e, suffix));
  };
  scan('/usr/lib/postgresql', /^\d/, 'bin'); // Debian/Ubuntu
  scan('/usr', /^pgsql-\d/, 'bin'); // RHEL/Fedora (PGDG)
  scan('/opt/homebrew/opt', /^postgresql(@\d+)?$/, 'bin'); // macOS Homebrew (arm)
  scan('/usr/local/opt', /^postgresql(@\d+)?$/, 'bin'); // macOS Homebrew (intel)
  return dirs;
}

/**
 * initdb + postgres from one installation: PATH first (an explicit choice),
 * then versioned install dirs, highest version first. Symlinks are resolved so
 * that e.g. /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb pairs
 * with that installation's own `postgres`.
 */
export function findPostgresBinaries() {
  for (const dir of [...pathDirs(), ...versionedPgBinDirs()]) {
    const initdbLink = path.join(dir, 'initdb');
    if (!isExecutable(initdbLink)) continue;
    let realDir = dir;
    try {
      realDir = path.dirname(realpathSync(initdbLink));
    } catch {
      /* keep dir */
    }
    for (const d of [realDir, dir]) {
      const initdb = path.join(d, 'initdb');
      const postgres = path.join(d, 'postgres');
      if (isExecutable(initdb) && isExecutable(postgres)) return { initdb, postgres, dir: d };
    }
  }
  return null;
}

export function findRedisServer() {
  return which('redis-server', ['/usr/sbin', '/usr/local/sbin', '/usr/local/bin', '/opt/homebrew/bin']);
}

function lookupUser(name) {
  try {
    const uid = Number(execFileSync('id', ['-u', name], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim());
    const gid = Number(execFileSync('id', ['-g', name], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim());
    if (Number.isInteger(uid) && Number.isInteger(gid) && uid !== 0) return { name, uid, gid };
  } catch {
    /* no such user */
  }
  return null;
}

function tailFile(file, lines = 25) {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/**
 * Run a setup command (initdb) to completion; output goes to `logFile`.
 * Rejects on non-zero exit. While it runs it is tracked like a server, so a
 * signal stops it and deletes `tmpDir`.
 */
function runToCompletion(cmd, args, { logFile, tmpDir, ...opts }) {
  return new Promise((resolve, reject) => {
    const fd = openSync(logFile, 'a');
    let child;
    try {
      child = spawn(cmd, args, { ...opts, stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    const handle = makeServerHandle({ kind: path.basename(cmd), url: null, child, tmpDir, gracefulSignal: 'SIGTERM', logFile });
    child.on('error', (err) => {
      liveServers.delete(handle);
      reject(err);
    });
    child.on('exit', (code, signal) => {
      liveServers.delete(handle);
      if (code === 0) resolve();
      else reject(new Error(`${path.basename(cmd)} exited with ${signal ?? code}:\n${tailFile(logFile)}`));
    });
  });
}

function signalPid(pid, signal) {
  try {
    process.kill(pid, signal);
  } catch {
    /* already gone */
  }
}

/** All descendants of `pid` (best effort, via `ps`; [] where unavailable). */
function descendantPids(pid) {
  let out;
  try {
    out = execFileSync('ps', ['-A', '-o', 'pid=,ppid='], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  } catch {
    return [];
  }
  const children = new Map();
  for (const line of out.split('\n')) {
    const [p, pp] = line.trim().split(/\s+/).map(Number);
    if (!p || pp === undefined) continue;
    if (!children.has(pp)) children.set(pp, []);
    children.get(pp).push(p);
  }
  const result = [];
  const queue = [pid];
  while (queue.length) {
    for (const c of children.get(queue.shift()) ?? []) {
      result.push(c);
      queue.push(c);
    }
  }
  return result;
}

function waitForExit(child, ms) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

function signalChild(child, signal) {
  try {
    child.kill(signal);
  } catch {
    /* already gone */
  }
}

/** Every throwaway server process spawned and not yet stopped (also while still starting). */
export const liveServers = new Set();

/**
 * A long-running server child with kill() (graceful, escalating), stop()
 * (kill + delete `tmpDir`) and stopSync() (last resort from the 'exit' handler).
 */
function makeServerHandle({ kind, url, child, tmpDir, gracefulSignal, logFile }) {
  let killing = null;
  let stopping = null;
  const handle = {
    kind,
    url,
    tmpDir,
    logFile,
    pid: child.pid,
    child,
    kill() {
      killing ??= (async () => {
        if (!(await waitForExit(child, 0))) {
          signalChild(child, gracefulSignal);
          if (!(await waitForExit(child, 15_000))) {
            signalChild(child, 'SIGQUIT');
            if (!(await waitForExit(child, 5_000))) {
              signalChild(child, 'SIGKILL');
              await waitForExit(child, 5_000);
            }
          }
        }
        liveServers.delete(handle);
      })();
      return killing;
    },
    stop() {
      stopping ??= (async () => {
        await handle.kill();
        rmSync(tmpDir, { recursive: true, force: true, maxRetries: 3 });
      })();
      return stopping;
    },
    stopSync() {
      if (child.exitCode === null && child.signalCode === null) signalChild(child, 'SIGQUIT');
      try {
        rmSync(tmpDir, { recursive: true, force: true });
      } catch {
        /* best effort */
      }
      liveServers.delete(handle);
    },
  };
  liveServers.add(handle);
  return handle;
}

/** Stop every throwaway server and delete its temp dir. */
export async function stopAllServers() {
  await Promise.all(
    [...liveServers].map((s) => s.stop().catch((err) => log(`failed to stop throwaway ${s.kind} (pid ${s.pid}): ${errorText(err)}`))),
  );
}

/** Poll `probe` until it succeeds, the child dies, or the timeout passes. */
async function waitUntilReady(probe, child, what, logFile) {
  const deadline = Date.now() + START_TIMEOUT_MS;
  let lastErr;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${what} exited early (${child.signalCode ?? child.exitCode}):\n${tailFile(logFile)}`);
    }
    try {
      await probe();
      return;
    } catch (err) {
      lastErr = err;
    }
    await sleep(150);
  }
  throw new Error(`${what} did not accept connections within ${START_TIMEOUT_MS / 1000}s (${errorText(lastErr)}):\n${tailFile(logFile)}`);
}

// ----------------------------------------------------------------- probes

/** Connect and SELECT 1. Resolves on success, rejects with the reason. */
export async function probePostgres(url, timeoutMs = PROBE_TIMEOUT_MS) {
  const pg = await loadDep('pg');
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
  } finally {
    await client.end().catch(() => {});
  }
}

/** Connect and PING (expects PONG). Resolves on success, rejects with the reason. */
export async function probeRedis(url, timeoutMs = PROBE_TIMEOUT_MS) {
  const ioredis = await loadDep('ioredis');
  const Redis = ioredis.Redis ?? ioredis;
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
    reconnectOnError: () => false,
  });
  let lastError;
  client.on('error', (err) => {
    lastError = err;
  });
  try {
    await client.connect();
    const pong = await client.ping();
    if (pong !== 'PONG') throw new Error(`unexpected PING reply: ${pong}`);
  } catch (err) {
    throw lastError && errorText(err) === 'Connection is closed.' ? lastError : err;
  } finally {
    client.disconnect();
  }
}

// ------------------------------------------------------ throwaway servers

/**
 * Start a throwaway Postgres (trust auth, fsync off) on a free 127.0.0.1 port.
 * Returns a handle { url, stop(), stopSync(), ... }.
 */
export async function startThrowawayPostgres({ bins = findPostgresBinaries(), attempts = 3 } = {}) {
  if (!bins) throw new Error('no PostgreSQL server binaries (initdb, postgres) found');

  // initdb and postgres refuse to run as root: run them as the `postgres`
  // system user (or `nobody`), via spawn's uid/gid (setuid in the child, like
  // runuser, but the child is the server itself so signals reach it directly).
  let runAs = null;
  if (IS_ROOT) {
    runAs = lookupUser('postgres') ?? lookupUser('nobody');
    if (!runAs) throw new Error('running as root and there is neither a "postgres" nor a "nobody" user to run initdb/postgres as');
  }
  const idOpts = runAs ? { uid: runAs.uid, gid: runAs.gid } : {};

  // Short base path: the unix socket path must stay under ~100 chars; as root,
  // /tmp is traversable by the unprivileged user whatever TMPDIR says.
  const base = IS_ROOT && existsSync('/tmp') ? '/tmp' : os.tmpdir();
  const tmpDir = mkdtempSync(path.join(base, 'sotalk-pg-'));
  const dataDir = path.join(tmpDir, 'data');
  const logFile = path.join(tmpDir, 'postgres.log');
  let started = false;
  try {
    closeSync(openSync(logFile, 'a'));
    if (runAs) {
      chownSync(tmpDir, runAs.uid, runAs.gid);
      chownSync(logFile, runAs.uid, runAs.gid);
    }
    // HOME of root may not be readable by the server user; point it at tmpDir.
    const env = { ...process.env, LC_ALL: 'C', LANG: 'C', ...(runAs ? { HOME: tmpDir, USER: runAs.name, LOGNAME: runAs.name } : {}) };
    for (const k of Object.keys(env)) if (k.startsWith('PG')) delete env[k];

    await runToCompletion(
      bins.initdb,
      ['-D', dataDir, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--no-sync'],
      { ...idOpts, env, cwd: tmpDir, logFile, tmpDir },
    );

    let lastErr;
    for (let i = 0; i < attempts; i++) {
      const port = await freePort();
      const fd = openSync(logFile, 'a');
      let child;
      try {
        child = spawn(
          bins.postgres,
          [
            '-D', dataDir,
            '-p', String(port),
            '-c', 'listen_addresses=127.0.0.1',
            '-c', `unix_socket_directories=${tmpDir}`,
            '-c', 'fsync=off',
            '-c', 'synchronous_commit=off',
            '-c', 'full_page_writes=off',
          ],
          // own process group: a terminal Ctrl-C must not take the server down
          // before the tests have finished their teardown; we stop it ourselves.
          { ...idOpts, env, cwd: tmpDir, detached: true, stdio: ['ignore', fd, fd] },
        );
      } finally {
        closeSync(fd);
      }
      const url = `postgresql://postgres@127.0.0.1:${port}/postgres`;
      // SIGINT = postgres "fast" shutdown (disconnects clients, no waiting)
      const handle = makeServerHandle({ kind: 'postgres', url, child, tmpDir, gracefulSignal: 'SIGINT', logFile });
      const spawnError = new Promise((_, reject) => child.once('error', reject));
      spawnError.catch(() => {});
      try {
        await Promise.race([waitUntilReady(() => probePostgres(url, 1000), child, 'throwaway postgres', logFile), spawnError]);
        started = true;
        return handle;
      } catch (err) {
        lastErr = err;
        await handle.kill();
        // port taken between freePort() and bind: try another one
        if (!/could not (bind|create listen socket)|Address already in use/i.test(errorText(err))) break;
      }
    }
    throw lastErr;
  } finally {
    if (!started) rmSync(tmpDir, { recursive: true, force: true });
  }
}

/** Start a throwaway, non-persistent redis-server on a free 127.0.0.1 port. */
export async function startThrowawayRedis({ bin = findRedisServer(), attempts = 3, args = [] } = {}) {
  if (!bin) throw new Error('no redis-server binary found');
  const tmpDir = mkdtempSync(path.join(os.tmpdir(), 'sotalk-redis-'));
  const logFile = path.join(tmpDir, 'redis.log');
  let started = false;
  try {
    let lastErr;
    for (let i = 0; i < attempts; i++) {
      const port = await freePort();
      const fd = openSync(logFile, 'a');
      let child;
      try {
        child = spawn(
          bin,
          ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', tmpDir, '--daemonize', 'no', '--logfile', '', ...args],
          { cwd: tmpDir, detached: true, stdio: ['ignore', fd, fd] },
        );
      } finally {
        closeSync(fd);
      }
      const url = `redis://127.0.0.1:${port}`;
      const handle = makeServerHandle({ kind: 'redis', url, child, tmpDir, gracefulSignal: 'SIGTERM', logFile });
      const spawnError = new Promise((_, reject) => child.once('error', reject));
      spawnError.catch(() => {});
      try {
        await Promise.race([waitUntilReady(() => probeRedis(url, 1000), child, 'throwaway redis-server', logFile), spawnError]);
        started = true;
        return handle;
      } catch (err) {
        lastErr = err;
        await handle.kill();
        if (!/Address already in use|bind/i.test(errorText(err))) break;
      }
    }
    throw lastErr;
  } finally {
    if (!started) rmSync(tmpDir, { recursive: true, force: true });
  }
}

/**
 * Start a throwaway Redis Cluster: `masters` cluster-enabled redis-servers (no replicas) joined with
 * `redis-cli --cluster create`, ready once every node reports cluster_state:ok.
 * Returns { url: 'redis+cluster://127.0.0.1:p1,...', nodes }.
 */
export async function startThrowawayRedisCluster({ bin = findRedisServer(), masters = 3 } = {}) {
  if (!bin) throw new Error('no redis-server binary found');
  const cli = path.join(path.dirname(bin), 'redis-cli');
  if (!isExecutable(cli)) throw new Error(`no redis-cli next to ${bin}`);
  const args = ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '1000'];
  const started = await Promise.allSettled(Array.from({ length: masters }, () => startThrowawayRedis({ bin, args })));
  const nodes = started.filter((r) => r.status === 'fulfilled').map((r) => r.value);
  try {
    const failed = started.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    const addresses = nodes.map((n) => n.url.replace('redis://', ''));
    const create = spawnSync(cli, ['--cluster', 'create', ...addresses, '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8', timeout: 30_000 });
    if (create.status !== 0) throw new Error(`redis-cli --cluster create failed: ${(create.stderr || create.stdout || '').trim().split('\n').slice(-5).join('\n')}`);
    const deadline = Date.now() + 30_000;
    for (;;) {
      const states = addresses.map((a) => {
        const [host, port] = a.split(':');
        const info = spawnSync(cli, ['-h', host, '-p', port, 'cluster', 'info'], { encoding: 'utf8', timeout: 5000 }).stdout ?? '';
        return /cluster_state:(\w+)/.exec(info)?.[1];
      });
      if (states.every((st) => st === 'ok')) break;
      if (Date.now() > deadline) throw new Error(`the cluster did not reach cluster_state:ok within 30 s (${states.join(', ')})`);
      await sleep(150);
    }
    return { url: `redis+cluster://${addresses.join(',')}`, nodes };
  } catch (err) {
    await Promise.all(nodes.map((n) => n.stop()));
    throw err;
  }
}

// ------------------------------------------------------------------ main

function installHint(missing) {
  const sudo = IS_ROOT ? '' : 'sudo ';
  const apt = { postgres: 'postgresql', redis: 'redis-server' };
  const brew = { postgres: 'postgresql', redis: 'redis' };
  const dnf = { postgres: 'postgresql-server', redis: 'redis' };
  if (existsSync('/etc/debian_version')) return `${sudo}apt-get install -y ${missing.map((m) => apt[m]).join(' ')}`;
  if (process.platform === 'darwin') return `brew install ${missing.map((m) => brew[m]).join(' ')}`;
  if (existsSync('/etc/alpine-release')) return `${sudo}apk add ${missing.map((m) => brew[m]).join(' ')}`;
  if (existsSync('/etc/redhat-release') || existsSync('/etc/fedora-release')) return `${sudo}dnf install -y ${missing.map((m) => dnf[m]).join(' ')}`;
  return `${sudo}apt-get install -y ${missing.map((m) => apt[m]).join(' ')}   (Debian/Ubuntu; use your OS's package manager otherwise)`;
}

async function main(argv) {
  let vitest = null;
  let shutdown = null; // set once a signal arrives; exits the process when done

  // Last resort if we exit without going through stopAllServers().
  process.on('exit', () => {
    for (const s of [...liveServers]) s.stopSync();
  });

  const SIGNUM = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 };
  for (const sig of Object.keys(SIGNUM)) {
    process.on(sig, () => {
      shutdown ??= (async () => {
        if (vitest && vitest.exitCode === null && vitest.signalCode === null) {
          // vitest exits on SIGINT/SIGTERM without stopping its workers, so
          // signal them too (as a terminal Ctrl-C to the process group would).
          const workers = descendantPids(vitest.pid);
          signalChild(vitest, sig);
          for (const pid of workers) signalPid(pid, sig);
          if (!(await waitForExit(vitest, 10_000))) signalChild(vitest, 'SIGKILL');
          await sleep(200);
          for (const pid of workers) signalPid(pid, 'SIGKILL');
        }
        await stopAllServers();
        process.exit(128 + SIGNUM[sig]);
      })();
    });
  }

  try {
    const pgExplicit = Boolean(process.env.TEST_DATABASE_URL);
    const redisExplicit = Boolean(process.env.REDIS_URL);
    let pgUrl = process.env.TEST_DATABASE_URL || DEFAULT_DATABASE_URL;
    let redisUrl = process.env.REDIS_URL || DEFAULT_REDIS_URL;

    const [pgProbe, redisProbe] = await Promise.allSettled([probePostgres(pgUrl), probeRedis(redisUrl)]);

    // Decide everything before starting anything, so a fatal problem with one
    // server doesn't leave us half set up.
    const errors = [];
    const notes = [];
    const missing = [];
    let needPg = false;
    let needRedis = false;
    let pgBins = null;
    let redisBin = null;
    if (pgProbe.status === 'rejected') {
      const why = errorText(pgProbe.reason);
      if (pgExplicit) {
        errors.push(`Postgres at TEST_DATABASE_URL=${maskUrl(pgUrl)} is not usable: ${why}\n  Fix the server/URL, or unset TEST_DATABASE_URL to use a local or throwaway one.`);
      } else if ((pgBins = findPostgresBinaries())) {
        needPg = true;
        notes.push(`no Postgres at ${maskUrl(pgUrl)} (${why}); starting a throwaway one from ${pgBins.dir}`);
      } else {
        errors.push(`no Postgres at ${maskUrl(pgUrl)} (${why}) and no PostgreSQL server binaries (initdb, postgres) installed to start one.`);
        missing.push('postgres');
      }
    }
    if (redisProbe.status === 'rejected') {
      const why = errorText(redisProbe.reason);
      if (redisExplicit) {
        errors.push(`Redis at REDIS_URL=${maskUrl(redisUrl)} is not usable: ${why}\n  Fix the server/URL, or unset REDIS_URL to use a local or throwaway one.`);
      } else if ((redisBin = findRedisServer())) {
        needRedis = true;
        notes.push(`no Redis at ${maskUrl(redisUrl)} (${why}); starting a throwaway one (${redisBin})`);
      } else {
        errors.push(`no Redis at ${maskUrl(redisUrl)} (${why}) and no redis-server binary installed to start one.`);
        missing.push('redis');
      }
    }
    if (errors.length) {
      for (const e of errors) log(`ERROR: ${e}`);
      if (missing.length) {
        log(`Install the missing server(s), then re-run:\n\n    ${installHint(missing)}\n`);
        log('Or point the tests at existing servers with TEST_DATABASE_URL=postgresql://... and/or REDIS_URL=redis://...');
      }
      return 1;
    }
    for (const n of notes) log(n);

    const starts = [];
    if (needPg) starts.push(startThrowawayPostgres({ bins: pgBins }).then((h) => (pgUrl = h.url)));
    if (needRedis) starts.push(startThrowawayRedis({ bin: redisBin }).then((h) => (redisUrl = h.url)));
    // The Redis Cluster for the cluster variants of the real-time tests.
    let clusterUrl = process.env.REDIS_CLUSTER_URL || '';
    let clusterSkipped = null;
    if (!clusterUrl) {
      starts.push(
        startThrowawayRedisCluster({ bin: redisBin ?? undefined }).then(
          (h) => (clusterUrl = h.url),
          (err) => {
            if (process.env.CI) throw new Error(`Redis Cluster (CI requires it): ${errorText(err)}`);
            clusterSkipped = errorText(err);
          },
        ),
      );
    }
    const results = await Promise.allSettled(starts);
    const failed = results.filter((r) => r.status === 'rejected');
    if (failed.length) {
      for (const f of failed) log(`ERROR: could not start throwaway server: ${errorText(f.reason)}`);
      return 1;
    }
    if (shutdown) return 1;
    if (clusterSkipped) log(`no Redis Cluster (${clusterSkipped}): the cluster variants of the real-time tests are skipped`);

    const describe = (url, throwaway, explicit, envName) =>
      `${maskUrl(url)} (${throwaway ? 'throwaway' : explicit ? envName : 'local default'})`;
    log(`Postgres: ${describe(pgUrl, needPg, pgExplicit, 'TEST_DATABASE_URL')}; Redis: ${describe(redisUrl, needRedis, redisExplicit, 'REDIS_URL')}` +
      (clusterUrl ? `; Redis Cluster: ${maskUrl(clusterUrl)} (${process.env.REDIS_CLUSTER_URL ? 'REDIS_CLUSTER_URL' : 'throwaway'})` : ''));

    const vitestEntry = path.join(REPO_ROOT, 'node_modules', 'vitest', 'vitest.mjs');
    if (!existsSync(vitestEntry)) {
      log(`ERROR: ${path.relative(REPO_ROOT, vitestEntry)} not found; run \`npm ci\` first`);
      return 1;
    }
    log('compiling the server (npm run build)');
    const build = spawnSync('npm', ['run', '--silent', 'build'], { cwd: REPO_ROOT, stdio: 'inherit' });
    if (build.status !== 0) {
      log('ERROR: npm run build failed');
      return 1;
    }
    // Same as node_modules/.bin/vitest, but with this very node binary.
    vitest = spawn(process.execPath, [vitestEntry, 'run', ...argv], {
      cwd: REPO_ROOT,
      stdio: 'inherit',
      env: { ...process.env, TEST_DATABASE_URL: pgUrl, REDIS_URL: redisUrl, REDIS_CLUSTER_URL: clusterUrl },
    });
    const code = await new Promise((resolve) => {
      vitest.on('error', (err) => {
        log(`ERROR: could not run vitest: ${errorText(err)}`);
        resolve(1);
      });
      vitest.on('exit', (c, signal) => resolve(c ?? 128 + (os.constants.signals[signal] ?? 1)));
    });
    return code;
  } catch (err) {
    log(`ERROR: ${err?.stack || errorText(err)}`);
    return 1;
  } finally {
    if (shutdown) await shutdown; // never returns: it exits the process
    await stopAllServers();
  }
}

function isMain() {
  if (!process.argv[1]) return false;
  try {
    return realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return import.meta.url === pathToFileURL(process.argv[1]).href;
  }
}

if (isMain()) {
  const code = await main(process.argv.slice(2));
  process.exit(code);
}
