import { invalid } from '../errors.js';
import type { SearchService } from '../services/search.js';
import type { Route } from './router.js';
import { intQuery, uuidQuery } from './validation.js';

/** Registered only when SEARCH_ENABLED (otherwise /api/v1/search is a 404 like any unknown path). */
export function searchRoutes(search: SearchService): Route[] {
  return [
    {
      method: 'get',
      path: '/api/v1/search',
      auth: true,
      async handle(ctx) {
        const q = ctx.query.get('q') ?? '';
        const length = [...q].length;
        if (length < 1 || length > 256) throw invalid('q', 'q must be 1 to 256 characters');
        if (q.includes('\u0000')) throw invalid('q', 'q must not contain NUL characters');
        const limit = intQuery(ctx.query, 'limit', { min: 1, max: 100, fallback: 20 })!;
        const before = ctx.query.get('before') ?? undefined;
        const conversationId = uuidQuery(ctx.query, 'conversation_id');
        return { status: 200, body: await search.search(ctx.user.id, q, limit, before, conversationId, ctx.requestId) };
      },
    },
  ];
}
