import type { Queryable } from './transaction.js';

export interface ChallengeRow {
  wallet: string;
  message: string;
  expires_at: Date;
}

export async function insertChallenge(db: Queryable, nonce: string, wallet: string, message: string, expiresAt: Date): Promise<void> {
  await db.query('INSERT INTO auth_challenges (nonce, wallet, message, expires_at) VALUES ($1, $2, $3, $4)', [nonce, wallet, message, expiresAt]);
}

/** Marks a nonce used and returns it, or undefined when unknown or already used (single use). */
export async function consumeChallenge(db: Queryable, nonce: string): Promise<ChallengeRow | undefined> {
  const { rows } = await db.query<ChallengeRow>(
    'UPDATE auth_challenges SET used_at = now() WHERE nonce = $1 AND used_at IS NULL RETURNING wallet, message, expires_at',
    [nonce],
  );
  return rows[0];
}

/** Drops challenges that expired before `before`, at most `limit` of them (oldest first). */
export async function pruneChallenges(db: Queryable, before: Date, limit = 1000): Promise<void> {
  await db.query(
    `DELETE FROM auth_challenges WHERE nonce IN (SELECT nonce FROM auth_challenges WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)`,
    [before, limit],
  );
}
