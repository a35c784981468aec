import { z } from 'zod';
import type { AuthService } from '../services/auth.js';
import type { Route } from './router.js';
import { parseInput } from './validation.js';

const challengeBody = z.object({ wallet: z.string().min(1).max(64) });
const verifyBody = z.object({
  wallet: z.string().min(1).max(64),
  nonce: z.string().min(1).max(128),
  signature: z.string().min(1).max(256),
});

export function authRoutes(auth: AuthService): Route[] {
  return [
    {
      method: 'post',
      path: '/api/v1/auth/challenge',
      auth: false,
      async handle(ctx) {
        const { wallet } = parseInput(challengeBody, ctx.body);
        return { status: 200, body: await auth.challenge(wallet) };
      },
    },
    {
      method: 'post',
      path: '/api/v1/auth/verify',
      auth: false,
      async handle(ctx) {
        const { wallet, nonce, signature } = parseInput(verifyBody, ctx.body);
        return { status: 200, body: await auth.verify(wallet, nonce, signature) };
      },
    },
  ];
}
