import { createLogger, logFormat } from '../log.js';
import { startServer } from '../main.js';
import type { Invocation } from './main.js';
import { supervise } from './supervisor.js';

/** `sotalk serve`: the server, or SOTALK_PROCESSES of them under a supervisor; runs until a signal. */
export async function serve({ config }: Invocation): Promise<number> {
  const logger = createLogger(config.logLevel, { format: logFormat(config.logFormat, config.production) });
  if (config.processes > 1 && config.processIndex === undefined) return supervise(config, logger);
  let stopping = false;
  let exitCode = 0;
  let server: Awaited<ReturnType<typeof startServer>> | undefined = undefined; // set once started
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    // Still starting (waiting for the database, migrating, binding): nothing was accepted yet, and a
    // migration is one transaction, so stopping at once loses nothing.
    if (!server) process.exit(exitCode);
    const force = setTimeout(() => {
      logger.error('shutdown took too long; exiting');
      process.exit(1);
    }, 15_000);
    force.unref();
    server.close().then(
      () => process.exit(exitCode),
      (err: unknown) => {
        logger.error({ err: { message: (err as Error).message } }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  // Handlers before anything else: a signal that arrives while the server starts (or just after it
  // logged "listening") is a clean stop, never the default action that kills the process outright.
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // A process of SOTALK_PROCESSES stops with its supervisor, even one killed with SIGKILL: no
  // orphan keeps serving (and holding the port) with nobody to stop or restart it.
  if (config.processIndex !== undefined && process.connected) process.on('disconnect', () => stop('supervisor gone'));
  // An unexpected error leaves the process in an unknown state: say so (/readyz 503, so the load
  // balancer stops sending), finish what was accepted, and exit non-zero for the supervisor.
  const fault = (what: string, err: unknown) => {
    logger.error({ err: { message: (err as Error)?.message, stack: (err as Error)?.stack } }, what);
    server?.markFaulted();
    exitCode = 1;
    stop(what);
  };
  process.on('uncaughtException', (err) => fault('uncaught exception', err));
  process.on('unhandledRejection', (err) => fault('unhandled rejection', err));
  server = await startServer(config, { logger });
  return new Promise<number>(() => {}); // runs until a signal
}
