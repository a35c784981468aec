import type { Queryable } from './transaction.js';

export interface UserRow {
  id: string;
  wallet: string;
  display_name: string | null;
  created_at: Date;
}

const COLUMNS = 'id, wallet, display_name, created_at';

export async function findUserById(db: Queryable, id: string): Promise<UserRow | undefined> {
  const { rows } = await db.query<UserRow>(`SELECT ${COLUMNS} FROM users WHERE id = $1`, [id]);
  return rows[0];
}

export async function findUserByWallet(db: Queryable, wallet: string): Promise<UserRow | undefined> {
  const { rows } = await db.query<UserRow>(`SELECT ${COLUMNS} FROM users WHERE wallet = $1`, [wallet]);
  return rows[0];
}

/** The user of a wallet, created on first sign-in (race-safe through the unique wallet). */
export async function upsertUserByWallet(db: Queryable, id: string, wallet: string): Promise<UserRow> {
  const { rows } = await db.query<UserRow>(
    `INSERT INTO users (id, wallet) VALUES ($1, $2)
     ON CONFLICT (wallet) DO UPDATE SET wallet = EXCLUDED.wallet
     RETURNING ${COLUMNS}`,
    [id, wallet],
  );
  return rows[0]!;
}

export async function updateDisplayName(db: Queryable, id: string, displayName: string): Promise<UserRow | undefined> {
  const { rows } = await db.query<UserRow>(
    `UPDATE users SET display_name = $2, updated_at = now() WHERE id = $1 RETURNING ${COLUMNS}`,
    [id, displayName],
  );
  return rows[0];
}

/** How many of the given ids name existing users. */
export async function countExistingUsers(db: Queryable, ids: string[]): Promise<number> {
  const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM users WHERE id = ANY($1::uuid[])', [ids]);
  return rows[0]!.n;
}
