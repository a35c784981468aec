// A throwaway redis-server child process (or a Redis Cluster of them) for tests that must stop or
// restart Redis (so the shared Redis at REDIS_URL, or cluster at REDIS_CLUSTER_URL, is never disturbed).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ThrowawayRedis {
  url: string;
  port: number;
  /** Stops the server (SIGKILL if SIGTERM is not enough) and removes its temp dir. */
  stop(): Promise<void>;
  /** Kills the server and starts a fresh (empty) one on the same port; resolves when it answers PING. */
  restart(): Promise<void>;
  /** Kills the server without starting it again (use start() later). */
  kill(): Promise<void>;
  /** Starts the server again on the same port after kill(). */
  start(): Promise<void>;
  /** The process is up (not killed or stopped). */
  running(): boolean;
  /**
   * CLIENT PAUSE <ms> <mode>: Redis holds clients' commands for `ms` (WRITE: only writes and PUBLISH,
   * so unpause() still gets through; ALL: every command).
   */
  pause(ms: number, mode?: 'WRITE' | 'ALL'): Promise<void>;
  /** CLIENT UNPAUSE (only reaches Redis during a WRITE pause). */
  unpause(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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

/** One PING over a raw TCP connection; resolves true on +PONG. */
function ping(port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let answer = '';
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (d) => {
      answer += d.toString();
      if (answer.includes('\r\n')) done(answer.startsWith('+PONG'));
    });
  });
}

/** Sends one inline command over a raw TCP connection and resolves with the first reply line. */
function rawCommand(port: number, command: string, timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let answer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`redis did not answer ${command} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on('connect', () => socket.write(command + '\r\n'));
    socket.on('data', (d) => {
      answer += d.toString();
      if (answer.includes('\r\n')) {
        clearTimeout(timer);
        socket.destroy();
        resolve(answer.slice(0, answer.indexOf('\r\n')));
      }
    });
  });
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
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of live) {
      try {
        child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

/**
 * Starts `redis-server --port <free> --bind 127.0.0.1 --save "" --appendonly no` (plus `args`) and
 * waits for PING. Its directory (and so a cluster node's nodes.conf) survives restart().
 */
export async function startRedis(options: { bin?: string; startTimeoutMs?: number; args?: string[] } = {}): Promise<ThrowawayRedis> {
  installExitHook();
  const bin = options.bin ?? 'redis-server';
  const startTimeoutMs = options.startTimeoutMs ?? 15_000;
  const dir = mkdtempSync(join(tmpdir(), 'sotalk-test-redis-'));
  let child: ChildProcess | undefined;
  let output = '';

  const launch = async (port: number): Promise<void> => {
    output = '';
    const c = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', ...(options.args ?? [])], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = c;
    live.add(c);
    c.once('exit', () => live.delete(c));
    c.stdout?.on('data', (d) => (output = (output + d.toString()).slice(-4000)));
    c.stderr?.on('data', (d) => (output = (output + d.toString()).slice(-4000)));
    let spawnError: Error | undefined;
    c.once('error', (err) => (spawnError = err));
    const deadline = Date.now() + startTimeoutMs;
    while (Date.now() < deadline) {
      if (spawnError) throw new Error(`cannot start ${bin}: ${spawnError.message}`);
      if (c.exitCode !== null || c.signalCode !== null) throw new Error(`redis-server exited early (${c.signalCode ?? c.exitCode}):\n${output}`);
      if (await ping(port)) return;
      await sleep(50);
    }
    c.kill('SIGKILL');
    throw new Error(`redis-server on port ${port} did not answer PING within ${startTimeoutMs} ms:\n${output}`);
  };

  const kill = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    c.kill('SIGKILL');
    await waitForExit(c, 5000);
  };

  // The port may be taken between freePort() and bind: a few attempts.
  let port = 0;
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    port = await freePort();
    try {
      await launch(port);
      lastErr = undefined;
      break;
    } catch (err) {
      lastErr = err;
      await kill();
    }
  }
  if (lastErr) {
    rmSync(dir, { recursive: true, force: true });
    throw lastErr;
  }

  // A restart must come back on the same port: retry while the old socket lingers.
  const start = async (): Promise<void> => {
    let err: unknown;
    for (let attempt = 0; attempt < 20; attempt++) {
      try {
        await launch(port);
        return;
      } catch (e) {
        err = e;
        await kill();
        await sleep(100);
      }
    }
    throw err;
  };

  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    kill,
    start,
    running: () => child !== undefined && child.exitCode === null && child.signalCode === null,
    async pause(ms: number, mode: 'WRITE' | 'ALL' = 'ALL') {
      const reply = await rawCommand(port, `CLIENT PAUSE ${Math.max(0, Math.round(ms))} ${mode}`);
      if (reply !== '+OK') throw new Error(`CLIENT PAUSE failed: ${reply}`);
    },
    async unpause() {
      const reply = await rawCommand(port, 'CLIENT UNPAUSE');
      if (reply !== '+OK') throw new Error(`CLIENT UNPAUSE failed: ${reply}`);
    },
    async restart() {
      await kill();
      await start();
    },
    async stop() {
      const c = child;
      child = undefined;
      if (c && c.exitCode === null && c.signalCode === null) {
        c.kill('SIGTERM');
        if (!(await waitForExit(c, 3000))) {
          c.kill('SIGKILL');
          await waitForExit(c, 3000);
        }
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface ThrowawayRedisCluster {
  /** `redis+cluster://127.0.0.1:<port>,…` for REDIS_URL. */
  url: string;
  /** Every node (masters and replicas); kill() one to take it down, start() to bring it back (it rejoins). */
  nodes: ThrowawayRedis[];
  /** CLUSTER INFO's cluster_state as seen by the nodes that answer ('ok' only when they all agree). */
  state(): Promise<string>;
  /** The master serving `key`'s hash slot (a channel name with a {tag} hashes by its tag). */
  ownerOf(key: string): Promise<ThrowawayRedis>;
  stop(): Promise<void>;
}

