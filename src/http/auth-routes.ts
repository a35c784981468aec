import { z } from 'zod';
import type { AuthService } from '../services/auth.js';
import type { Route } from './router.js';
import { NO_NUL, NO_NUL_MESSAGE, parseInput } from './validation.js';

const challengeBody = z.object({ wallet: z.string().min(1).max(64).regex(NO_NUL, NO_NUL_MESSAGE) });
const verifyBody = z.object({
  wallet: z.string().min(1).max(64).regex(NO_NUL, NO_NUL_MESSAGE),
  nonce: z.string().min(1).max(128).regex(NO_NUL, NO_NUL_MESSAGE),
  signature: z.string().min(1).max(256).regex(NO_NUL, NO_NUL_MESSAGE),
});

export function authRoutes(auth: AuthService): Route[] {
  return [
    {
      method: 'post',
      path: '/api/v1/auth/challenge',
      auth: false,
      async handle(ctx) {
        const { wallet } = parseInput(challengeBody, ctx.body);
        return { status: 200, body: await auth.challenge(wallet, ctx.clientAddress) };
      },
    },
    {
      method: 'post',
      path: '/api/v1/auth/verify',
      auth: false,
      async handle(ctx) {
        const { wallet, nonce, signature } = parseInput(verifyBody, ctx.body);
        return { status: 200, body: await auth.verify(wallet, nonce, signature, ctx.clientAddress) };
      },
    },
  ];
}
