import { z } from 'zod';
import { invalid } from '../errors.js';
import type { PageCursor } from '../db/messages.js';
import { CONTENT_TYPES, type MessageService, type SendInput } from '../services/messages.js';
import type { RequestContext, Route } from './router.js';
import { NO_NUL, NO_NUL_MESSAGE, WELL_FORMED_MESSAGE, intQuery, parseInput, uuid, uuidParam, uuidQuery, wellFormed } from './validation.js';

/** Shared by HTTP sends and socket sends. */
export const sendFields = {
  content: z
    .string()
    .min(1, 'content must not be empty')
    // A lone surrogate cannot be stored as UTF-8 and would not round-trip.
    .refine((s) => s.isWellFormed(), 'content must be well-formed Unicode (no lone surrogates)'),
  content_type: z.enum(CONTENT_TYPES).default('text'),
  reply_to_id: uuid.nullish(),
  client_message_id: z.string().min(1).max(128).regex(NO_NUL, NO_NUL_MESSAGE).refine(wellFormed, WELL_FORMED_MESSAGE).nullish(),
  signature: z.string().max(256).regex(NO_NUL, NO_NUL_MESSAGE).refine(wellFormed, WELL_FORMED_MESSAGE).nullish(),
};

/** Where a send goes: exactly one of a conversation or a recipient (HTTP body and socket frame alike). */
export const sendTarget = { conversation_id: uuid.optional(), recipient_id: uuid.optional() };

export function exactlyOneTarget(v: { conversation_id?: string | undefined; recipient_id?: string | undefined }, ctx: z.RefinementCtx): void {
  if (!v.conversation_id === !v.recipient_id) {
    ctx.addIssue({ code: 'custom', path: ['conversation_id'], message: 'give exactly one of conversation_id and recipient_id' });
  }
}

export const sendBody = z.object({ ...sendTarget, ...sendFields }).superRefine(exactlyOneTarget);

/** A validated send (HTTP body or socket frame) as the message service takes it. */
export function toSendInput(v: z.output<typeof sendBody>): SendInput {
  return {
    conversationId: v.conversation_id,
    recipientId: v.recipient_id,
    content: v.content,
    contentType: v.content_type,
    replyToId: v.reply_to_id ?? null,
    clientMessageId: v.client_message_id ?? null,
    signature: v.signature ?? null,
  };
}

const editBody = z.object({ content: sendFields.content });

function pageCursor(query: URLSearchParams): PageCursor {
  const before = intQuery(query, 'before_seq', { min: 0, max: Number.MAX_SAFE_INTEGER });
  const after = intQuery(query, 'after_seq', { min: 0, max: Number.MAX_SAFE_INTEGER });
  if (before !== undefined && after !== undefined) throw invalid('before_seq', 'give before_seq or after_seq, not both');
  if (before !== undefined) return { kind: 'before', seq: before };
  if (after !== undefined) return { kind: 'after', seq: after };
  return { kind: 'latest' };
}

export function messageRoutes(messages: MessageService): Route[] {
  const history = async (ctx: RequestContext, conversationId: string) => {
    const limit = intQuery(ctx.query, 'limit', { min: 1, max: 200, fallback: 50 })!;
    return { status: 200, body: await messages.page(ctx.user.id, conversationId, pageCursor(ctx.query), limit, ctx.requestId) };
  };
  return [
    {
      method: 'post',
      path: '/api/v1/messages',
      auth: true,
      async handle(ctx) {
        const { message, created } = await messages.send(ctx.user.id, toSendInput(parseInput(sendBody, ctx.body)));
        return { status: created ? 201 : 200, body: { message } };
      },
    },
    {
      method: 'get',
      path: '/api/v1/conversations/:id/messages',
      auth: true,
      handle: (ctx) => history(ctx, uuidParam(ctx.params, 'id')),
    },
    {
      method: 'get',
      path: '/api/v1/messages',
      auth: true,
      handle(ctx) {
        const id = uuidQuery(ctx.query, 'conv_id');
        if (!id) throw invalid('conv_id', 'conv_id is required');
        return history(ctx, id);
      },
    },
    {
      method: 'patch',
      path: '/api/v1/messages/:id',
      auth: true,
      async handle(ctx) {
        const id = uuidParam(ctx.params, 'id');
        const { content } = parseInput(editBody, ctx.body);
        return { status: 200, body: { message: await messages.edit(ctx.user.id, id, content) } };
      },
    },
    {
      method: 'delete',
      path: '/api/v1/messages/:id',
      auth: true,
      handle: async (ctx) => ({ status: 200, body: { message: await messages.delete(ctx.user.id, uuidParam(ctx.params, 'id')) } }),
    },
  ];
}
