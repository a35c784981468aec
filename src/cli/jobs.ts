import type { Config } from '../config.js';
import type { Invocation } from './main.js';
import { checkMigrateAction, CommandError, uuidArgument } from './arguments.js';
import { MessageCipher } from '../cipher/message-cipher.js';
import { describeDatabase, openDatabase, untilReachable, type Database } from '../db/database.js';
import { INSTANCE_STALE_S, instanceRows, isLive, type InstanceRow } from '../db/instances.js';
import { migrateDown, migrateUp, migrationStatus } from '../db/migrations.js';
import { keyFingerprint } from '../crypto/kdf.js';
import { KeyVersions } from '../keys/key-versions.js';
import { MasterKeyring } from '../keys/keyring.js';
import { SearchKeys } from '../keys/search-keys.js';
import { createLogger } from '../log.js';
import { AuditLog } from '../services/audit-log.js';
import { KeyJobs, type Progress, type ReencryptReport } from '../services/key-jobs.js';

/**
 * Progress on stderr: the first update at once (the job has started: 0/total), then at most once a
 * second: done / total, rate and time left.
 */
export function progressPrinter(label: string, stream: NodeJS.WritableStream = process.stderr, now: () => number = () => performance.now()): Progress {
  const started = now();
  // Not 0: performance.now() counts from the process's start, so a job that began within its first
  // second would have had its opening line swallowed.
  let last = -Infinity;
  const line = (done: number, total: number) => {
    const seconds = (now() - started) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    const pct = total > 0 ? ((100 * done) / total).toFixed(1) : '100.0';
    const left = rate > 0 && done < total ? `, ~${Math.ceil((total - done) / rate)} s left` : '';
    return `${label}: ${done}/${total} (${pct}%), ${Math.round(rate)} msg/s${left}`;
  };
  return {
    update(done, total) {
      const at = now();
      if (at - last < 1000) return;
      last = at;
      stream.write(line(done, total) + '\n');
    },
    finish(done, total) {
      stream.write(`${line(done, total)} — done in ${((now() - started) / 1000).toFixed(1)} s\n`);
    },
  };
}

const quiet = createLogger('silent');

/** The database, reachable or a one-line error (a command does not wait for it like the server does). */
async function withDatabase<T>(config: Config, fn: (db: Database) => Promise<T>): Promise<T> {
  const db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, maxConnections: 4 });
  try {
    await untilReachable(() => db.pool.query('SELECT 1'), describeDatabase(config), quiet, 0);
    return await fn(db);
  } finally {
    await db.close();
  }
}

/** `master keys: active <fp>, old <fp>, …` on stderr. */
function printKeys(config: Config): void {
  const old = config.oldMasterKeys.map((k) => keyFingerprint(k));
  process.stderr.write(`master keys: active ${keyFingerprint(config.masterKey)}${old.length ? `, old ${old.join(', ')}` : ''}\n`);
}

async function withJobs<T>(config: Config, fn: (jobs: KeyJobs) => Promise<T>): Promise<T> {
  printKeys(config);
  const logger = createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel);
  return withDatabase(config, async (db) => {
    const keyring = new MasterKeyring(config.masterKey, config.oldMasterKeys);
    const cipher = new MessageCipher({ keyring, poolSize: config.cryptoPoolSize, inlineMax: config.cryptoInlineMax });
    const audit = new AuditLog({ pool: db.pool, logger, clock: () => new Date() });
    try {
      // A job needs the current schema; applying it is never silent.
      const applied = await migrateUp(db.pool);
      if (applied.length > 0) process.stderr.write(`migrations applied first: ${applied.join(', ')}\n`);
      const keys = new KeyVersions(db.pool, keyring, () => new Date(), { maxMessages: config.keyRotationMessages, maxAgeS: config.keyRotationMaxAgeS });
      const search = config.searchEnabled ? new SearchKeys(keyring) : null;
      return await fn(new KeyJobs({ pool: db.pool, cipher, keys, keyring, audit, logger, embedded: db.embedded, search }));
    } finally {
      await audit.close();
      await cipher.close();
    }
  });
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

const describeInstance = (i: InstanceRow) => `${i.host} pid ${i.pid} (active key ${i.active_fingerprint})`;