const run = (bin: string, args: string[]) =>
  new Promise<string>((resolve, reject) =>
    execFile(bin, args, { timeout: 10_000 }, (err, stdout, stderr) => (err ? reject(new Error(`${bin} ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout))),
  );

/**
 * A throwaway Redis Cluster of `masters` redis-server processes, each with `replicas` replicas
 * (default none), made with `redis-cli --cluster create`; resolves once every node reports
 * cluster_state:ok. A node is declared failed 1 s after it stops answering (cluster-node-timeout),
 * then a replica of a failed master takes over; a restarted node rejoins.
 */
export async function startRedisCluster(options: { masters?: number; replicas?: number; cli?: string } = {}): Promise<ThrowawayRedisCluster> {
  const cli = options.cli ?? 'redis-cli';
  const replicas = options.replicas ?? 0;
  const args = ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '1000', '--cluster-replica-validity-factor', '0', '--repl-diskless-sync-delay', '0'];
  const nodes = await Promise.all(Array.from({ length: (options.masters ?? 3) * (1 + replicas) }, () => startRedis({ args })));
  const state = async () => {
    const states = await Promise.all(
      nodes.map((n) => run(cli, ['-p', String(n.port), 'cluster', 'info']).then((info) => /cluster_state:(\w+)/.exec(info)?.[1] ?? 'unknown', () => 'down')),
    );
    const up = states.filter((s) => s !== 'down');
    return up.length > 0 && up.every((s) => s === 'ok') ? 'ok' : (up.find((s) => s !== 'ok') ?? 'down');
  };
  try {
    await run(cli, ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', String(replicas), '--cluster-yes']);
    // ready: every node agrees the cluster is ok, and every replica has synced with its master
    const replicasSynced = async () =>
      (await Promise.all(nodes.map((n) => run(cli, ['-p', String(n.port), 'info', 'replication'])))).every((info) => !info.includes('role:slave') || info.includes('master_link_status:up'));
    const deadline = Date.now() + 20_000;
    while ((await state()) !== 'ok' || !(await replicasSynced())) {
      if (Date.now() > deadline) throw new Error('the throwaway Redis Cluster did not reach cluster_state:ok (replicas in sync) within 20 s');
      await sleep(100);
    }
  } catch (err) {
    await Promise.all(nodes.map((n) => n.stop()));
    throw err;
  }
  const ownerOf = async (key: string) => {
    const port = String(nodes.find((n) => n.running())!.port);
    const slot = Number(await run(cli, ['-p', port, 'cluster', 'keyslot', key]));
    // CLUSTER NODES: `<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges...>`
    for (const line of (await run(cli, ['-p', port, 'cluster', 'nodes'])).split('\n')) {
      const [, address, flags, , , , , , ...ranges] = line.trim().split(' ');
      if (!flags?.includes('master') || flags.includes('fail')) continue;
      const owns = ranges.some((r) => {
        const [from, to = from] = r.split('-').map(Number);
        return slot >= from! && slot <= to!;
      });
      const node = nodes.find((n) => address?.startsWith(`127.0.0.1:${n.port}@`));
      if (owns && node) return node;
    }
    throw new Error(`no master of the throwaway cluster serves ${key} (slot ${slot})`);
  };
  return {
    url: `redis+cluster://${nodes.map((n) => `127.0.0.1:${n.port}`).join(',')}`,
    nodes,
    state,
    ownerOf,
    stop: async () => void (await Promise.all(nodes.map((n) => n.stop()))),
  };
}
