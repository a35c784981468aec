import { randomBytes } from 'node:crypto';
import { ConfigError, loadConfig, type Config } from '../config.js';
import { openDatabase } from '../db/database.js';
import { migrateDown, migrateUp, migrationStatus } from '../db/migrations.js';
import { createLogger } from '../log.js';
import { startServer } from '../main.js';
import { exportCommand, reindexCommand, rotateConversationCommand, rotateMasterCommand, verifyCommand } from './jobs.js';

const USAGE = `usage: sotalk [command]

commands:
  serve                 start the server (default)
  keygen                print a new base64 32-byte master key
  migrate up|down|status
                        apply pending migrations, revert the newest one, or list them
  rotate-conversation <id> [--reencrypt]
                        new key version for a conversation (and move its messages to it)
  rotate-master         re-encrypt everything still under an old master key (resumable)
  verify                decrypt every message; list failures and the master keys still needed
  export <conversation_id>
                        NDJSON of the conversation's decrypted messages on stdout
  reindex [--conversation <id>] [--all]
                        rebuild the search index under the active key (resumable; --all redoes everything)
`;

/** Prints a config problem (it names the variable, never a value) and exits 1. */
function loadConfigOrExit(): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`sotalk: configuration error: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
}

async function serve(): Promise<void> {
  const config = loadConfigOrExit();
  const logger = createLogger(config.logLevel);
  const server = await startServer(config, { logger });
  let stopping = false;
  let exitCode = 0;
  // An unexpected error leaves the process in an unknown state: say so (/readyz 503, so the load
  // balancer stops sending), finish what was accepted, and exit non-zero for the supervisor.
  const fault = (what: string, err: unknown) => {
    logger.error({ err: { message: (err as Error)?.message, stack: (err as Error)?.stack } }, what);
    server.markFaulted();
    exitCode = 1;
    stop(what);
  };
  process.on('uncaughtException', (err) => fault('uncaught exception', err));
  process.on('unhandledRejection', (err) => fault('unhandled rejection', err));
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
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
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function migrate(action: string | undefined): Promise<void> {
  if (!action || !['up', 'down', 'status'].includes(action)) {
    process.stderr.write(USAGE);
    process.exit(2);
  }
  const config = loadConfigOrExit();
  const db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  try {
    if (action === 'up') {
      const applied = await migrateUp(db.pool);
      process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'nothing to apply\n');
    } else if (action === 'down') {
      const reverted = await migrateDown(db.pool);
      process.stdout.write(reverted === null ? 'nothing to revert\n' : `reverted: ${reverted}\n`);
    } else {
      for (const m of await migrationStatus(db.pool)) {
        const when = m.appliedAt ? `applied ${m.appliedAt.toISOString()}` : 'pending';
        process.stdout.write(`${String(m.version).padStart(4, '0')}_${m.name}  ${when}\n`);
      }
    }
  } finally {
    await db.close();
  }
}

const [command = 'serve', ...args] = process.argv.slice(2);
switch (command) {
  case 'serve':
    await serve();
    break;
  case 'keygen':
    process.stdout.write(randomBytes(32).toString('base64') + '\n');
    break;
  case 'migrate':
    await migrate(args[0]);
    break;
  case 'rotate-master':
    process.exitCode = await rotateMasterCommand(loadConfigOrExit());
    break;
  case 'rotate-conversation':
    process.exitCode = await rotateConversationCommand(loadConfigOrExit(), args);
    break;
  case 'verify':
    process.exitCode = await verifyCommand(loadConfigOrExit());
    break;
  case 'reindex':
    process.exitCode = await reindexCommand(loadConfigOrExit(), args);
    break;
  case 'export':
    process.exitCode = await exportCommand(loadConfigOrExit(), args);
    break;
  case 'help':
  case '--help':
  case '-h':
    process.stdout.write(USAGE);
    break;
  default:
    process.stderr.write(`sotalk: unknown command "${command}"\n${USAGE}`);
    process.exit(2);
}
