import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { parseRedisUrl } from './redis.js';

/** Raised for any invalid setting; the message names the variable and never its value. */
export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
  }
}

export interface Config {
  port: number;
  host: string;
  databaseUrl: string | undefined;
  redisUrl: string | undefined;
  /** Active master key first, then the decryption-only keys. */
  masterKey: Buffer;
  oldMasterKeys: Buffer[];
  /** Where the master key came from, for the start-up log (never the key). */
  masterKeySource: 'env' | 'dev-file-created' | 'dev-file';
  authTokenSecret: Buffer | undefined;
  authTokenTtlS: number;
  cryptoPoolSize: number;
  cryptoInlineMax: number;
  maxMessageBytes: number;
  wsMaxFrameBytes: number;
  wsMaxBufferedBytes: number;
  rateLimitSendPerMin: number;
  rateLimitSignInPerMin: number;
  rateLimitTypingPerMin: number;
  /** Sign-in requests (challenges and verifications) per client address a minute. */
  rateLimitSignInPerAddressPerMin: number;
  /** Per user a minute (0: no limit): edits, deletes, rotate-key, conversations created, member changes, receipts, searches. */
  rateLimitEditPerMin: number;
  rateLimitDeletePerMin: number;
  rateLimitRotateKeyPerMin: number;
  rateLimitCreateConversationPerMin: number;
  rateLimitMemberChangePerMin: number;
  rateLimitReceiptPerMin: number;
  rateLimitSearchPerMin: number;
  /** Reverse proxies in front of the server whose X-Forwarded-For entries are trusted (0: use the peer address). */
  trustProxyHops: number;
  dataDir: string;
  /** Postgres connections per process (exactly 1 on the embedded database). */
  databasePoolSize: number;
  /** DATABASE_POOL_SIZE was set above 1 without DATABASE_URL: the embedded database takes one connection (start-up says so). */
  databasePoolSizeIgnored: boolean;
  /** How long the server retries an unreachable database at start before giving up. */
  databaseConnectTimeoutS: number;
  searchEnabled: boolean;
  /** Most query tokens (words × conversations × master keys) one search may hash. */
  searchMaxQueryTokens: number;
  /** Retire a conversation key version after this many messages / seconds (0: never). */
  keyRotationMessages: number;
  keyRotationMaxAgeS: number;
  historyCacheBytes: number;
  historyCacheTtlMs: number;
  /** Group commit: most messages per flush, and flushes running at once (each holds a connection). */
  sendBatchMax: number;
  sendFlushConcurrency: number;
  /** Serve GET /api/v1/messages/{id}/at-rest for the web client's "at rest" panel; never in production. */
  atRestPanel: boolean;
  production: boolean;
  logLevel: string;
  /** LOG_FORMAT: unset means JSON in production or when stdout is not a terminal, pretty otherwise. */
  logFormat: 'json' | 'pretty' | undefined;
  /** Server processes sharing the port (SO_REUSEPORT); 1 listens exclusively. */
  processes: number;
  /** This process's number when a supervisor started it (metrics label `process`). */
  processIndex: number | undefined;
}

type Env = Record<string, string | undefined>;

function intVar(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  if (!/^\d+$/.test(raw.trim())) throw new ConfigError(name, `must be a whole number between ${min} and ${max}`);
  const value = Number(raw.trim());
  if (value < min || value > max) throw new ConfigError(name, `must be between ${min} and ${max}`);
  return value;
}

function boolVar(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name]?.trim().toLowerCase();
  if (raw === undefined || raw === '') return fallback;
  if (['true', '1', 'yes', 'on'].includes(raw)) return true;
  if (['false', '0', 'no', 'off'].includes(raw)) return false;
  throw new ConfigError(name, 'must be true or false');
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

