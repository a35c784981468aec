import { fork, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { ListenError } from '../main.js';

/** A process that dies this often within CRASH_WINDOW_MS is not restarted again: the supervisor stops. */
const MAX_CRASHES = 5;
const CRASH_WINDOW_MS = 60_000;
const RESTART_DELAY_MS = 1000;

/**
 * Whether nothing listens on the port: an exclusive bind (no SO_REUSEPORT) fails on a port that
 * any socket holds, shared or not.
 */
function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(false));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve(true)));
  });
}

/**
 * SOTALK_PROCESSES > 1: runs that many server processes on one port (each listens with
 * SO_REUSEPORT; the kernel spreads connections) and forwards SIGTERM/SIGINT to them. A process
 * that dies unexpectedly is restarted after a second; one that keeps dying stops the lot (exit 1).
 * The processes stop by themselves when the supervisor is gone, even killed with SIGKILL (their
 * IPC channel to it closes). Refuses to start on a port something already listens on: sharing
 * is only among the processes of one supervisor. Resolves with the exit code once every process
 * has exited after a signal.
 */
export async function supervise(config: Config, logger: Logger): Promise<number> {
  if (!(await portFree(config.host, config.port))) throw new ListenError(config.host, config.port);
  const children = new Map<number, ChildProcess>();
  const crashes: number[] = [];
  let stopping = false;
  let exitCode = 0;
  let resolveDone: (code: number) => void;
  const done = new Promise<number>((resolve) => (resolveDone = resolve));

  const start = (index: number) => {
    const child = fork(process.argv[1]!, ['serve'], {
      env: { ...process.env, SOTALK_PROCESS_INDEX: String(index) },
      execArgv: process.execArgv,
      // stdin, stdout, stderr and the IPC channel whose end tells the process that the supervisor is gone
      stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
    });
    children.set(index, child);
    child.once('exit', (code, signal) => {
      children.delete(index);
      if (stopping) {
        if (code !== 0) exitCode = 1;
        if (children.size === 0) resolveDone(exitCode);
        return;
      }
      const now = Date.now();
      crashes.push(now);
      while (crashes.length > 0 && crashes[0]! < now - CRASH_WINDOW_MS) crashes.shift();
      if (crashes.length >= MAX_CRASHES) {
        logger.error({ process: index, code, signal }, `server processes exited ${crashes.length} times within a minute; stopping`);
        exitCode = 1;
        stop('crash loop');
        if (children.size === 0) resolveDone(exitCode);
        return;
      }
      logger.error({ process: index, code, signal }, 'server process exited; restarting it');
      setTimeout(() => !stopping && start(index), RESTART_DELAY_MS);
    });
  };

  const stop = (why: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal: why, processes: children.size }, 'stopping server processes');
    for (const child of children.values()) child.kill('SIGTERM');
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  logger.info({ processes: config.processes, port: config.port, cryptoPoolPerProcess: config.cryptoPoolSize }, 'starting server processes');
  for (let i = 0; i < config.processes; i++) start(i);
  return done;
}
