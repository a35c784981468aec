import type { Config } from '../config.js';
import { MessageCipher } from '../cipher/message-cipher.js';
import { openDatabase } from '../db/database.js';
import { migrateUp } from '../db/migrations.js';
import { UUID_PATTERN } from '../http/validation.js';
import { KeyVersions } from '../keys/key-versions.js';
import { MasterKeyring } from '../keys/keyring.js';
import { SearchKeys } from '../keys/search-keys.js';
import { createLogger } from '../log.js';
import { AuditLog } from '../services/audit-log.js';
import { KeyJobs, type Progress, type ReencryptReport } from '../services/key-jobs.js';

/** Progress on stderr, at most once a second: done / total, rate and time left. */
export function progressPrinter(label: string, stream: NodeJS.WritableStream = process.stderr): Progress {
  const started = performance.now();
  let last = 0;
  const line = (done: number, total: number) => {
    const seconds = (performance.now() - started) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    const pct = total > 0 ? ((100 * done) / total).toFixed(1) : '100.0';
    const left = rate > 0 ? `, ~${Math.ceil((total - done) / rate)} s left` : '';
    return `${label}: ${done}/${total} (${pct}%), ${Math.round(rate)} msg/s${left}`;
  };
  return {
    update(done, total) {
      const now = performance.now();
      if (now - last < 1000) return;
      last = now;
      stream.write(line(done, total) + '\n');
    },
    finish(done, total) {
      stream.write(`${line(done, total)} — done in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
    },
  };
}

async function withJobs<T>(config: Config, fn: (jobs: KeyJobs) => Promise<T>): Promise<T> {
  const logger = createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel);
  const db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  const keyring = new MasterKeyring(config.masterKey, config.oldMasterKeys);
  const cipher = new MessageCipher({ keyring, poolSize: config.cryptoPoolSize, inlineMax: config.cryptoInlineMax });
  const audit = new AuditLog({ pool: db.pool, logger, clock: () => new Date() });
  try {
    await migrateUp(db.pool);
    const keys = new KeyVersions(db.pool, keyring, () => new Date(), { maxMessages: config.keyRotationMessages, maxAgeS: config.keyRotationMaxAgeS });
    const search = config.searchEnabled ? new SearchKeys(keyring) : null;
    return await fn(new KeyJobs({ pool: db.pool, cipher, keys, keyring, audit, logger, embedded: db.embedded, search }));
  } finally {
    await audit.close();
    await cipher.close();
    await db.close();
  }
}

function printReport(report: ReencryptReport): number {
  process.stdout.write(
    `re-encrypted ${report.reencrypted} of ${report.total} messages` +
      (report.skipped ? `, ${report.skipped} changed meanwhile (left as written)` : '') +
      (report.failed.length ? `, ${report.failed.length} could not be decrypted` : '') +
      '\n',
  );
  for (const id of report.failed) process.stdout.write(`integrity failure: ${id}\n`);
  return report.failed.length ? 1 : 0;
}

function requireUuid(value: string | undefined, usage: string): string {
  if (!value || !UUID_PATTERN.test(value)) {
    process.stderr.write(`usage: ${usage}\n`);
    process.exit(2);
  }
  return value.toLowerCase();
}

export async function rotateMasterCommand(config: Config): Promise<number> {
  return withJobs(config, async (jobs) => printReport(await jobs.rotateMaster(progressPrinter('rotate-master'))));
}

export async function rotateConversationCommand(config: Config, args: string[]): Promise<number> {
  const id = requireUuid(args.find((a) => !a.startsWith('--')), 'sotalk rotate-conversation <conversation_id> [--reencrypt]');
  const reencrypt = args.includes('--reencrypt');
  return withJobs(config, async (jobs) => {
    const { version, report } = await jobs.rotateConversation(id, reencrypt, progressPrinter('rotate-conversation'));
    process.stdout.write(`conversation ${id}: key version ${version} is current\n`);
    return report ? printReport(report) : 0;
  });
}

export async function verifyCommand(config: Config): Promise<number> {
  return withJobs(config, async (jobs) => {
    const report = await jobs.verify(
      progressPrinter('verify'),
      (id) => process.stdout.write(`integrity failure: ${id}\n`),
      (id) => process.stdout.write(`search index mismatch: ${id}\n`),
    );
    process.stdout.write(`checked ${report.checked} messages, ${report.failed.length} failed, ${report.indexMismatches.length} search index mismatches\n`);
    for (const f of report.fingerprints) {
      process.stdout.write(`master key ${f.fingerprint}: ${f.needed ? 'needed' : 'not needed'}${f.held ? '' : ' (not held by this process)'}\n`);
    }
    return report.failed.length || report.indexMismatches.length ? 1 : 0;
  });
}

export async function reindexCommand(config: Config, args: string[]): Promise<number> {
  const at = args.indexOf('--conversation');
  const conversationId = at >= 0 ? requireUuid(args[at + 1], 'sotalk reindex [--conversation <id>] [--all]') : undefined;
  return withJobs(config, async (jobs) => {
    const result = await jobs.reindex(conversationId, args.includes('--all'), progressPrinter('reindex'));
    process.stdout.write(`indexed ${result.indexed} of ${result.total} messages\n`);
    for (const id of result.failed) process.stdout.write(`integrity failure: ${id}\n`);
    return result.failed.length ? 1 : 0;
  });
}

export async function exportCommand(config: Config, args: string[]): Promise<number> {
  const id = requireUuid(args[0], 'sotalk export <conversation_id>');
  return withJobs(config, async (jobs) => {
    const count = await jobs.export(id, (message) => {
      if (!process.stdout.write(JSON.stringify(message) + '\n')) return new Promise<void>((resolve) => process.stdout.once('drain', () => resolve()));
    });
    process.stderr.write(`exported ${count} messages\n`);
    return 0;
  });
}
