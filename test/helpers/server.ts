import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { loadConfig } from '../../src/config.js';
import { startServer, type RunningServer, type ServerDeps } from '../../src/main.js';
import { createTestDatabase, type TestDatabase, testPool } from './db.js';
import { apiClient, type ApiClient } from './http.js';
import { newWallet, type TestWallet } from './wallet.js';

/** The first master key of the crypto vectors; tests derive keys by hand from it. */
export const TEST_MASTER_KEY_B64 = 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=';

export interface TestServer {
  baseUrl: string;
  port: number;
  server: RunningServer;
  database: TestDatabase;
  /** A pool on the test database, for checking rows directly. */
  pool: pg.Pool;
  /** Stops the server; drops the database unless it was passed in. */
  close(): Promise<void>;
}

export interface TestServerOptions {
  env?: Record<string, string>;
  deps?: ServerDeps;
  /** Reuse a database (e.g. to restart a server on the same data); it is not dropped on close. */
  database?: TestDatabase;
}

export async function startTestServer(options: TestServerOptions = {}): Promise<TestServer> {
  const database = options.database ?? (await createTestDatabase());
  const dataDir = mkdtempSync(join(tmpdir(), 'sotalk-test-'));
  const config = loadConfig({
    NODE_ENV: 'test',
    HOST: '127.0.0.1',
    PORT: '0',
    DATABASE_URL: database.url,
    ENCRYPTION_MASTER_KEY: TEST_MASTER_KEY_B64,
    SOTALK_DATA_DIR: dataDir,
    CRYPTO_POOL_SIZE: '1',
    LOG_LEVEL: 'silent',
    ...options.env,
  });
  const server = await startServer(config, options.deps);
  const pool = testPool(database.url, 4);
  return {
    baseUrl: `http://127.0.0.1:${server.port}`,
    port: server.port,
    server,
    database,
    pool,
    async close() {
      await server.close();
      await pool.end();
      if (!options.database) await database.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface SignedInUser {
  token: string;
  user: { id: string; wallet: string; display_name: string | null; created_at: string };
  wallet: TestWallet;
  api: ApiClient;
}

/** Signs a (new) wallet in through the real challenge / verify endpoints. */
export async function signIn(baseUrl: string, wallet: TestWallet = newWallet()): Promise<SignedInUser> {
  const anon = apiClient(baseUrl);
  const challenge = await anon.post('/api/v1/auth/challenge', { wallet: wallet.address });
  if (challenge.status !== 200) throw new Error(`challenge failed: ${challenge.status} ${JSON.stringify(challenge.body)}`);
  const verify = await anon.post('/api/v1/auth/verify', {
    wallet: wallet.address,
    nonce: challenge.body.nonce,
    signature: wallet.sign(challenge.body.message),
  });
  if (verify.status !== 200) throw new Error(`verify failed: ${verify.status} ${JSON.stringify(verify.body)}`);
  return { token: verify.body.token, user: verify.body.user, wallet, api: apiClient(baseUrl, verify.body.token) };
}

/**
 * Two instances on one database and one Redis (`env.REDIS_URL`, else REDIS_URL, else the local
 * default), returned once both answer /readyz 200. An instance listens before its Redis
 * connection is up (it works alone without Redis): until then rate limits count locally,
 * events published are dropped (best-effort), and a Redis Cluster client, still learning the
 * slot map, refuses commands — so tests start on ready instances, not listening ones.
 */
export async function startRedisPair(env: Record<string, string> = {}): Promise<[TestServer, TestServer]> {
  const withRedis = { REDIS_URL: process.env.REDIS_URL || 'redis://127.0.0.1:6379', ...env };
  const a = await startTestServer({ env: withRedis });
  const b = await startTestServer({ env: withRedis, database: a.database });
  for (const s of [a, b]) {
    const deadline = Date.now() + 20_000;
    while ((await fetch(`${s.baseUrl}/readyz`)).status !== 200) {
      if (Date.now() > deadline) throw new Error(`${s.baseUrl}/readyz is not 200 after 20 s (Redis at ${withRedis.REDIS_URL})`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return [a, b];
}
