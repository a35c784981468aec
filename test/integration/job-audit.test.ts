// Integration test: the long jobs (src/services/key-jobs.ts) put a batch's decryptions on record
// before they do anything with its plaintext. The audit log batches rows (50 ms); a job killed
// right after committing a batch once left that batch's decryptions unaudited (search-cli's
// SIGKILL test caught it in CI). Here the log's timer is an hour, so only an explicit flush
// can have written the rows.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MessageCipher } from '../../src/cipher/message-cipher.js';
import { KeyVersions } from '../../src/keys/key-versions.js';
import { MasterKeyring } from '../../src/keys/keyring.js';
import { SearchKeys } from '../../src/keys/search-keys.js';
import { createLogger } from '../../src/log.js';
import { AuditLog } from '../../src/services/audit-log.js';
import { KeyJobs, type Progress } from '../../src/services/key-jobs.js';
import { TEST_MASTER_KEY_B64, signIn, startTestServer, type TestServer } from '../helpers/server.js';

let s: TestServer;
let conversationId: string;
const MESSAGES = 25;

beforeAll(async () => {
  s = await startTestServer();
  const [a, b] = await Promise.all([signIn(s.baseUrl), signIn(s.baseUrl)]);
  const conv = await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] });
  conversationId = conv.body.conversation.id;
  for (let i = 0; i < MESSAGES; i++) expect((await a.api.post('/api/v1/messages', { conversation_id: conversationId, content: `audited ${i}` })).status).toBe(201);
});

afterAll(async () => {
  await s?.close();
});

describe('long jobs and the decryption audit', () => {
  it('reindex, verify and export: when a batch is done, its decryptions are already written', async () => {
    const keyring = new MasterKeyring(Buffer.from(TEST_MASTER_KEY_B64, 'base64'));
    const cipher = new MessageCipher({ keyring, poolSize: 0, inlineMax: 1_000_000 });
    const audit = new AuditLog({ pool: s.pool, logger: createLogger('silent'), clock: () => new Date(), flushIntervalMs: 3_600_000, maxBatch: 1_000_000 });
    const jobs = new KeyJobs({
      pool: s.pool,
      cipher,
      keys: new KeyVersions(s.pool, keyring, () => new Date()),
      keyring,
      audit,
      logger: createLogger('silent'),
      search: new SearchKeys(keyring),
      batchSize: 10,
    });
    // the rows waiting in the log each time a job reports a finished batch
    const waiting: number[] = [];
    const progress: Progress = { update: (done) => void (done > 0 && waiting.push(audit.backlog)), finish: () => {} };
    try {
      const reindexed = await jobs.reindex(conversationId, true, progress);
      expect(reindexed.indexed).toBe(MESSAGES);
      const verified = await jobs.verify(progress, () => {});
      expect(verified.failed).toEqual([]);
      let exported = 0;
      await jobs.export(conversationId, () => void exported++, (done) => void (done > 0 && waiting.push(audit.backlog)));
      expect(exported).toBe(MESSAGES);
      expect(waiting.length).toBeGreaterThanOrEqual(3 * 2); // batches of 10 of 25 messages, three jobs
      expect(waiting.every((n) => n === 0), `rows still waiting at each batch: ${waiting.join(', ')}`).toBe(true);
      const { rows } = await s.pool.query<{ purpose: string; n: number }>(
        `SELECT purpose, sum(message_count)::int AS n FROM decryption_audit WHERE actor_id IS NULL GROUP BY 1 ORDER BY 1`,
      );
      expect(rows).toEqual([
        { purpose: 'export', n: MESSAGES },
        { purpose: 'reindex', n: MESSAGES },
        { purpose: 'verify', n: MESSAGES },
      ]);
    } finally {
      await audit.close();
      await cipher.close();
    }
  });
});
