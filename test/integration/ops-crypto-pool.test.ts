// Operations and reliability: the crypto worker pool at its smallest (CRYPTO_POOL_SIZE=1) with
// every batch sent to it (CRYPTO_INLINE_MAX=0): large history pages, concurrent readers and writers
// still work and the server stays healthy. (A worker killed mid-task is covered by
// test/unit/packed-batch.test.ts.)
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signIn, startTestServer, type SignedInUser, type TestServer } from '../helpers/server.js';
import { openSocket } from '../helpers/socket.js';

let srv: TestServer;
let a: SignedInUser;
let b: SignedInUser;
let d: string;
/** seq → content, for everything sent. */
const sent = new Map<number, string>();

const sample = (metrics: string, re: RegExp) => Number(re.exec(metrics)?.[1] ?? NaN);

async function bounded(count: number, limit: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < count) await task(next++);
    }),
  );
}

beforeAll(async () => {
  srv = await startTestServer({
    env: {
      CRYPTO_POOL_SIZE: '1',
      CRYPTO_INLINE_MAX: '0',
      RATE_LIMIT_SEND_PER_MIN: '0',
      // every page is decrypted, none served from the cache
      HISTORY_CACHE_BYTES: '0',
    },
  });
  [a, b] = await Promise.all([signIn(srv.baseUrl), signIn(srv.baseUrl)]);
  d = (await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] })).body.conversation.id;
  // 450 messages: most small, every 10th ~48 KiB, so that a page of 200 is several MiB of plaintext.
  await bounded(450, 8, async (i) => {
    const big = i % 10 === 0;
    const content = `${i}:` + (big ? randomBytes(36 * 1024).toString('base64') : randomBytes(24).toString('hex'));
    const res = await (i % 2 ? a : b).api.post('/api/v1/messages', { conversation_id: d, content });
    expect(res.status, JSON.stringify(res.body).slice(0, 300)).toBe(201);
    sent.set(res.body.message.seq, content);
  });
}, 120_000);

afterAll(async () => {
  await srv?.close();
});

describe('crypto pool of one worker, no inline crypto', () => {
  it('reports the pool size and ran every batch on the pool', async () => {
    const metrics = await (await fetch(`${srv.baseUrl}/metrics`)).text();
    expect(sample(metrics, /^sotalk_crypto_pool_size (\S+)$/m)).toBe(1);
    // 450 encryptions and no inline threshold: every one went through the pool
    expect(sample(metrics, /^sotalk_crypto_task_run_seconds_count (\S+)$/m)).toBeGreaterThan(0);
    expect(sample(metrics, /^sotalk_messages_encrypted_total (\S+)$/m)).toBeGreaterThanOrEqual(450);
  });

  it('pages of 200 walk the whole history backwards and forwards, every message intact', async () => {
    const seen = new Map<number, string>();
    let res = await b.api.get(`/api/v1/conversations/${d}/messages?limit=200`);
    for (;;) {
      expect(res.status).toBe(200);
      for (const m of res.body.messages) {
        expect(m.integrity_error).toBeUndefined();
        seen.set(m.seq, m.content);
      }
      if (!res.body.has_more) break;
      res = await b.api.get(`/api/v1/conversations/${d}/messages?limit=200&before_seq=${res.body.messages[0].seq}`);
    }
    expect(seen.size).toBe(450);
    for (const [seq, content] of sent) expect(seen.get(seq)).toBe(content);

    let after = 0;
    const forward: number[] = [];
    for (;;) {
      const page = await a.api.get(`/api/v1/conversations/${d}/messages?limit=200&after_seq=${after}`);
      expect(page.status).toBe(200);
      forward.push(...page.body.messages.map((m: any) => m.seq));
      if (!page.body.has_more) break;
      after = page.body.messages.at(-1).seq;
    }
    expect(forward).toEqual(Array.from({ length: 450 }, (_, i) => i + 1));
  }, 60_000);

  it('concurrent large pages and sends on one worker: all answered correctly', async () => {
    const sock = await openSocket(srv.baseUrl, a.token);
    try {
      const pages = Array.from({ length: 12 }, (_, i) =>
        (i % 2 ? a : b).api.get(`/api/v1/conversations/${d}/messages?limit=200&before_seq=${451 - (i % 3) * 100}`),
      );
      const sends = Array.from({ length: 20 }, (_, i) => a.api.post('/api/v1/messages', { conversation_id: d, content: `during pages ${i}` }));
      for (let i = 0; i < 10; i++) sock.send({ type: 'send', request_id: `p${i}`, conversation_id: d, content: `socket during pages ${i}` });
      const [pageResults, sendResults] = await Promise.all([Promise.all(pages), Promise.all(sends)]);
      for (const [i, p] of pageResults.entries()) {
        expect(p.status).toBe(200);
        expect(p.body.messages).toHaveLength(200);
        for (const m of p.body.messages) expect(m.content).toBe(sent.get(m.seq));
        expect(p.body.messages.at(-1).seq).toBe(450 - (i % 3) * 100);
      }
      expect(sendResults.map((r) => r.status)).toEqual(Array(20).fill(201));
      for (let i = 0; i < 10; i++) expect((await sock.next((f) => f.request_id === `p${i}`, 15_000)).type).toBe('ack');
    } finally {
      await sock.close();
    }
  }, 60_000);

  it('stays healthy: probes 200, the queue drained, utilization within 0..1', async () => {
    expect((await fetch(`${srv.baseUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${srv.baseUrl}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`${srv.baseUrl}/metrics`)).text();
    expect(sample(metrics, /^sotalk_crypto_pool_queue_depth (\S+)$/m)).toBe(0);
    const util = sample(metrics, /^sotalk_crypto_pool_utilization (\S+)$/m);
    expect(util).toBeGreaterThanOrEqual(0);
    expect(util).toBeLessThanOrEqual(1);
    expect(sample(metrics, /^sotalk_messages_decrypted_total (\S+)$/m)).toBeGreaterThanOrEqual(450 * 2);
    expect(sample(metrics, /^sotalk_integrity_errors_total (\S+)$/m)).toBe(0);
    expect(metrics).not.toMatch(/^sotalk_http_requests_total\{[^}]*status="5\d\d"\}/m);
    // a last round trip
    const m = await a.api.post('/api/v1/messages', { conversation_id: d, content: 'still fine' });
    expect(m.status).toBe(201);
    expect((await b.api.get(`/api/v1/conversations/${d}/messages?limit=1`)).body.messages[0].content).toBe('still fine');
  });
});
