// The real server process (`node bin/sotalk.js serve`, or any command that ends up running it,
// e.g. `npm start`), started and stopped the way an operator or a supervisor would.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));

export interface Spawned {
  child: ChildProcess;
  baseUrl: string;
  port: number;
  /** Every stdout/stderr line so far. */
  lines: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, then SIGKILL after 20 s; idempotent. */
  stop(): Promise<void>;
}

export interface SpawnOptions {
  /** Default: this node running bin/sotalk.js serve. */
  command?: [string, ...string[]];
  cwd?: string;
  /** Run as this user and group (the caller must be root). */
  uid?: number;
  gid?: number;
  /** Sees every line as it arrives (stderr ones prefixed `[stderr] `), before the server listens too. */
  onLine?: (line: string) => void;
}

const spawned = new Set<ChildProcess>();
process.on('exit', () => spawned.forEach((c) => c.kill('SIGKILL')));

/** Starts the server with test defaults plus `env`; resolves once it logged "sotalk listening". */
export async function spawnServer(env: Record<string, string>, options: SpawnOptions = {}): Promise<Spawned> {
  const [cmd, ...args] = options.command ?? [process.execPath, 'bin/sotalk.js', 'serve'];
  const child = spawn(cmd, args, {
    cwd: options.cwd ?? REPO,
    env: { ...process.env, NODE_ENV: 'test', HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', CRYPTO_POOL_SIZE: '1', REDIS_URL: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.uid === undefined ? {} : { uid: options.uid, gid: options.gid }),
  });
  spawned.add(child);
  const lines: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      spawned.delete(child);
      resolve({ code, signal });
    }),
  );
  const listening = new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "sotalk listening" within 60 s:\n${lines.join('\n')}`)), 60_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      lines.push(line);
      options.onLine?.(line);
      try {
        const rec = JSON.parse(line);
        if (rec.msg === 'sotalk listening' && typeof rec.port === 'number') {
          clearTimeout(timer);
          resolve(rec.port);
        }
      } catch {
        /* not JSON */
      }
    });
    createInterface({ input: child.stderr! }).on('line', (line) => {
      lines.push(`[stderr] ${line}`);
      options.onLine?.(`[stderr] ${line}`);
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${signal ?? code}) before listening:\n${lines.join('\n')}`));
    });
  });
  const port = await listening;
  let stopping: Promise<void> | undefined;
  return {
    child,
    port,
    baseUrl: `http://127.0.0.1:${port}`,
    lines,
    exited,
    stop: () =>
      (stopping ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
        await exited;
        clearTimeout(t);
      })()),
  };
}
