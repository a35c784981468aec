import { createPublicKey, randomBytes, verify } from 'node:crypto';
import bs58 from 'bs58';
import { createSigner, createVerifier } from 'fast-jwt';
import { v7 as uuidv7 } from 'uuid';
import type pg from 'pg';
import { ApiError, invalid, unauthorized } from '../errors.js';
import { consumeChallenge, insertChallenge, pruneChallenges } from '../db/auth-challenges.js';
import { upsertUserByWallet } from '../db/users.js';
import type { AuthUser } from '../http/router.js';
import type { RateLimits } from './rate-limiter.js';
import { toUser, type User } from './users.js';

/** Challenges between two prunes of expired ones, and the most one prune removes. */
const PRUNE_EVERY = 100;
const PRUNE_BATCH = 1000;

const CHALLENGE_TTL_MS = 5 * 60 * 1000;
// DER prefix of an ed25519 SubjectPublicKeyInfo; the raw 32-byte key follows it.
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** Decodes a base58 wallet address to its 32-byte ed25519 public key, or undefined. */
export function decodeWallet(wallet: string): Buffer | undefined {
  try {
    const raw = Buffer.from(bs58.decode(wallet));
    return raw.length === 32 ? raw : undefined;
  } catch {
    return undefined;
  }
}

function decodeSignature(signature: string): Buffer | undefined {
  try {
    const raw = Buffer.from(bs58.decode(signature));
    return raw.length === 64 ? raw : undefined;
  } catch {
    return undefined;
  }
}

function verifyEd25519(publicKey: Buffer, message: string, signature: Buffer): boolean {
  try {
    const key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' });
    return verify(null, Buffer.from(message, 'utf8'), key, signature);
  } catch {
    return false;
  }
}

export interface AuthServiceOptions {
  pool: pg.Pool;
  /**
   * HMAC secrets, raw bytes: tokens are signed with the first and accepted under any, so that
   * during a master-key rollout a token from one instance works on the other.
   */
  tokenSecrets: Buffer[];
  tokenTtlS: number;
  clock: () => Date;
  /**
   * `signin-address`: challenges and verifications per client address; `signin`: proven sign-ins
   * per wallet (taken only after the signature verifies, so nobody else can spend a wallet's).
   */
  limits: RateLimits;
}

export interface Challenge {
  nonce: string;
  message: string;
  expires_at: string;
}

export interface Session {
  token: string;
  token_type: 'Bearer';
  expires_at: string;
  user: User;
}

/** Wallet sign-in: single-use expiring challenges, ed25519 signatures, HS256 bearer tokens. */
export class AuthService {
  readonly #pool: pg.Pool;
  readonly #clock: () => Date;
  readonly #ttlS: number;
  readonly #limits: RateLimits;
  readonly #sign: (payload: Record<string, unknown>) => string;
  readonly #verifiers: ((token: string) => Record<string, unknown>)[];

  constructor(options: AuthServiceOptions) {
    this.#pool = options.pool;
    this.#clock = options.clock;
    this.#ttlS = options.tokenTtlS;
    this.#limits = options.limits;
    const [first] = options.tokenSecrets;
    if (!first) throw new Error('AuthService needs a token secret');
    this.#sign = createSigner({ key: first, algorithm: 'HS256' }) as (p: Record<string, unknown>) => string;
    this.#verifiers = options.tokenSecrets.map(
      (key) =>
        createVerifier({
          key,
          algorithms: ['HS256'],
          cache: 10_000,
          // expiry is checked against the service clock below (injectable in tests)
          ignoreExpiration: true,
        }) as (t: string) => Record<string, unknown>,
    );
  }

  #issued = 0;

  /** `address` is the client's (the limit on unauthenticated requests is per address, not per wallet). */
  async challenge(wallet: string, address: string): Promise<Challenge> {
    if (!decodeWallet(wallet)) throw invalid('wallet', 'wallet must be the base58 encoding of a 32-byte ed25519 public key');
    await this.#limits.take('signin-address', address);
    const now = this.#clock();
    const nonce = bs58.encode(randomBytes(24));
    const expiresAt = new Date(now.getTime() + CHALLENGE_TTL_MS);
    const message = [
      'Sign in to SoTalk',
      '',
      `Wallet: ${wallet}`,
      `Nonce: ${nonce}`,
      `Expires: ${expiresAt.toISOString()}`,
    ].join('\n');
    await insertChallenge(this.#pool, nonce, wallet, message, expiresAt);
    // Every PRUNE_EVERY challenges, up to PRUNE_BATCH expired ones go: more than can arrive in
    // between, so the table stays bounded under a flood of challenges for fresh wallets.
    if (++this.#issued % PRUNE_EVERY === 0) void pruneChallenges(this.#pool, new Date(now.getTime() - 3600_000), PRUNE_BATCH).catch(() => {});
    return { nonce, message, expires_at: expiresAt.toISOString() };
  }

  async verify(wallet: string, nonce: string, signature: string, address: string): Promise<Session> {
    const publicKey = decodeWallet(wallet);
    if (!publicKey) throw invalid('wallet', 'wallet must be the base58 encoding of a 32-byte ed25519 public key');
    await this.#limits.take('signin-address', address);
    // Used up by any attempt, failed or not.
    const challenge = await consumeChallenge(this.#pool, nonce);
    const now = this.#clock();
    if (!challenge || challenge.wallet !== wallet || challenge.expires_at.getTime() <= now.getTime()) {
      throw unauthorized('unknown, used or expired nonce');
    }
    const sig = decodeSignature(signature);
    if (!sig || !verifyEd25519(publicKey, challenge.message, sig)) throw unauthorized('signature does not verify');
    // Only the key's holder gets here: the wallet's own budget cannot be spent by anyone else.
    await this.#limits.take('signin', wallet);
    const user = await upsertUserByWallet(this.#pool, uuidv7(), wallet);
    const iat = Math.floor(now.getTime() / 1000);
    const exp = iat + this.#ttlS;
    const token = this.#sign({ sub: user.id, wal: user.wallet, iat, exp });
    return { token, token_type: 'Bearer', expires_at: new Date(exp * 1000).toISOString(), user: toUser(user) };
  }

  /** Synchronous so the router can check it before reading a body. */
  /** The service clock's now (ms), to time things against token expiry. */
  now = (): number => this.#clock().getTime();

  authenticate = (token: string): AuthUser => {
    let claims: Record<string, unknown> | undefined;
    for (const verify of this.#verifiers) {
      try {
        claims = verify(token);
        break;
      } catch {
        // not signed with this secret (or malformed): try the next one
      }
    }
    if (!claims) throw unauthorized('invalid or expired token');
    if (typeof claims.sub !== 'string' || typeof claims.wal !== 'string' || typeof claims.exp !== 'number') {
      throw new ApiError('unauthorized', 'invalid token');
    }
    if (claims.exp * 1000 <= this.#clock().getTime()) throw unauthorized('token expired');
    return { id: claims.sub, wallet: claims.wal, expiresAtMs: claims.exp * 1000 };
  };
}
