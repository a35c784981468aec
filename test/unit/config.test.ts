import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';
import { parseRedisUrl } from '../../src/redis.js';

const KEY = 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=';
const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'sotalk-config-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig({ SOTALK_DATA_DIR: tempDir(), ...env });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('REDIS_URL', () => {
  it('accepts one server or a cluster, and a cluster URL names its start-up nodes and credentials', () => {
    for (const url of ['redis://127.0.0.1:6379', 'rediss://u:p@r.example:6380/2', 'redis+cluster://10.0.0.1:7000,10.0.0.2:7000', 'rediss+cluster://:pw@[::1]:7000']) {
      expect(loadConfig({ ENCRYPTION_MASTER_KEY: KEY, SOTALK_DATA_DIR: tempDir(), REDIS_URL: url }).redisUrl).toBe(url);
    }
    expect(parseRedisUrl('redis://127.0.0.1:6379')).toEqual({ kind: 'single', url: 'redis://127.0.0.1:6379' });
    expect(parseRedisUrl('rediss+cluster://app:s%40cret@a.example:7000, b.example:7001')).toEqual({
      kind: 'cluster',
      nodes: [
        { host: 'a.example', port: 7000 },
        { host: 'b.example', port: 7001 },
      ],
      username: 'app',
      password: 's@cret',
      tls: true,
    });
    expect(parseRedisUrl('redis+cluster://[::1]:7000')).toEqual({ kind: 'cluster', nodes: [{ host: '::1', port: 7000 }], tls: false });
  });

  it('never echoes a password in its error', () => {
    const err = configError({ ENCRYPTION_MASTER_KEY: KEY, REDIS_URL: 'redis+cluster://:hunter2@a:7000,b' });
    expect(err.message).toBe('REDIS_URL: must list the cluster nodes as host:port[,host:port...]');
  });
});