function logLevelVar(env: Env): string {
  const level = env.LOG_LEVEL?.trim().toLowerCase() || 'info';
  if (!LOG_LEVELS.includes(level)) throw new ConfigError('LOG_LEVEL', `must be one of ${LOG_LEVELS.join(', ')}`);
  return level;
}

function logFormatVar(env: Env): 'json' | 'pretty' | undefined {
  const format = env.LOG_FORMAT?.trim().toLowerCase();
  if (!format) return undefined;
  if (format !== 'json' && format !== 'pretty') throw new ConfigError('LOG_FORMAT', 'must be json or pretty');
  return format;
}

/** An IP address or a DNS name to listen on. */
function hostVar(env: Env): string {
  const host = env.HOST?.trim() || '0.0.0.0';
  const name = /^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;
  if (isIP(host) === 0 && !name.test(host)) throw new ConfigError('HOST', 'must be an IP address or a host name');
  return host;
}

/** In production the data must live in Postgres: an empty embedded database would hide a missing setting. */
export function requireDatabaseUrlInProduction(config: Config): void {
  if (config.production && !config.databaseUrl) {
    throw new ConfigError('DATABASE_URL', 'is required when NODE_ENV=production (the embedded database is for development)');
  }
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** Decodes a base64 master key of exactly 32 bytes; errors name the variable, never the value. */
export function parseKey(name: string, raw: string): Buffer {
  const text = raw.trim();
  if (!BASE64.test(text) || text.length % 4 !== 0) throw new ConfigError(name, 'is not valid base64');
  const key = Buffer.from(text, 'base64');
  if (key.length !== 32) throw new ConfigError(name, `must decode to exactly 32 bytes (got ${key.length})`);
  return key;
}

function urlVar(env: Env, name: string, protocols: string[]): string | undefined {
  const raw = env[name]?.trim();
  if (!raw) return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(name, 'is not a valid URL');
  }
  if (!protocols.includes(url.protocol)) throw new ConfigError(name, `must use ${protocols.join(' or ')}`);
  return raw;
}

/** REDIS_URL: one server (redis:, rediss:) or a Redis Cluster (redis+cluster://host:port,host:port). */
function redisUrlVar(env: Env): string | undefined {
  const raw = env.REDIS_URL?.trim();
  if (!raw) return undefined;
  try {
    parseRedisUrl(raw);
  } catch (err) {
    throw new ConfigError('REDIS_URL', (err as Error).message);
  }
  return raw;
}

export interface LoadOptions {
  /**
   * Without ENCRYPTION_MASTER_KEY outside production: `create` makes a development key in the
   * data dir when there is none (the server, `migrate`); `existing` only reads one, so a command
   * run from another directory never invents a key and misreads the data under it.
   */
  devKey?: 'create' | 'existing';
}

