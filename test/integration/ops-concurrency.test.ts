// Operations and reliability: concurrent writers in one conversation (what the soak does, made
// small and deterministic). Sends, edits, receipts and deletes racing each other must never answer
// 500: Postgres lock conflicts are the server's to order (or retry), not the client's problem.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signIn, startTestServer, type SignedInUser, type TestServer } from '../helpers/server.js';

let srv: TestServer;
let a: SignedInUser;
let b: SignedInUser;

beforeAll(async () => {
  srv = await startTestServer({ env: { RATE_LIMIT_SEND_PER_MIN: '0', RATE_LIMIT_EDIT_PER_MIN: '0', RATE_LIMIT_RECEIPT_PER_MIN: '0' } });
  [a, b] = await Promise.all([signIn(srv.baseUrl), signIn(srv.baseUrl)]);
});

afterAll(async () => {
  await srv?.close();
});

describe('concurrent writers in one conversation', () => {
  it('sends racing edits (and receipts) never answer 500', async () => {
    const group = await a.api.post('/api/v1/conversations', { type: 'group', title: 'race', member_ids: [b.user.id] });
    const g: string = group.body.conversation.id;
    const own: Record<string, string[]> = { a: [], b: [] };
    for (let i = 0; i < 10; i++) {
      for (const [name, u] of [['a', a], ['b', b]] as const) {
        const r = await u.api.post('/api/v1/messages', { conversation_id: g, content: `seed ${name} ${i}` });
        own[name]!.push(r.body.message.id);
      }
    }
    const statuses = new Map<string, number>();
    const count = (what: string, status: number) => statuses.set(`${what} ${status}`, (statuses.get(`${what} ${status}`) ?? 0) + 1);
    const deadline = Date.now() + 8000;
    const loop = async (fn: (i: number) => Promise<void>) => {
      for (let i = 0; Date.now() < deadline; i++) await fn(i);
    };
    await Promise.all([
      ...[a, b, a, b].map((u, w) =>
        loop(async (i) => {
          const r = await u.api.post('/api/v1/messages', { conversation_id: g, content: `send ${w} ${i}` });
          count('send', r.status);
        }),
      ),
      ...([['a', a], ['b', b], ['a', a], ['b', b]] as const).map(([name, u], w) =>
        loop(async (i) => {
          const list = own[name]!;
          const r = await u.api.patch(`/api/v1/messages/${list[(i * 7 + w) % list.length]}`, { content: `edit ${w} ${i}` });
          count('edit', r.status);
        }),
      ),
      loop(async () => {
        const conv = await b.api.get(`/api/v1/conversations/${g}`);
        const r = await b.api.post(`/api/v1/conversations/${g}/read`, { seq: conv.body.conversation.last_seq });
        count('read', r.status);
      }),
    ]);
    const summary = Object.fromEntries(statuses);
    console.log(`[ops] concurrent writers: ${JSON.stringify(summary)}`);
    expect(Object.keys(summary).filter((k) => !/ 20[01]$/.test(k)), JSON.stringify(summary)).toEqual([]);
    expect((summary['send 201'] ?? 0) + (summary['edit 200'] ?? 0)).toBeGreaterThan(50);
  }, 60_000);
});
