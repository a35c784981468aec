// SoTalkClient: wallet sign-in with token renewal, and one typed call per HTTP endpoint, with
// retries where repeating a request is harmless (docs/protocol.md).

import { backoffDelay, quietTimeout, sleep } from './backoff.js';
import { ENDPOINTS } from './endpoints.js';
import { isTransient, SoTalkError } from './errors.js';
import { LiveConnection } from './live.js';

/** @typedef {import('./types.js').OperationId} OperationId */
/** @typedef {import('./types.js').Session} Session */

/** A fresh client_message_id. */
export const newClientMessageId = () => crypto.randomUUID();

export class SoTalkClient {
  #baseUrl;
  #wallet;
  /** @type {Session | undefined} */
  #session;
  /** @type {Promise<Session> | undefined} */
  #signingIn;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #renewTimer;
  /** @type {Set<(session: Session) => void>} */
  #sessionListeners = new Set();
  #fetch;
  #renewBeforeMs;
  #timeoutMs;
  #retries;
  #retryDelayMs;
  #maxRetryDelayMs;

  /** @param {import('./types.js').ClientOptions} options */
  constructor(options) {
    this.#baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.#wallet = options.wallet;
    this.#session = options.session;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#renewBeforeMs = options.renewBeforeMs ?? 5 * 60_000;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#retries = options.retries ?? 4;
    this.#retryDelayMs = options.retryDelayMs ?? 200;
    this.#maxRetryDelayMs = options.maxRetryDelayMs ?? 5_000;
    if (!this.#wallet && !this.#session) throw new TypeError('SoTalkClient needs a wallet or a session');
    if (this.#session) this.#scheduleRenewal(this.#session);
  }

  get baseUrl() {
    return this.#baseUrl;
  }

  /** The signed-in user (after signIn). */
  get user() {
    return this.#session?.user;
  }

  /** The current session, if signed in. */
  get session() {
    return this.#session;
  }

  /**
   * Signs the wallet in (challenge, signature, verify) and keeps the token fresh: it is renewed
   * `renewBeforeMs` before it expires, and at once when the server refuses it.
   * @returns {Promise<Session>}
   */
  signIn() {
    if (!this.#wallet) return Promise.reject(new SoTalkError('unauthorized', 'no wallet to sign in with: the session cannot be renewed'));
    this.#signingIn ??= this.#signInOnce().finally(() => (this.#signingIn = undefined));
    return this.#signingIn;
  }

  async #signInOnce() {
    const wallet = /** @type {import('./types.js').Wallet} */ (this.#wallet);
    const challenge = await this.call('createAuthChallenge', { body: { wallet: wallet.address } });
    const signature = await wallet.sign(challenge.message);
    const verified = await this.#once('verifyAuthChallenge', { body: { wallet: wallet.address, nonce: challenge.nonce, signature } }, undefined);
    /** @type {Session} */
    const session = { token: verified.token, expiresAt: Date.parse(verified.expires_at), user: verified.user };
    this.#session = session;
    this.#scheduleRenewal(session);
    for (const listener of this.#sessionListeners) listener(session);
    return session;
  }

  /** @param {Session} session */
  #scheduleRenewal(session) {
    clearTimeout(this.#renewTimer);
    if (!this.#wallet) return;
    const life = session.expiresAt - Date.now();
    const at = life - Math.min(this.#renewBeforeMs, life / 2);
    this.#renewTimer = quietTimeout(() => {
      this.signIn().catch(() => this.#scheduleRenewal(session));
    }, Math.max(1_000, Math.min(at, 2 ** 31 - 1)));
  }

  /**
   * Calls `listener` with every new session (after a renewal); returns the unsubscriber.
   * @param {(session: Session) => void} listener
   */
  onSession(listener) {
    this.#sessionListeners.add(listener);
    return () => this.#sessionListeners.delete(listener);
  }

  /** A token valid now (signing in or renewing first when needed). */
  async token() {
    const session = this.#session;
    if (session && session.expiresAt - Date.now() > 5_000) return session.token;
    return (await this.signIn()).token;
  }

  /** Stops renewing the token. */
  close() {
    clearTimeout(this.#renewTimer);
    this.#sessionListeners.clear();
  }

  /**
   * Calls one endpoint of docs/openapi.json by its operationId. Retries transient failures
   * (unreachable, timeout, 429, 503) of requests that are safe to repeat, honouring Retry-After;
   * renews the token once when the server refuses it.
   * @template {OperationId} K
   * @param {K} operation
   * @param {import('./types.js').RequestOf<K>} [request]
   * @returns {Promise<import('./types.js').AnswerOf<K>>}
   */
  async call(operation, request) {
    const endpoint = ENDPOINTS[operation];
    return this.#retrying(endpoint.idempotent, () => this.#withToken(endpoint.auth, (token) => this.#once(operation, request, token)));
  }

  /**
   * A request by method and path (under the server's root, e.g. `/api/v1/users/me`), for callers
   * that build paths themselves; the answer is untyped. GET and PATCH are retried like `call`;
   * POST and DELETE only when the server refused them (429) or was never reached.
   * @param {'GET' | 'POST' | 'PATCH' | 'DELETE'} method
   * @param {string} path
   * @param {unknown} [body]
   * @returns {Promise<any>}
   */
  request(method, path, body) {
    return this.#retrying(method === 'GET' || method === 'PATCH', () => this.#withToken(true, (token) => this.#send(method, path, body, token)));
  }

  /**
   * @template T
   * @param {boolean} idempotent
   * @param {() => Promise<T>} attempt
   * @returns {Promise<T>}
   */
  async #retrying(idempotent, attempt) {
    for (let n = 0; ; n++) {
      try {
        return await attempt();
      } catch (err) {
        if (!(err instanceof SoTalkError) || n >= this.#retries || !isTransient(err)) throw err;
        // a request refused before it was handled (429, or no connection at all) changed nothing
        if (!idempotent && err.code !== 'rate_limited' && !(err.code === 'network' && err.cause)) throw err;
        const backoff = backoffDelay(n, this.#retryDelayMs, this.#maxRetryDelayMs);
        await sleep(err.retryAfterS !== undefined ? Math.min(err.retryAfterS * 1000, this.#maxRetryDelayMs) : backoff);
      }
    }
  }

  /**
   * Runs `attempt` with a valid token (none when `auth` is false); when the server refuses the
   * token, signs in again and runs it once more.
   * @template T
   * @param {boolean} auth
   * @param {(token: string | undefined) => Promise<T>} attempt
   * @returns {Promise<T>}
   */
  async #withToken(auth, attempt) {
    if (!auth) return attempt(undefined);
    const token = await this.token();
    try {
      return await attempt(token);
    } catch (err) {
      if (!(err instanceof SoTalkError) || err.code !== 'unauthorized' || !this.#wallet) throw err;
      if (this.#session?.token === token) this.#session = undefined;
      return attempt(await this.token());
    }
  }

  /**
   * One HTTP request, no retries.
   * @template {OperationId} K
   * @param {K} operation
   * @param {import('./types.js').RequestOf<K> | undefined} request
   * @param {string | undefined} token
   * @returns {Promise<import('./types.js').AnswerOf<K>>}
   */
  async #once(operation, request, token) {
    const endpoint = ENDPOINTS[operation];
    const req = /** @type {{ path?: Record<string, string>, query?: Record<string, unknown>, body?: unknown }} */ (request ?? {});
    let path = endpoint.path.replace(/\{(\w+)\}/g, (_, name) => encodeURIComponent(String(req.path?.[name] ?? '')));
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(req.query ?? {})) if (value !== undefined && value !== null) query.set(name, String(value));
    if (query.size > 0) path += '?' + query.toString();
    return this.#send(endpoint.method, path, req.body, token, operation === 'metrics');
  }

  /**
   * One HTTP request: the parsed JSON answer (the text with `raw`), or a SoTalkError.
   * @param {string} method
   * @param {string} path
   * @param {unknown} body
   * @param {string | undefined} token
   * @param {boolean} [raw]
   * @returns {Promise<any>}
   */
  async #send(method, path, body, token, raw = false) {
    /** @type {Record<string, string>} */
    const headers = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res;
    try {
      res = await this.#fetch(this.#baseUrl + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (err) {
      const timedOut = /** @type {Error} */ (err).name === 'TimeoutError';
      throw new SoTalkError(timedOut ? 'timeout' : 'network', timedOut ? `no answer from ${this.#baseUrl} within ${this.#timeoutMs} ms` : `cannot reach ${this.#baseUrl}`, {
        cause: timedOut ? undefined : err,
      });
    }
    const text = await res.text();
    const requestId = res.headers.get('x-request-id') ?? undefined;
    if (!res.ok) {
      let error;
      try {
        error = JSON.parse(text).error;
      } catch {
        error = undefined;
      }
      const retryAfter = Number(res.headers.get('retry-after'));
      throw new SoTalkError(error?.code ?? (res.status >= 500 ? 'unavailable' : 'invalid_request'), error?.message ?? `${method} ${path.split('?')[0]}: ${res.status}`, {
        status: res.status,
        field: error?.field,
        retryAfterS: res.headers.has('retry-after') && Number.isFinite(retryAfter) ? retryAfter : undefined,
        requestId,
      });
    }
    if (raw) return text;
    return text === '' ? undefined : JSON.parse(text);
  }

  // One method per endpoint, named after what it does.

  features() {
    return this.call('getFeatures');
  }

  async me() {
    return (await this.call('getMe')).user;
  }

  /** @param {import('./types.js').Schemas['PatchMeRequest']} body */
  async updateMe(body) {
    return (await this.call('updateMe', { body })).user;
  }

  /** @param {string} id */
  async getUser(id) {
    return (await this.call('getUser', { path: { id } })).user;
  }

  /** @param {string} wallet */
  async findUsersByWallet(wallet) {
    return (await this.call('findUsersByWallet', { query: { wallet } })).users;
  }

  /** @param {import('./types.js').Schemas['CreateConversationRequest']} body */
  async createConversation(body) {
    return (await this.call('createConversation', { body })).conversation;
  }

  /** @param {string} userId the direct conversation with this user, made if needed */
  directConversation(userId) {
    return this.createConversation({ type: 'direct', member_ids: [userId] });
  }

  /** @param {{ limit?: number, before?: string }} [query] */
  listConversations(query) {
    return this.call('listConversations', { query });
  }

  /** Every conversation of the user, following next_cursor. */
  async allConversations() {
    /** @type {import('./types.js').ConversationListItem[]} */
    const all = [];
    /** @type {string | undefined} */
    let before;
    do {
      const page = await this.listConversations({ limit: 100, before });
      all.push(...page.conversations);
      before = page.next_cursor ?? undefined;
    } while (before);
    return all;
  }

  /** @param {string} id */
  async getConversation(id) {
    return (await this.call('getConversation', { path: { id } })).conversation;
  }

  /** @param {string} id @param {string} userId */
  addMember(id, userId) {
    return this.call('addConversationMember', { path: { id }, body: { user_id: userId } });
  }

  /** @param {string} id @param {string} userId */
  removeMember(id, userId) {
    return this.call('removeConversationMember', { path: { id, user_id: userId } });
  }

  /** @param {string} id @param {number} seq */
  markRead(id, seq) {
    return this.call('markConversationRead', { path: { id }, body: { seq } });
  }

  /** @param {string} id */
  rotateKey(id) {
    return this.call('rotateConversationKey', { path: { id } });
  }

  /** @param {string} id @param {{ limit?: number, before_seq?: number, after_seq?: number }} [query] */
  messages(id, query) {
    return this.call('listConversationMessages', { path: { id }, query });
  }

  /**
   * Every message of a conversation after `afterSeq`, in seq order, page by page.
   * @param {string} id
   * @param {number} afterSeq
   * @param {number} [pageSize]
   */
  async *messagesAfter(id, afterSeq, pageSize = 200) {
    let after = afterSeq;
    for (;;) {
      const page = await this.messages(id, { after_seq: after, limit: pageSize });
      for (const message of page.messages) if (message.seq > after) yield message;
      if (page.messages.length > 0) after = /** @type {import('./types.js').Message} */ (page.messages.at(-1)).seq;
      if (!page.has_more || page.messages.length === 0) return;
    }
  }

  /**
   * Sends a message. It carries a client_message_id (a fresh one unless given), so a retry after
   * a lost answer stores nothing twice: the answer is then the message as first stored.
   * @param {import('./types.js').SendMessageRequest} body
   */
  async sendMessage(body) {
    const withId = body.client_message_id ? body : { ...body, client_message_id: newClientMessageId() };
    return (await this.call('sendMessage', { body: withId })).message;
  }

  /** @param {string} id @param {string} content */
  async editMessage(id, content) {
    return (await this.call('editMessage', { path: { id }, body: { content } })).message;
  }

  /** @param {string} id */
  async deleteMessage(id) {
    return (await this.call('deleteMessage', { path: { id } })).message;
  }

  /** @param {string} id */
  messageAtRest(id) {
    return this.call('getMessageAtRest', { path: { id } });
  }

  /** @param {{ q: string, limit?: number, before?: string, conversation_id?: string }} query */
  search(query) {
    return this.call('searchMessages', { query });
  }

  /**
   * A live connection (the /ws socket) that delivers every message of the user's conversations
   * exactly once and in seq order, reconnecting and catching up by itself. Call start() on it.
   * @param {import('./types.js').LiveOptions} [options]
   */
  live(options) {
    return new LiveConnection(this, options);
  }
}
