// auth_challenges stays bounded under a flood of challenges for fresh wallets: expired ones are
// pruned deterministically (every 100 challenges), not by chance (docs/design.md, Data).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { apiClient } from '../helpers/http.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { newWallet } from '../helpers/wallet.js';

let srv: TestServer;
let now = Date.parse('2026-01-01T00:00:00Z');

beforeAll(async () => {
  srv = await startTestServer({ env: { RATE_LIMIT_SIGNIN_PER_MIN: '0', RATE_LIMIT_SIGNIN_PER_ADDRESS_PER_MIN: '0' }, deps: { clock: () => new Date(now) } });
});

afterAll(async () => {
  await srv?.close();
});

async function challenges(n: number): Promise<void> {
  const anon = apiClient(srv.baseUrl);
  for (let i = 0; i < n; i++) expect((await anon.post('/api/v1/auth/challenge', { wallet: newWallet().address })).status).toBe(200);
}

const count = async () => (await srv.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM auth_challenges')).rows[0]!.n;

it('challenges expired over an hour ago are gone after at most 100 more challenges', async () => {
  await challenges(250);
  expect(await count()).toBe(250);
  now += 2 * 3600_000; // all 250 expired more than an hour ago
  await challenges(100);
  await new Promise((r) => setTimeout(r, 300)); // the prune runs after the answer
  expect(await count()).toBe(100);
}, 60_000);