describe('loadConfig', () => {
  it('applies the documented defaults (README.md, Configuration)', () => {
    const c = loadConfig({ ENCRYPTION_MASTER_KEY: KEY, SOTALK_DATA_DIR: tempDir() });
    expect(c.port).toBe(8080);
    expect(c.host).toBe('0.0.0.0');
    expect(c.databaseUrl).toBeUndefined();
    expect(c.redisUrl).toBeUndefined();
    expect(c.masterKey).toEqual(Buffer.from(KEY, 'base64'));
    expect(c.oldMasterKeys).toEqual([]);
    expect(c.authTokenTtlS).toBe(86400);
    expect(c.cryptoPoolSize).toBeGreaterThanOrEqual(1);
    expect(c.maxMessageBytes).toBe(65536);
    expect(c.wsMaxFrameBytes).toBe(4 * 65536);
    expect(c.wsMaxBufferedBytes).toBe(4 * 1024 * 1024);
    expect(c.rateLimitSendPerMin).toBe(6000);
    expect(c.searchEnabled).toBe(true);
    expect(c.searchMaxQueryTokens).toBe(100_000);
  });

  it('derives WS_MAX_FRAME_BYTES from MAX_MESSAGE_BYTES', () => {
    const c = loadConfig({ ENCRYPTION_MASTER_KEY: KEY, SOTALK_DATA_DIR: tempDir(), MAX_MESSAGE_BYTES: '1000', CRYPTO_POOL_SIZE: '0' });
    expect(c.wsMaxFrameBytes).toBe(4000);
    expect(c.cryptoPoolSize).toBe(0);
  });

  it.each([
    ['PORT', 'eighty'],
    ['PORT', '70000'],
    ['AUTH_TOKEN_TTL_S', '0'],
    ['CRYPTO_POOL_SIZE', '-1'],
    ['MAX_MESSAGE_BYTES', '1.5'],
    ['RATE_LIMIT_SEND_PER_MIN', 'lots'],
    ['SEARCH_ENABLED', 'maybe'],
    ['SEARCH_MAX_QUERY_TOKENS', '0'],
    ['DATABASE_URL', 'not a url'],
    ['DATABASE_URL', 'mysql://localhost/x'],
    ['REDIS_URL', 'http://localhost'],
    ['REDIS_URL', 'redis+cluster://'],
    ['REDIS_URL', 'redis+cluster://host-without-port'],
    ['REDIS_URL', 'redis+cluster://a:6379,b:99999'],
    ['REDIS_URL', 'redis+cluster://a:6379/0'],
  ])('rejects %s=%s naming the variable', (name, value) => {
    const err = configError({ ENCRYPTION_MASTER_KEY: KEY, [name]: value });
    expect(err.variable).toBe(name);
    expect(err.message).toContain(name);
  });

  it.each([
    ['not base64', 'this is not base64!!'],
    ['too short', Buffer.alloc(16, 7).toString('base64')],
    ['too long', Buffer.alloc(33, 7).toString('base64')],
  ])('refuses a master key that is %s, never printing it', (_why, value) => {
    const err = configError({ ENCRYPTION_MASTER_KEY: value });
    expect(err.message).toContain('ENCRYPTION_MASTER_KEY');
    expect(err.message).not.toContain(value);
  });

  it('refuses a malformed old master key, naming its position', () => {
    const bad = Buffer.alloc(31, 1).toString('base64');
    const err = configError({ ENCRYPTION_MASTER_KEY: KEY, ENCRYPTION_OLD_MASTER_KEYS: `${KEY},${bad}` });
    expect(err.message).toContain('ENCRYPTION_OLD_MASTER_KEYS[1]');
    expect(err.message).not.toContain(bad);
  });

  it('parses old master keys', () => {
    const other = Buffer.alloc(32, 9).toString('base64');
    const c = loadConfig({ ENCRYPTION_MASTER_KEY: KEY, ENCRYPTION_OLD_MASTER_KEYS: ` ${other} ,`, SOTALK_DATA_DIR: tempDir() });
    expect(c.oldMasterKeys).toEqual([Buffer.alloc(32, 9)]);
  });

  it('refuses to start in production without a master key', () => {
    const err = configError({ NODE_ENV: 'production' });
    expect(err.variable).toBe('ENCRYPTION_MASTER_KEY');
    expect(err.message).toMatch(/required/);
  });

  it('creates a 0600 development key file once and reuses it', () => {
    const dir = tempDir();
    const first = loadConfig({ SOTALK_DATA_DIR: dir });
    expect(first.masterKeySource).toBe('dev-file-created');
    const file = join(dir, 'master.key');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(Buffer.from(readFileSync(file, 'utf8').trim(), 'base64')).toEqual(first.masterKey);
    const second = loadConfig({ SOTALK_DATA_DIR: dir });
    expect(second.masterKeySource).toBe('dev-file');
    expect(second.masterKey).toEqual(first.masterKey);
  });

  it('refuses a corrupt development key file without printing it', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'master.key'), 'c2hvcnQ=\n');
    expect(() => loadConfig({ SOTALK_DATA_DIR: dir })).toThrow(/must decode to exactly 32 bytes/);
  });

  it('DATABASE_POOL_SIZE: 16 by default, validated, and 1 on the embedded database (flagged when it asked for more)', () => {
    const PG = 'postgresql://postgres@127.0.0.1:5432/x';
    expect(loadConfig({ ENCRYPTION_MASTER_KEY: KEY, SOTALK_DATA_DIR: tempDir(), DATABASE_URL: PG }).databasePoolSize).toBe(16);
    const set = loadConfig({ ENCRYPTION_MASTER_KEY: KEY, SOTALK_DATA_DIR: tempDir(), DATABASE_URL: PG, DATABASE_POOL_SIZE: '40' });
    expect([set.databasePoolSize, set.databasePoolSizeIgnored]).toEqual([40, false]);
    for (const bad of ['0', '1001', 'many', '-3', '2.5']) {
      const err = configError({ ENCRYPTION_MASTER_KEY: KEY, DATABASE_URL: PG, DATABASE_POOL_SIZE: bad });
      expect(err.variable, bad).toBe('DATABASE_POOL_SIZE');
      expect(err.message).toMatch(/between 1 and 1000/);
    }
    const embedded = loadConfig({ ENCRYPTION_MASTER_KEY: KEY, SOTALK_DATA_DIR: tempDir(), DATABASE_POOL_SIZE: '8' });
    expect([embedded.databasePoolSize, embedded.databasePoolSizeIgnored]).toEqual([1, true]);
    const embeddedDefault = loadConfig({ ENCRYPTION_MASTER_KEY: KEY, SOTALK_DATA_DIR: tempDir() });
    expect([embeddedDefault.databasePoolSize, embeddedDefault.databasePoolSizeIgnored]).toEqual([1, false]);
    expect(configError({ ENCRYPTION_MASTER_KEY: KEY, DATABASE_POOL_SIZE: 'x' }).variable).toBe('DATABASE_POOL_SIZE');
  });

  it('SOTALK_PROCESSES shares the cores out: each process gets floor(cores / N) − 1 crypto workers unless CRYPTO_POOL_SIZE says', () => {
    const shared = { ENCRYPTION_MASTER_KEY: KEY, DATABASE_URL: 'postgresql://h/x', REDIS_URL: 'redis://h:6379' };
    const one = loadConfig({ ...shared, SOTALK_DATA_DIR: tempDir() });
    expect([one.processes, one.cryptoPoolSize]).toEqual([1, Math.max(1, availableParallelism() - 1)]);
    for (const n of [2, 4, 64]) {
      const c = loadConfig({ ...shared, SOTALK_DATA_DIR: tempDir(), SOTALK_PROCESSES: String(n) });
      expect(c.cryptoPoolSize, `${n} processes`).toBe(Math.max(0, Math.floor(availableParallelism() / n) - 1));
      expect(n * (c.cryptoPoolSize + 1), 'worker threads plus main threads fit the host').toBeLessThanOrEqual(Math.max(n, availableParallelism()));
    }
    expect(loadConfig({ ...shared, SOTALK_DATA_DIR: tempDir(), SOTALK_PROCESSES: '2', CRYPTO_POOL_SIZE: '3' }).cryptoPoolSize).toBe(3);
    expect(configError({ ...shared, SOTALK_PROCESSES: '2', REDIS_URL: '' }).message).toMatch(/^SOTALK_PROCESSES: above 1 needs REDIS_URL/);
    expect(configError({ ...shared, SOTALK_PROCESSES: '0' }).variable).toBe('SOTALK_PROCESSES');
  });
});
