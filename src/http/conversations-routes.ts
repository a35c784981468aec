import { z } from 'zod';
import type { ConversationService } from '../services/conversations.js';
import type { Route } from './router.js';
import { NO_NUL, NO_NUL_MESSAGE, WELL_FORMED_MESSAGE, intQuery, parseInput, uuid, uuidParam, wellFormed } from './validation.js';

const MAX_GROUP_MEMBERS_PER_REQUEST = 1000;

const createBody = z.discriminatedUnion('type', [
  z.object({ type: z.literal('direct'), member_ids: z.array(uuid).length(1, 'a direct conversation names exactly one other user') }),
  z.object({
    type: z.literal('group'),
    title: z.string().min(1).max(200).regex(NO_NUL, NO_NUL_MESSAGE).refine(wellFormed, WELL_FORMED_MESSAGE).nullish(),
    member_ids: z.array(uuid).max(MAX_GROUP_MEMBERS_PER_REQUEST).default([]),
  }),
]);
const addMemberBody = z.object({ user_id: uuid });
const readBody = z.object({ seq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER) });

export function conversationRoutes(conversations: ConversationService): Route[] {
  return [
    {
      method: 'post',
      path: '/api/v1/conversations',
      auth: true,
      async handle(ctx) {
        const input = parseInput(createBody, ctx.body);
        if (input.type === 'direct') {
          const { conversation, created } = await conversations.getOrCreateDirect(ctx.user.id, input.member_ids[0]!);
          return { status: created ? 201 : 200, body: { conversation } };
        }
        return { status: 201, body: { conversation: await conversations.createGroup(ctx.user.id, input.title ?? null, input.member_ids) } };
      },
    },
    {
      method: 'get',
      path: '/api/v1/conversations',
      auth: true,
      async handle(ctx) {
        const limit = intQuery(ctx.query, 'limit', { min: 1, max: 100, fallback: 20 })!;
        const before = ctx.query.get('before') || undefined;
        return { status: 200, body: await conversations.list(ctx.user.id, limit, before, ctx.requestId) };
      },
    },
    {
      method: 'get',
      path: '/api/v1/conversations/:id',
      auth: true,
      handle: async (ctx) => ({ status: 200, body: { conversation: await conversations.get(uuidParam(ctx.params, 'id'), ctx.user.id) } }),
    },
    {
      method: 'post',
      path: '/api/v1/conversations/:id/members',
      auth: true,
      async handle(ctx) {
        const id = uuidParam(ctx.params, 'id');
        const { user_id } = parseInput(addMemberBody, ctx.body);
        return { status: 200, body: { conversation: await conversations.addMember(id, ctx.user.id, user_id) } };
      },
    },
    {
      method: 'delete',
      path: '/api/v1/conversations/:id/members/:user_id',
      auth: true,
      async handle(ctx) {
        await conversations.removeMember(uuidParam(ctx.params, 'id'), ctx.user.id, uuidParam(ctx.params, 'user_id'));
        return { status: 204 };
      },
    },
    {
      method: 'post',
      path: '/api/v1/conversations/:id/read',
      auth: true,
      async handle(ctx) {
        const id = uuidParam(ctx.params, 'id');
        const { seq } = parseInput(readBody, ctx.body);
        return { status: 200, body: await conversations.markRead(id, ctx.user.id, seq) };
      },
    },
    {
      method: 'post',
      path: '/api/v1/conversations/:id/rotate-key',
      auth: true,
      handle: async (ctx) => ({ status: 200, body: await conversations.rotateKey(uuidParam(ctx.params, 'id'), ctx.user.id) }),
    },
  ];
}
