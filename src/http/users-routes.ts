import { z } from 'zod';
import { invalid } from '../errors.js';
import { decodeWallet } from '../services/auth.js';
import type { UserService } from '../services/users.js';
import type { Route } from './router.js';
import { NO_NUL, NO_NUL_MESSAGE, WELL_FORMED_MESSAGE, parseInput, uuidParam, wellFormed } from './validation.js';

const patchMe = z.object({
  display_name: z.string().regex(NO_NUL, NO_NUL_MESSAGE).refine(wellFormed, WELL_FORMED_MESSAGE).refine((s) => {
    const length = [...s].length;
    return length >= 1 && length <= 64 && s.trim().length > 0;
  }, 'must be 1 to 64 characters'),
});

export function userRoutes(users: UserService): Route[] {
  return [
    {
      method: 'get',
      path: '/api/v1/users/me',
      auth: true,
      handle: async (ctx) => ({ status: 200, body: { user: await users.get(ctx.user.id) } }),
    },
    {
      method: 'patch',
      path: '/api/v1/users/me',
      auth: true,
      async handle(ctx) {
        const { display_name } = parseInput(patchMe, ctx.body);
        return { status: 200, body: { user: await users.setDisplayName(ctx.user.id, display_name) } };
      },
    },
    {
      method: 'get',
      path: '/api/v1/users/:id',
      auth: true,
      handle: async (ctx) => ({ status: 200, body: { user: await users.get(uuidParam(ctx.params, 'id')) } }),
    },
    {
      method: 'get',
      path: '/api/v1/users',
      auth: true,
      async handle(ctx) {
        const wallet = ctx.query.get('wallet');
        if (!wallet || !decodeWallet(wallet)) throw invalid('wallet', 'wallet must be a base58 ed25519 public key');
        return { status: 200, body: { users: await users.byWallet(wallet) } };
      },
    },
  ];
}