/** The instances' rows, or none when the table does not exist yet (a database migrated below it). */
async function instancesIfTracked(db: Database): Promise<InstanceRow[]> {
  const { rows } = await db.pool.query<{ t: string | null }>("SELECT to_regclass('instances')::text AS t");
  return rows[0]?.t ? instanceRows(db.pool) : [];
}

const liveInstancesIfTracked = async (db: Database) => (await instancesIfTracked(db)).filter(isLive);

const describeSilent = (i: InstanceRow) => `${i.host} pid ${i.pid} (last seen ${Math.round(i.seen_s_ago)} s ago, active key ${i.active_fingerprint})`;

export async function migrateCommand({ config, positionals, values }: Invocation): Promise<number> {
  const action = positionals[0];
  checkMigrateAction(action);
  return withDatabase(config, async (db) => {
    if (action === 'up') {
      const applied = await migrateUp(db.pool);
      process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'nothing to apply\n');
    } else if (action === 'down') {
      const newest = (await migrationStatus(db.pool)).filter((m) => m.appliedAt).at(-1);
      if (!newest) {
        process.stdout.write('nothing to revert\n');
        return 0;
      }
      const name = `${String(newest.version).padStart(4, '0')}_${newest.name}`;
      const live = await liveInstancesIfTracked(db);
      if (live.length > 0 && !values.yes) {
        throw new CommandError(
          `migrate down would revert ${name} while ${live.length} live instance(s) use this database (${live.map(describeInstance).join('; ')}); stop them or pass --yes`,
        );
      }
      process.stdout.write(`reverting ${name}\n`);
      const reverted = await migrateDown(db.pool);
      process.stdout.write(reverted === null ? 'nothing to revert\n' : `reverted: ${reverted}\n`);
    } else {
      for (const m of await migrationStatus(db.pool)) {
        const when = m.appliedAt ? `applied ${m.appliedAt.toISOString()}` : 'pending';
        process.stdout.write(`${String(m.version).padStart(4, '0')}_${m.name}  ${when}\n`);
      }
    }
    return 0;
  });
}

export async function rotateMasterCommand({ config, values }: Invocation): Promise<number> {
  const target = keyFingerprint(config.masterKey);
  const rows = await withDatabase(config, instancesIfTracked);
  const live = rows.filter(isLive);
  const lacking = live.filter((i) => !i.key_fingerprints.includes(target));
  if (lacking.length > 0 && !values.force) {
    throw new CommandError(
      `rotate-master: ${lacking.length} live instance(s) do not hold the active key ${target}, so they could not read what is re-encrypted: ${lacking.map(describeInstance).join('; ')}; finish phase 1 of the rotation (docs/operations.md) or pass --force`,
    );
  }
  // Not seen for over INSTANCE_STALE_S: stopped without removing its row (kill -9), or cut off from
  // the database — then it comes back without the key. Said, not refused: only the operator knows.
  for (const i of rows.filter((x) => !isLive(x) && !x.key_fingerprints.includes(target))) {
    process.stderr.write(`rotate-master: note: ${describeSilent(i)} does not hold ${target}; make sure it is gone, not only cut off from the database\n`);
  }
  for (const i of live.filter((x) => x.active_fingerprint !== target && x.key_fingerprints.includes(target))) {
    process.stderr.write(`rotate-master: note: ${describeInstance(i)} still creates key versions under its old active key; run rotate-master again after phase 2\n`);
  }
  return withJobs(config, async (jobs) => printReport(await jobs.rotateMaster(progressPrinter('rotate-master'))));
}

export async function rotateConversationCommand({ config, positionals, values }: Invocation): Promise<number> {
  const id = uuidArgument(positionals[0], 'conversation_id');
  return withJobs(config, async (jobs) => {
    const { version, report } = await jobs.rotateConversation(id, values.reencrypt === true, progressPrinter('rotate-conversation'));
    process.stdout.write(`conversation ${id}: key version ${version} is current\n`);
    return report ? printReport(report) : 0;
  });
}

