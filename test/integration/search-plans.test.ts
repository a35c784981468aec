// The plans of a search (src/db/search.ts): the newest index entries, the GIN probe (rare words)
// and the walk of the recency index (common words) give the same pages, cursors included.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { selectSearchPage } from '../../src/db/search.js';
import { MasterKeyring } from '../../src/keys/keyring.js';
import { SearchKeys } from '../../src/keys/search-keys.js';
import { signIn, startTestServer, TEST_MASTER_KEY_B64, type SignedInUser, type TestServer } from '../helpers/server.js';

let srv: TestServer;
let a: SignedInUser;
let b: SignedInUser;
const conversations: string[] = [];
const keys = new SearchKeys(new MasterKeyring(Buffer.from(TEST_MASTER_KEY_B64, 'base64')));

beforeAll(async () => {
  srv = await startTestServer();
  [a, b] = await Promise.all([signIn(srv.baseUrl), signIn(srv.baseUrl)]);
  for (let c = 0; c < 3; c++) {
    const res = await a!.api.post('/api/v1/conversations', { type: 'group', title: `g${c}`, member_ids: [b!.user.id] });
    conversations.push(res.body.conversation.id);
  }
  const vocabulary = ['alpha', 'beta', 'gamma', 'delta', 'common'];
  for (let i = 0; i < 60; i++) {
    const words = ['common', vocabulary[i % 4]!, vocabulary[(i * 7) % 4]!, randomBytes(3).toString('hex')];
    const res = await (i % 2 ? a! : b!).api.post('/api/v1/messages', { conversation_id: conversations[i % 3], content: words.join(' ') });
    expect(res.status).toBe(201);
  }
}, 60_000);

afterAll(async () => {
  await srv?.close();
});

describe('search plans', () => {
  it.each([['common'], ['alpha'], ['common beta'], ['gamma delta'], ['nothing']])('"%s": probe and walk pages agree, page after page', async (q) => {
    const words = q.split(' ');
    const tokens = keys.queryTokens(conversations, words);
    for (const limit of [1, 7, 25]) {
      const pages: string[][][] = [];
      for (const [probeLimit, recentWindow] of [[100_000, 2000], [100_000, 1], [2, 1], [2, 5]] as const) {
        const seen: string[][] = [];
        let before: { createdUs: number; id: string } | undefined;
        for (let n = 0; n < 100; n++) {
          const rows = await selectSearchPage(srv.pool, tokens, words.length, before, limit, probeLimit, recentWindow);
          seen.push(rows.map((r) => r.id));
          if (rows.length < limit) break;
          const last = rows[rows.length - 1]!;
          before = { createdUs: Number(last.created_us), id: last.id };
        }
        pages.push(seen);
      }
      for (let i = 1; i < pages.length; i++) expect(pages[i], `limit ${limit}, plan ${i}`).toEqual(pages[0]);
    }
  });
});
