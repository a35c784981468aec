import Cursor from 'pg-cursor';
import type pg from 'pg';
import type { MessageCipher } from '../cipher/message-cipher.js';
import { listMembers, rotateConversationKey } from '../db/conversations.js';
import {
  STREAM_COLUMNS,
  STREAM_FROM,
  replaceCiphertexts,
  replaceSearchTokens,
  selectSearchTokens,
  type MessageRow,
  type Reencrypted,
} from '../db/messages.js';
import type { SearchKeys } from '../keys/search-keys.js';
import { withClient, withTransaction } from '../db/transaction.js';
import type { KeyRef } from '../keys/conversation-keys.js';
import type { KeyVersions } from '../keys/key-versions.js';
import type { MasterKeyring } from '../keys/keyring.js';
import { ApiError } from '../errors.js';
import type { Logger } from '../log.js';
import type { AuditLog } from './audit-log.js';
import { ReceiptView, toMessage, type Message } from './message-view.js';

export interface Progress {
  /** Called after each batch with the running totals. */
  update(done: number, total: number): void;
  finish(done: number, total: number): void;
}

export interface KeyJobsOptions {
  pool: pg.Pool;
  cipher: MessageCipher;
  keys: KeyVersions;
  keyring: MasterKeyring;
  audit: AuditLog;
  logger: Logger;
  batchSize?: number;
  /**
   * Embedded PGlite is one session: a cursor cannot stay open while batches commit, so rows are
   * paged by key instead (same batches, same bounded memory).
   */
  embedded?: boolean;
  /** Blind index to keep in step (null when SEARCH_ENABLED=false). */
  search?: SearchKeys | null;
}

export interface ReencryptReport {
  total: number;
  reencrypted: number;
  /** Changed by an edit or delete while the job ran (the newer write won). */
  skipped: number;
  /** Messages that could not be decrypted (corrupt, or their master key is not held). */
  failed: string[];
}

export interface VerifyReport {
  checked: number;
  failed: string[];
  /** Messages whose stored search tokens do not match their plaintext (or that are not indexed). */
  indexMismatches: string[];
  /** Every master-key fingerprint held or referenced, and whether any message still needs it. */
  fingerprints: { fingerprint: string; needed: boolean; held: boolean }[];
}

const aadOf = (r: Pick<MessageRow, 'conversation_id' | 'id' | 'sender_id'>) => `${r.conversation_id}:${r.id}:${r.sender_id}`;
const keyRefOf = (r: MessageRow): KeyRef | undefined =>
  r.key_version === null || r.created_unix_seconds === null || !r.master_key_fingerprint
    ? undefined
    : { conversationId: r.conversation_id, version: r.key_version, createdUnixSeconds: r.created_unix_seconds, fingerprint: r.master_key_fingerprint };

/**
 * Long jobs over every message (CLI): re-encryption for key rotation, verification, export.
 * Each streams rows with pg-cursor in batches (bounded memory), decrypts and encrypts through
 * the worker pool and audits every decryption with its purpose.
 */
export class KeyJobs {
  readonly #o: KeyJobsOptions;
  readonly #batch: number;

  constructor(options: KeyJobsOptions) {
    this.#o = options;
    this.#batch = options.batchSize ?? 500;
  }

