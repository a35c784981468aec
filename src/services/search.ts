import { createHmac, timingSafeEqual } from 'node:crypto';
import type pg from 'pg';
import { invalid } from '../errors.js';
import { listMembers } from '../db/conversations.js';
import { memberConversationIds, selectSearchPage } from '../db/search.js';
import { searchWords } from '../crypto/search-tokens.js';
import type { SearchTokenizer } from './search-tokenizer.js';
import type { ConversationService } from './conversations.js';
import { statusAcross, type Message } from './message-view.js';
import type { MessageService } from './messages.js';
import type { RateLimits } from './rate-limiter.js';

export interface SearchServiceOptions {
  pool: pg.Pool;
  tokens: SearchTokenizer;
  conversations: ConversationService;
  messages: MessageService;
  /** Sign paging cursors (the first; any is accepted), so a cursor the server did not issue is refused. */
  cursorSecrets: Buffer[];
  /** `search`, per user. */
  limits: RateLimits;
}

/** Search over encrypted messages through the blind index (docs/design.md). */
export class SearchService {
  readonly #o: SearchServiceOptions;

  constructor(options: SearchServiceOptions) {
    this.#o = options;
  }

  #sign(payload: string, secret: Buffer = this.#o.cursorSecrets[0]!): string {
    return createHmac('sha256', secret).update(`sotalk-search-cursor:${payload}`).digest().subarray(0, 16).toString('base64url');
  }

  #encodeCursor(createdUs: number, id: string): string {
    const payload = `${createdUs}:${id}`;
    return `${Buffer.from(payload).toString('base64url')}.${this.#sign(payload)}`;
  }

  #decodeCursor(cursor: string): { createdUs: number; id: string } {
    const parts = /^([A-Za-z0-9_-]{1,200})\.([A-Za-z0-9_-]{1,100})$/.exec(cursor);
    const [body = '', mac = ''] = parts ? [parts[1], parts[2]] : [];
    const payload = Buffer.from(body, 'base64url').toString('utf8');
    // Exactly the encoding the server issues (the decoder alone would forgive stray characters).
    const match = Buffer.from(payload).toString('base64url') === body ? /^(\d{1,20}):([0-9a-f-]{36})$/.exec(payload) : null;
    const given = Buffer.from(mac);
    const signed = this.#o.cursorSecrets.some((secret) => {
      const expected = Buffer.from(this.#sign(payload, secret));
      return given.length === expected.length && timingSafeEqual(given, expected);
    });
    if (!match || !signed) {
      throw invalid('before', 'before is not a cursor this server issued');
    }
    return { createdUs: Number(match[1]), id: match[2]! };
  }

  async search(
    viewerId: string,
    q: string,
    limit: number,
    before: string | undefined,
    conversationId: string | undefined,
    requestId: string,
  ): Promise<{ results: { message: Message }[]; next_cursor: string | null }> {
    const words = searchWords(q);
    if (words.length === 0) throw invalid('q', 'q must contain at least one word of 2 to 64 letters or digits');
    const cursor = before === undefined ? undefined : this.#decodeCursor(before);
    await this.#o.limits.take('search', viewerId);
    let conversationIds: string[];
    if (conversationId) {
      await this.#o.conversations.requireMember(conversationId, viewerId);
      conversationIds = [conversationId];
    } else {
      conversationIds = await memberConversationIds(this.#o.pool, viewerId);
    }
    if (conversationIds.length === 0) return { results: [], next_cursor: null };
    const tokens = await this.#o.tokens.queryTokens(conversationIds, words);
    const rows = await selectSearchPage(this.#o.pool, tokens, words.length, cursor, limit + 1);
    const page = rows.slice(0, limit);
    const members = await listMembers(this.#o.pool, [...new Set(page.map((r) => r.conversation_id))]);
    const messages = await this.#o.messages.render(viewerId, page, statusAcross(members), 'search', requestId);
    const last = page[page.length - 1];
    return {
      results: messages.map((message) => ({ message })),
      next_cursor: rows.length > limit && last ? this.#encodeCursor(last.created_us, last.id) : null,
    };
  }
}