export async function verifyCommand({ config }: Invocation): Promise<number> {
  return withJobs(config, async (jobs) => {
    const report = await jobs.verify(
      progressPrinter('verify'),
      (id) => process.stdout.write(`integrity failure: ${id}\n`),
      (id) => process.stdout.write(`search index mismatch: ${id}\n`),
    );
    process.stdout.write(`checked ${report.checked} messages, ${report.failed.length} failed, ${report.indexMismatches.length} search index mismatches\n`);
    const active = keyFingerprint(config.masterKey);
    for (const f of report.fingerprints) {
      const role = !f.held ? 'not held by this process' : f.fingerprint === active ? 'active' : 'old';
      process.stdout.write(`master key ${f.fingerprint}: ${f.needed ? 'needed' : 'not needed'} (${role})\n`);
    }
    return report.failed.length || report.indexMismatches.length ? 1 : 0;
  });
}

/** The live instances and the keys they hold, against this environment's active key. */
export async function instancesCommand({ config }: Invocation): Promise<number> {
  printKeys(config);
  const active = keyFingerprint(config.masterKey);
  const rows = await withDatabase(config, instancesIfTracked);
  const live = rows.filter(isLive);
  const silent = rows.filter((i) => !isLive(i));
  const printSilent = () => {
    if (silent.length === 0) return;
    process.stdout.write(`not seen for over ${INSTANCE_STALE_S} s (stopped without removing its row, or cut off from the database):\n`);
    for (const i of silent) process.stdout.write(`  ${describeSilent(i)}${i.key_fingerprints.includes(active) ? '' : `, does not hold ${active}`}\n`);
  };
  if (live.length === 0) {
    process.stdout.write(`no live instances (none seen within ${INSTANCE_STALE_S} s)\n`);
    printSilent();
    return 0;
  }
  const table = [
    ['host', 'pid', 'started', 'seen', 'active key', 'old keys'],
    ...live.map((i) => [
      i.host,
      String(i.pid),
      i.started_at.toISOString(),
      `${Math.max(0, Math.round(i.seen_s_ago))} s ago`,
      i.active_fingerprint,
      i.key_fingerprints.filter((f) => f !== i.active_fingerprint).join(',') || '-',
    ]),
  ];
  const widths = table[0]!.map((_, c) => Math.max(...table.map((row) => row[c]!.length)));
  for (const row of table) process.stdout.write(row.map((cell, c) => cell.padEnd(widths[c]!)).join('  ').trimEnd() + '\n');
  const holding = live.filter((i) => i.key_fingerprints.includes(active)).length;
  const using = live.filter((i) => i.active_fingerprint === active).length;
  process.stdout.write(`active key ${active}: held by ${holding} of ${live.length} live instance(s), active on ${using}\n`);
  printSilent();
  return 0;
}

export async function reindexCommand({ config, values }: Invocation): Promise<number> {
  if (!config.searchEnabled) throw new CommandError('reindex: search is disabled (SEARCH_ENABLED=false)');
  const conversationId = values.conversation === undefined ? undefined : uuidArgument(values.conversation as string, '--conversation');
  return withJobs(config, async (jobs) => {
    const result = await jobs.reindex(conversationId, values.all === true, progressPrinter('reindex'));
    process.stdout.write(`indexed ${result.indexed} of ${result.total} messages\n`);
    for (const id of result.failed) process.stdout.write(`integrity failure: ${id}\n`);
    return result.failed.length ? 1 : 0;
  });
}

/** Raised inside the export when stdout's reader went away (`| head`): the export ends quietly. */
class PipeClosed extends Error {}

export async function exportCommand({ config, positionals }: Invocation): Promise<number> {
  const id = uuidArgument(positionals[0], 'conversation_id');
  let pipeClosed = false;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    pipeClosed = true;
  });
  const progress = progressPrinter('export');
  let failed = 0;
  try {
    return await withJobs(config, async (jobs) => {
      const count = await jobs.export(
        id,
        (message) => {
          if (pipeClosed) throw new PipeClosed();
          if (message.integrity_error) failed++;
          if (!process.stdout.write(JSON.stringify(message) + '\n')) {
            return new Promise<void>((resolve) => {
              process.stdout.once('drain', resolve);
              process.stdout.once('error', () => resolve());
            });
          }
        },
        (done, total) => progress.update(done, total),
      );
      if (count.total > 0) progress.finish(count.exported, count.total);
      process.stderr.write(`exported ${count.exported} messages${failed ? `, ${failed} could not be decrypted (integrity_error: true)` : ''}\n`);
      return failed ? 1 : 0;
    });
  } catch (err) {
    if (err instanceof PipeClosed) return 0;
    throw err;
  }
}