function loadMasterKey(env: Env, dataDir: string, production: boolean, devKey: LoadOptions['devKey']): Pick<Config, 'masterKey' | 'masterKeySource'> {
  const raw = env.ENCRYPTION_MASTER_KEY;
  if (raw !== undefined && raw.trim() !== '') {
    return { masterKey: parseKey('ENCRYPTION_MASTER_KEY', raw), masterKeySource: 'env' };
  }
  if (production) {
    throw new ConfigError('ENCRYPTION_MASTER_KEY', 'is required when NODE_ENV=production (generate one with `sotalk keygen`)');
  }
  const file = join(dataDir, 'master.key');
  if (existsSync(file)) {
    return { masterKey: parseKey(`ENCRYPTION_MASTER_KEY (from ${file})`, readFileSync(file, 'utf8')), masterKeySource: 'dev-file' };
  }
  if (devKey === 'existing') {
    throw new ConfigError('ENCRYPTION_MASTER_KEY', `is unset and there is no development key at ${file} (set it, or SOTALK_DATA_DIR)`);
  }
  mkdirSync(dataDir, { recursive: true });
  const key = randomBytes(32);
  // 'wx' fails if another process created the file first; then we read theirs.
  try {
    writeFileSync(file, key.toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return { masterKey: parseKey(`ENCRYPTION_MASTER_KEY (from ${file})`, readFileSync(file, 'utf8')), masterKeySource: 'dev-file' };
  }
  chmodSync(file, 0o600);
  return { masterKey: key, masterKeySource: 'dev-file-created' };
}

export function loadConfig(env: Env = process.env, options: LoadOptions = {}): Config {
  const production = env.NODE_ENV === 'production';
  const dataDir = resolve(env.SOTALK_DATA_DIR?.trim() || './.sotalk');
  const maxMessageBytes = intVar(env, 'MAX_MESSAGE_BYTES', 65536, 1, 16 * 1024 * 1024);
  const oldKeys = (env.ENCRYPTION_OLD_MASTER_KEYS ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s, i) => parseKey(`ENCRYPTION_OLD_MASTER_KEYS[${i}]`, s));
  const atRestPanel = boolVar(env, 'SOTALK_AT_REST_PANEL', false);
  if (atRestPanel && production) throw new ConfigError('SOTALK_AT_REST_PANEL', 'must not be enabled when NODE_ENV=production');
  const processes = intVar(env, 'SOTALK_PROCESSES', 1, 1, 256);
  // Set by the supervisor for each server process it starts (0 … SOTALK_PROCESSES − 1).
  const processIndex = env.SOTALK_PROCESS_INDEX === undefined ? undefined : intVar(env, 'SOTALK_PROCESS_INDEX', 0, 0, processes - 1);
  const secret = env.AUTH_TOKEN_SECRET;
  if (secret !== undefined && secret !== '' && Buffer.byteLength(secret) < 32) {
    throw new ConfigError('AUTH_TOKEN_SECRET', 'must be at least 32 bytes long');
  }
  const port = intVar(env, 'PORT', 8080, 0, 65535);
  if (processes > 1 && !env.DATABASE_URL?.trim()) {
    throw new ConfigError('SOTALK_PROCESSES', 'above 1 needs DATABASE_URL (the embedded database belongs to one process)');
  }
  if (processes > 1 && port === 0) throw new ConfigError('SOTALK_PROCESSES', 'above 1 needs a fixed PORT (the processes share it)');
  // Each process is an instance of its own: events reach the sockets of the others through Redis.
  if (processes > 1 && !env.REDIS_URL?.trim()) {
    throw new ConfigError('SOTALK_PROCESSES', 'above 1 needs REDIS_URL (events reach sockets on the other processes through Redis)');
  }
  const databaseUrl = urlVar(env, 'DATABASE_URL', ['postgres:', 'postgresql:']);
  const databasePoolSize = intVar(env, 'DATABASE_POOL_SIZE', 16, 1, 1000);
  return {
    port,
    host: hostVar(env),
    databaseUrl,
    redisUrl: redisUrlVar(env),
    ...loadMasterKey(env, dataDir, production, options.devKey ?? 'create'),
    oldMasterKeys: oldKeys,
    authTokenSecret: secret ? Buffer.from(secret) : undefined,
    authTokenTtlS: intVar(env, 'AUTH_TOKEN_TTL_S', 86400, 1, 365 * 86400),
    // Per process: with several processes on the host, the cores are shared out between them.
    cryptoPoolSize: intVar(env, 'CRYPTO_POOL_SIZE', processes === 1 ? Math.max(1, availableParallelism() - 1) : Math.max(0, Math.floor(availableParallelism() / processes) - 1), 0, 256),
    processes,
    processIndex,
    // 16 from `npm run bench:pool` on the 2-core reference machine (BENCHMARKS.md).
    cryptoInlineMax: intVar(env, 'CRYPTO_INLINE_MAX', 16, 0, 1_000_000),
    maxMessageBytes,
    wsMaxFrameBytes: intVar(env, 'WS_MAX_FRAME_BYTES', 4 * maxMessageBytes, 1024, 256 * 1024 * 1024),
    wsMaxBufferedBytes: intVar(env, 'WS_MAX_BUFFERED_BYTES', 4 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
    rateLimitSendPerMin: intVar(env, 'RATE_LIMIT_SEND_PER_MIN', 6000, 0, 10_000_000),
    rateLimitSignInPerMin: intVar(env, 'RATE_LIMIT_SIGNIN_PER_MIN', 30, 0, 10_000_000),
    rateLimitTypingPerMin: intVar(env, 'RATE_LIMIT_TYPING_PER_MIN', 120, 0, 10_000_000),
    rateLimitSignInPerAddressPerMin: intVar(env, 'RATE_LIMIT_SIGNIN_PER_ADDRESS_PER_MIN', 300, 0, 10_000_000),
    rateLimitEditPerMin: intVar(env, 'RATE_LIMIT_EDIT_PER_MIN', 60, 0, 10_000_000),
    rateLimitDeletePerMin: intVar(env, 'RATE_LIMIT_DELETE_PER_MIN', 60, 0, 10_000_000),
    rateLimitRotateKeyPerMin: intVar(env, 'RATE_LIMIT_ROTATE_KEY_PER_MIN', 10, 0, 10_000_000),
    rateLimitCreateConversationPerMin: intVar(env, 'RATE_LIMIT_CREATE_CONVERSATION_PER_MIN', 60, 0, 10_000_000),
    rateLimitMemberChangePerMin: intVar(env, 'RATE_LIMIT_MEMBER_CHANGE_PER_MIN', 60, 0, 10_000_000),
    // 1,200 a minute: an allowance of one per 50 ms sync, so receipts never wait on Redis
    rateLimitReceiptPerMin: intVar(env, 'RATE_LIMIT_RECEIPT_PER_MIN', 1200, 0, 10_000_000),
    rateLimitSearchPerMin: intVar(env, 'RATE_LIMIT_SEARCH_PER_MIN', 60, 0, 10_000_000),
    trustProxyHops: intVar(env, 'TRUST_PROXY_HOPS', 0, 0, 16),
    dataDir,
    // PGlite is a single session: one connection, whatever was asked for.
    databasePoolSize: databaseUrl ? databasePoolSize : 1,
    databasePoolSizeIgnored: !databaseUrl && databasePoolSize > 1 && Boolean(env.DATABASE_POOL_SIZE?.trim()),
    databaseConnectTimeoutS: intVar(env, 'DATABASE_CONNECT_TIMEOUT_S', 60, 0, 3600),
    searchEnabled: boolVar(env, 'SEARCH_ENABLED', true),
    searchMaxQueryTokens: intVar(env, 'SEARCH_MAX_QUERY_TOKENS', 100_000, 1, 10_000_000),
    // 2^24 messages: far below the 2^32 random-nonce bound of NIST SP 800-38D.
    keyRotationMessages: intVar(env, 'KEY_ROTATION_MESSAGES', 2 ** 24, 0, 2 ** 31),
    keyRotationMaxAgeS: intVar(env, 'KEY_ROTATION_MAX_AGE_S', 90 * 86400, 0, 100 * 365 * 86400),
    historyCacheBytes: intVar(env, 'HISTORY_CACHE_BYTES', 64 * 1024 * 1024, 0, 64 * 1024 * 1024 * 1024),
    historyCacheTtlMs: intVar(env, 'HISTORY_CACHE_TTL_MS', 2000, 0, 3_600_000),
    sendBatchMax: intVar(env, 'SEND_BATCH_MAX', 256, 1, 10_000),
    sendFlushConcurrency: intVar(env, 'SEND_FLUSH_CONCURRENCY', 4, 1, 64),
    atRestPanel,
    production,
    logLevel: logLevelVar(env),
    logFormat: logFormatVar(env),
  };
}
