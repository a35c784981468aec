import type pg from 'pg';
import { notFound } from '../errors.js';
import { findUserById, findUserByWallet, updateDisplayName, type UserRow } from '../db/users.js';

export interface User {
  id: string;
  wallet: string;
  display_name: string | null;
  created_at: string;
}

export const toUser = (row: UserRow): User => ({
  id: row.id,
  wallet: row.wallet,
  display_name: row.display_name,
  created_at: row.created_at.toISOString(),
});

export class UserService {
  constructor(readonly pool: pg.Pool) {}

  async get(id: string, field?: string): Promise<User> {
    const row = await findUserById(this.pool, id);
    if (!row) throw notFound('user', field);
    return toUser(row);
  }

  async byWallet(wallet: string): Promise<User[]> {
    const row = await findUserByWallet(this.pool, wallet);
    return row ? [toUser(row)] : [];
  }

  async setDisplayName(id: string, displayName: string): Promise<User> {
    const row = await updateDisplayName(this.pool, id, displayName);
    if (!row) throw notFound('user');
    return toUser(row);
  }
}
