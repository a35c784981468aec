import { randomBytes } from 'node:crypto';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError, loadConfig, requireDatabaseUrlInProduction, type Config } from '../config.js';
import { keyFingerprint } from '../crypto/kdf.js';
import { ApiError } from '../errors.js';
import { checkMigrateAction, CommandError, UsageError, uuidArgument } from './arguments.js';

// The server and the jobs load only when a command runs: help and usage errors answer at once.
const jobs = () => import('./jobs.js');

type Options = NonNullable<ParseArgsConfig['options']>;
type Values = Record<string, string | boolean | undefined>;

export interface Invocation {
  /** Loaded for every command but keygen (which needs no configuration). */
  config: Config;
  positionals: string[];
  values: Values;
}

interface Command {
  usage: string;
  summary: string;
  /** More lines for `sotalk <command> --help`. */
  details?: string;
  options?: Options;
  positionals: [min: number, max: number];
  /** Opens the database: says which, and refuses the embedded one in production. */
  database: boolean;
  /** Checks what the flag parser cannot (a UUID, an action) before anything is opened: throws UsageError. */
  check?(positionals: string[], values: Values): void;
  /** Without ENCRYPTION_MASTER_KEY it may create a development key; the others only read one. */
  createsDevKey?: boolean;
  run(inv: Invocation): Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  serve: {
    usage: 'sotalk serve',
    summary: 'start the server (the default command)',
    details: 'Configuration comes from the environment (README: Configuration). SIGTERM or SIGINT drains and stops it.',
    positionals: [0, 0],
    database: true,
    createsDevKey: true,
    run: async (inv) => (await import('./serve.js')).serve(inv),
  },
  keygen: {
    usage: 'sotalk keygen',
    summary: 'print a new base64 32-byte master key (its fingerprint on stderr)',
    positionals: [0, 0],
    database: false,
    run: async () => {
      const key = randomBytes(32);
      process.stdout.write(key.toString('base64') + '\n');
      process.stderr.write(`fingerprint: ${keyFingerprint(key)}\n`);
      return 0;
    },
  },
  fingerprint: {
    usage: 'sotalk fingerprint',
    summary: 'print the fingerprints of the configured master keys (active, then old)',
    details:
      'Compare them with the `masterKey` / `oldMasterKeys` of each instance\'s start-up log line and with\n' +
      'verify\'s output to confirm each phase of a master-key rotation (docs/operations.md).',
    positionals: [0, 0],
    database: false,
    run: async ({ config }) => {
      process.stdout.write(`active ${keyFingerprint(config.masterKey)}\n`);
      for (const key of config.oldMasterKeys) process.stdout.write(`old    ${keyFingerprint(key)}\n`);
      return 0;
    },
  },
  migrate: {
    usage: 'sotalk migrate up|down|status [--yes]',
    summary: 'apply pending migrations, revert the newest one, or list them',
    details: '`down` names the migration it reverts and, while live instances use the database, needs --yes.',
    options: { yes: { type: 'boolean' } },
    positionals: [1, 1],
    database: true,
    check: ([action]) => checkMigrateAction(action),
    createsDevKey: true,
    run: async (inv) => (await jobs()).migrateCommand(inv),
  },
  'rotate-conversation': {
    usage: 'sotalk rotate-conversation <conversation_id> [--reencrypt]',
    summary: 'new key version for a conversation (--reencrypt: move its messages to it)',
    options: { reencrypt: { type: 'boolean' } },
    positionals: [1, 1],
    database: true,
    check: ([id]) => uuidArgument(id, 'conversation_id'),
    run: async (inv) => (await jobs()).rotateConversationCommand(inv),
  },
  instances: {
    usage: 'sotalk instances',
    summary: 'list the live server instances and the master keys each holds',
    details:
      'Each instance refreshes its row every few seconds; one not seen for 30 s is gone. The summary compares\n' +
      'them with this environment\'s active key: confirm each phase of a master-key rotation (docs/operations.md).',
    positionals: [0, 0],
    database: true,
    run: async (inv) => (await jobs()).instancesCommand(inv),
  },
  'rotate-master': {
    usage: 'sotalk rotate-master [--force]',
    summary: 're-encrypt everything still under an old master key (resumable)',
    details:
      'Refuses to run while a live instance does not hold the active master key (it could not read\n' +
      'what is re-encrypted); --force runs anyway.',
    options: { force: { type: 'boolean' } },
    positionals: [0, 0],
    database: true,
    run: async (inv) => (await jobs()).rotateMasterCommand(inv),
  },
  verify: {
    usage: 'sotalk verify',
    summary: 'decrypt every message; list failures and the master keys still needed',
    positionals: [0, 0],
    database: true,
    run: async (inv) => (await jobs()).verifyCommand(inv),
  },
  export: {
    usage: 'sotalk export <conversation_id>',
    summary: "NDJSON of the conversation's decrypted messages on stdout",
    details: 'Progress on stderr; exit 1 when a message could not be decrypted (it is exported with integrity_error: true).',
    positionals: [1, 1],
    database: true,
    check: ([id]) => uuidArgument(id, 'conversation_id'),
    run: async (inv) => (await jobs()).exportCommand(inv),
  },
  reindex: {
    usage: 'sotalk reindex [--conversation <id>] [--all]',
    summary: 'rebuild the search index under the active key (resumable; --all redoes everything)',
    options: { conversation: { type: 'string' }, all: { type: 'boolean' } },
    positionals: [0, 0],
    database: true,
    check: (_, { conversation }) => conversation === undefined || uuidArgument(conversation as string, '--conversation'),
    run: async (inv) => (await jobs()).reindexCommand(inv),
  },
};