  async #stream(where: string, params: unknown[], order: 'm.id' | 'm.seq', fn: (rows: MessageRow[]) => Promise<void>, from = STREAM_FROM): Promise<void> {
    if (this.#o.embedded) {
      let last: unknown = null;
      const n = params.length;
      for (;;) {
        const { rows } = await this.#o.pool.query<MessageRow>(
          `SELECT ${STREAM_COLUMNS} ${from} WHERE (${where}) AND ($${n + 1}::${order === 'm.id' ? 'uuid' : 'bigint'} IS NULL OR ${order} > $${n + 1})
           ORDER BY ${order} LIMIT ${this.#batch}`,
          [...params, last],
        );
        if (rows.length === 0) return;
        await fn(rows);
        const tail = rows[rows.length - 1]!;
        last = order === 'm.id' ? tail.id : tail.seq;
      }
    }
    await withClient(this.#o.pool, async (client) => {
      const cursor = client.query(new Cursor<MessageRow>(`SELECT ${STREAM_COLUMNS} ${from} WHERE ${where} ORDER BY ${order}`, params));
      try {
        for (let rows = await cursor.read(this.#batch); rows.length > 0; rows = await cursor.read(this.#batch)) await fn(rows);
      } finally {
        await cursor.close();
      }
    });
  }

  async #count(where: string, params: unknown[]): Promise<number> {
    const { rows } = await this.#o.pool.query<{ n: number }>(`SELECT count(*)::int AS n ${STREAM_FROM} WHERE ${where}`, params);
    return rows[0]!.n;
  }

  /**
   * Decrypts a batch; returns plaintexts (null on failure) and audits the successes — written
   * before the plaintexts are used, so a job killed after committing a batch (or writing it out)
   * has left its audit rows: one insert per batch, nothing for the log's timer to lose.
   */
  async #open(rows: MessageRow[], purpose: 'reencrypt' | 'verify' | 'export' | 'reindex'): Promise<(Buffer | null)[]> {
    const jobs = rows.map((r) => ({ key: keyRefOf(r), aad: aadOf(r), nonce: r.nonce ?? Buffer.alloc(0), ciphertext: r.content ?? Buffer.alloc(0), tag: r.tag ?? Buffer.alloc(0) }));
    const known = jobs.flatMap((j, i) => (j.key ? [{ i, job: { ...j, key: j.key } }] : []));
    const opened = await this.#o.cipher.open(known.map((k) => k.job));
    const plain: (Buffer | null)[] = rows.map(() => null);
    known.forEach((k, n) => (plain[k.i] = opened[n]!));
    const served = new Map<string, number>();
    rows.forEach((r, i) => {
      if (plain[i]) served.set(r.conversation_id, (served.get(r.conversation_id) ?? 0) + 1);
    });
    for (const [conversationId, count] of served) this.#o.audit.record(null, conversationId, count, purpose, null);
    await this.#o.audit.flush();
    return plain;
  }

  async #reencrypt(where: string, params: unknown[], progress: Progress): Promise<ReencryptReport> {
    const report: ReencryptReport = { total: await this.#count(where, params), reencrypted: 0, skipped: 0, failed: [] };
    let done = 0;
    progress.update(0, report.total);
    await this.#stream(where, params, 'm.id', async (rows) => {
      const plain = await this.#open(rows, 'reencrypt');
      const targets = new Map<string, KeyRef>();
      const current = await this.#o.pool.query<{ id: string; v: number }>('SELECT id, current_key_version AS v FROM conversations WHERE id = ANY($1::uuid[])', [
        [...new Set(rows.map((r) => r.conversation_id))],
      ]);
      for (const c of current.rows) targets.set(c.id, await this.#o.keys.forEncryption(c.id, c.v));
      const todo = rows.flatMap((r, i) => (plain[i] && targets.get(r.conversation_id) ? [{ row: r, plaintext: plain[i]!, key: targets.get(r.conversation_id)! }] : []));
      for (const [i, r] of rows.entries()) if (!plain[i]) report.failed.push(r.id);
      const sealed = await this.#o.cipher.seal(todo.map((t) => ({ key: t.key, aad: aadOf(t.row), plaintext: t.plaintext })));
      // The blind index moves to the active master key with the ciphertexts (same transaction).
      const search = this.#o.search;
      const index = new Map(
        search ? todo.map((t) => [t.row.id, { messageId: t.row.id, conversationId: t.row.conversation_id, tokens: search.tokensFor(t.row.conversation_id, t.plaintext.toString('utf8')), fingerprint: search.activeFingerprint }]) : [],
      );
      for (const t of todo) t.plaintext.fill(0);
      const items: Reencrypted[] = todo.map((t, i) => ({
        id: t.row.id,
        oldNonce: t.row.nonce!,
        ciphertext: sealed[i]!.ciphertext,
        nonce: sealed[i]!.nonce,
        tag: sealed[i]!.tag,
        keyVersion: t.key.version,
      }));
      const replaced = await withTransaction(this.#o.pool, async (client) => {
        const ids = await replaceCiphertexts(client, items);
        await replaceSearchTokens(client, ids.flatMap((id) => (index.has(id) ? [index.get(id)!] : [])));
        return ids.length;
      });
      report.reencrypted += replaced;
      report.skipped += items.length - replaced;
      done += rows.length;
      progress.update(done, report.total);
    });
    progress.finish(done, report.total);
    return report;
  }

  /** Re-encrypts every message under a key version of another master key than the active one. */
  rotateMaster(progress: Progress): Promise<ReencryptReport> {
    return this.#reencrypt('k.master_key_fingerprint IS DISTINCT FROM $1', [this.#o.keyring.active.fingerprint], progress);
  }

  /** Creates a new key version for a conversation; with `reencrypt`, moves every message to it. */
  async rotateConversation(conversationId: string, reencrypt: boolean, progress: Progress): Promise<{ version: number; report?: ReencryptReport }> {
    const version = await rotateConversationKey(this.#o.pool, conversationId, this.#o.keyring.active.fingerprint, this.#o.keys.nowUnixSeconds(), 'explicit');
    if (version === undefined) throw new ApiError('not_found', `conversation ${conversationId} not found`);
    if (!reencrypt) return { version };
    const report = await this.#reencrypt('m.conversation_id = $1 AND e.key_version <> $2', [conversationId, version], progress);
    return { version, report };
  }

  /** Decrypts every message; reports failures and which master keys are still needed. */
  async verify(progress: Progress, onFailure: (id: string) => void, onIndexMismatch?: (id: string) => void): Promise<VerifyReport> {
    const total = await this.#count('true', []);
    const report: VerifyReport = { checked: 0, failed: [], indexMismatches: [], fingerprints: [] };
    const search = this.#o.search;
    progress.update(0, total);
    await this.#stream('true', [], 'm.id', async (rows) => {
      const plain = await this.#open(rows, 'verify');
      const stored = search ? await selectSearchTokens(this.#o.pool, rows.map((r) => r.id)) : undefined;
      rows.forEach((r, i) => {
        const p = plain[i];
        if (!p) {
          report.failed.push(r.id);
          onFailure(r.id);
          return;
        }
        if (search && stored) {
          const entry = stored.get(r.id);
          const expected = entry?.fingerprint ? search.tokensUnder(entry.fingerprint, r.conversation_id, p.toString('utf8')) : undefined;
          const same = expected !== undefined && expected.length === entry!.tokens.size && expected.every((t) => entry!.tokens.has(t.toString('hex')));
          if (!same) {
            report.indexMismatches.push(r.id);
            onIndexMismatch?.(r.id);
          }
        }
        p.fill(0);
      });
      report.checked += rows.length;
      progress.update(report.checked, total);
    });
    progress.finish(report.checked, total);
    const { rows } = await this.#o.pool.query<{ fingerprint: string; needed: boolean }>(
      `SELECT k.master_key_fingerprint AS fingerprint,
              EXISTS (SELECT 1 FROM message_encryption_metadata e JOIN messages m ON m.id = e.message_id
                      WHERE m.conversation_id = k.conversation_id AND e.key_version = k.version) AS needed
       FROM conversation_keys k`,
    );
    const needed = new Map<string, boolean>();
    for (const fp of this.#o.keyring.fingerprints()) needed.set(fp, false);
    for (const r of rows) needed.set(r.fingerprint, (needed.get(r.fingerprint) ?? false) || r.needed);
    const held = new Set(this.#o.keyring.fingerprints());
    report.fingerprints = [...needed].map(([fingerprint, n]) => ({ fingerprint, needed: n, held: held.has(fingerprint) }));
    return report;
  }

  /**
   * Rebuilds blind-index tokens under the active master key for every live message not yet
   * indexed under it (or all of one conversation's). Resumable: finished batches are skipped.
   */
  async reindex(conversationId: string | undefined, all: boolean, progress: Progress): Promise<{ total: number; indexed: number; failed: string[] }> {
    const search = this.#o.search;
    if (!search) throw new Error('search is disabled (SEARCH_ENABLED=false)');
    if (conversationId && (await this.#o.pool.query('SELECT 1 FROM conversations WHERE id = $1', [conversationId])).rowCount === 0) {
      throw new ApiError('not_found', `conversation ${conversationId} not found`);
    }
    const from = `${STREAM_FROM} LEFT JOIN message_search_index s ON s.message_id = m.id`;
    const conditions = ['m.deleted_at IS NULL'];
    const params: unknown[] = [];
    if (!all) {
      params.push(search.activeFingerprint);
      conditions.push(`s.master_key_fingerprint IS DISTINCT FROM $${params.length}`);
    }
    if (conversationId) {
      params.push(conversationId);
      conditions.push(`m.conversation_id = $${params.length}`);
    }
    const where = conditions.join(' AND ');
    const { rows: countRows } = await this.#o.pool.query<{ n: number }>(`SELECT count(*)::int AS n ${from} WHERE ${where}`, params);
    const result = { total: countRows[0]!.n, indexed: 0, failed: [] as string[] };
    let done = 0;
    progress.update(0, result.total);
    await this.#stream(
      where,
      params,
      'm.id',
      async (rows) => {
        const plain = await this.#open(rows, 'reindex');
        const entries = rows.flatMap((r, i) => {
          const p = plain[i];
          if (!p) {
            result.failed.push(r.id);
            return [];
          }
          const entry = { messageId: r.id, conversationId: r.conversation_id, tokens: search.tokensFor(r.conversation_id, p.toString('utf8')), fingerprint: search.activeFingerprint };
          p.fill(0);
          return [entry];
        });
        await withTransaction(this.#o.pool, (client) => replaceSearchTokens(client, entries));
        result.indexed += entries.length;
        done += rows.length;
        progress.update(done, result.total);
      },
      from,
    );
    progress.finish(done, result.total);
    return result;
  }

  /** Streams a conversation's messages in seq order, decrypted (audited as `export`). */
  async export(
    conversationId: string,
    write: (message: Message) => Promise<void> | void,
    progress?: (done: number, total: number) => void,
  ): Promise<{ exported: number; total: number }> {
    const exists = await this.#o.pool.query<{ n: number }>(
      'SELECT (SELECT count(*) FROM messages WHERE conversation_id = $1)::int AS n FROM conversations WHERE id = $1',
      [conversationId],
    );
    if (exists.rowCount === 0) throw new ApiError('not_found', `conversation ${conversationId} not found`);
    const total = exists.rows[0]!.n;
    const receipts = new ReceiptView(await listMembers(this.#o.pool, [conversationId]));
    let count = 0;
    // Tombstones have no metadata row: LEFT JOIN here so the export shows them.
    const from = STREAM_FROM.replace('JOIN message_encryption_metadata', 'LEFT JOIN message_encryption_metadata');
    await this.#stream(
      'm.conversation_id = $1',
      [conversationId],
      'm.seq',
      async (rows) => {
        const live = rows.filter((r) => !r.deleted_at);
        const plain = await this.#open(live, 'export');
        const byId = new Map(live.map((r, i) => [r.id, plain[i]]));
        for (const r of rows) {
          const p = byId.get(r.id);
          await write(toMessage(r, p ? p.toString('utf8') : null, receipts.statusOf(r.sender_id, r.seq), !r.deleted_at && !p));
          count++;
        }
        progress?.(count, total);
      },
      from,
    );
    return { exported: count, total };
  }
}