const USAGE =
  'usage: sotalk [command] [--help]\n\ncommands:\n' +
  Object.entries(COMMANDS)
    .map(([name, c]) => `  ${name.padEnd(20)} ${c.summary}\n`)
    .join('') +
  '\n`sotalk <command> --help` describes one command.\n';

/** `--help` or `-h` anywhere before `--`: the help wins over everything else on the line. */
function asksForHelp(args: string[]): boolean {
  const end = args.indexOf('--');
  return (end < 0 ? args : args.slice(0, end)).some((a) => a === '--help' || a === '-h');
}

function commandHelp(c: Command): string {
  const options = Object.entries(c.options ?? {}).map(([name, o]) => `--${name}${o.type === 'string' ? ' <value>' : ''}`);
  return `usage: ${c.usage}\n\n${c.summary}\n${c.details ? `\n${c.details}\n` : ''}${options.length ? `\noptions: ${options.join(', ')}, --help\n` : ''}`;
}

/** A mistake in the command line: one line, the command's usage, exit 2. */
function usageError(name: string, c: Command | undefined, message: string): never {
  process.stderr.write(`sotalk${c ? ` ${name}` : ''}: ${message}\n${c ? `usage: ${c.usage}` : USAGE.trimEnd()}\n`);
  process.exit(2);
}

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined || first.startsWith('-')) {
    if (first === '--help' || first === '-h') {
      process.stdout.write(USAGE);
      return 0;
    }
    if (first !== undefined) usageError('', undefined, `unknown option ${first}`);
  }
  const name = first ?? 'serve';
  if (name === 'help') {
    const about = rest[0] === undefined ? undefined : COMMANDS[rest[0]];
    if (rest[0] !== undefined && !about) usageError('', undefined, `unknown command "${rest[0]}"`);
    if (rest.length > 1) usageError('', undefined, `unexpected argument "${rest[1]}"`);
    process.stdout.write(about ? commandHelp(about) : USAGE);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) usageError('', undefined, `unknown command "${name}"`);

  if (asksForHelp(rest)) {
    process.stdout.write(commandHelp(command));
    return 0;
  }
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({ args: rest, options: command.options ?? {}, strict: true, allowPositionals: true }) as typeof parsed;
  } catch (err) {
    usageError(name, command, (err as Error).message.split('\n')[0]!.replace(/\. To specify a positional argument.*$/, ''));
  }
  const [min, max] = command.positionals;
  if (parsed.positionals.length < min) usageError(name, command, 'missing argument');
  if (parsed.positionals.length > max) usageError(name, command, `unexpected argument "${parsed.positionals[max]}"`);
  try {
    command.check?.(parsed.positionals, parsed.values);
  } catch (err) {
    if (err instanceof UsageError) usageError(name, command, err.message);
    throw err;
  }

  if (name === 'keygen') return command.run({ config: undefined as unknown as Config, positionals: parsed.positionals, values: parsed.values });
  const config = loadConfig(process.env, { devKey: command.createsDevKey ? 'create' : 'existing' });
  if (command.database) {
    requireDatabaseUrlInProduction(config);
    const { describeDatabase } = await import('../db/database.js');
    process.stderr.write(`database: ${describeDatabase(config)}\n`);
  }
  return command.run({ config, positionals: parsed.positionals, values: parsed.values });
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  // Every failure is one line; the stack only at LOG_LEVEL=debug or trace.
  const message = err instanceof ConfigError ? `configuration error: ${err.message}` : ((err as Error)?.message ?? String(err)).split('\n')[0];
  process.stderr.write(`sotalk: ${message}\n`);
  const expected = err instanceof ConfigError || err instanceof CommandError || err instanceof ApiError;
  if (!expected && /^(debug|trace)$/i.test(process.env.LOG_LEVEL ?? '')) {
    process.stderr.write(`${(err as Error)?.stack ?? ''}\n`);
  }
  process.exit(1);
}
