// LiveConnection: the /ws socket made dependable (docs/protocol.md, WebSocket). It reconnects with
// backoff and jitter, renews its token, and turns best-effort events plus authoritative history
// into one stream that holds every message of the user's conversations exactly once, each
// conversation in seq order: a message out of order waits for its predecessor, a gap is filled
// from history (after_seq), and after every (re)connection each conversation is caught up.

import { backoffDelay, quietTimeout } from './backoff.js';
import { jsonCodec, msgpackCodec } from './codec.js';
import { SoTalkError } from './errors.js';

/** @typedef {import('./types.js').Message} Message */
/** @typedef {import('./types.js').LiveEvents} LiveEvents */
/**
 * One conversation's place in the stream.
 * @typedef {{ seq: number, pending: Map<number, Message>, fetching: boolean, again: boolean, stale: boolean, gapTimer: ReturnType<typeof setTimeout> | undefined }} ConversationState
 */
/** @typedef {{ frame: Record<string, unknown> & { request_id: string }, resolve: (m: Message) => void, reject: (e: Error) => void, timer: ReturnType<typeof setTimeout> }} PendingSend */

const OPEN = 1;

/** @returns {Promise<import('./types.js').WebSocketFactory>} */
async function defaultWebSocket() {
  const Native = /** @type {any} */ (globalThis).WebSocket;
  // browsers cannot set headers on a WebSocket: the token goes in the query there
  if (typeof Native === 'function') return (url, protocols, token) => new Native(`${url}?token=${encodeURIComponent(token)}`, protocols);
  const { default: Ws } = /** @type {any} */ (await import('ws'));
  return (url, protocols, token) => new Ws(url, protocols, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
}

export class LiveConnection {
  #client;
  #options;
  /** @type {import('./types.js').Codec} */
  #codec = jsonCodec;
  /** @type {import('./types.js').WebSocketFactory | undefined} */
  #factory;
  /** @type {import('./types.js').WebSocketLike | undefined} */
  #ws;
  /** @type {import('./types.js').LiveState} */
  #state = 'offline';
  #stopped = false;
  #attempt = 0;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #reconnectTimer;
  /** @type {ReturnType<typeof setInterval> | undefined} */
  #pingTimer;
  #lastFrameAt = 0;
  /** @type {{ [K in keyof LiveEvents]: Set<LiveEvents[K]> }} */
  #listeners = { state: new Set(), event: new Set(), lagging: new Set(), error: new Set() };
  /** @type {Map<string, ConversationState>} */
  #conversations = new Map();
  /** Last seq the consumer took, per conversation. */
  /** @type {Map<string, number>} */
  #taken = new Map();
  // positions are set from the first conversation list; messages arriving before it wait here
  #ready = false;
  /** @type {Message[]} */
  #early = [];
  /** @type {(() => void) | undefined} */
  #onReady;
  /** @type {Message[]} */
  #queue = [];
  #head = 0;
  #lagging = false;
  /** @type {(() => void) | undefined} */
  #wake;
  /** @type {Map<string, PendingSend>} */
  #sends = new Map();
  #nextRequest = 1;
  /** @type {(() => void) | undefined} */
  #unsubscribeSession;
  /** The token the current socket was opened with. */
  #socketToken = '';

  /**
   * @param {import('./client.js').SoTalkClient} client
   * @param {import('./types.js').LiveOptions} [options]
   */
  constructor(client, options = {}) {
    this.#client = client;
    const highWaterMark = options.highWaterMark ?? 10_000;
    this.#options = {
      positions: options.positions ?? {},
      highWaterMark,
      lowWaterMark: options.lowWaterMark ?? Math.floor(highWaterMark / 2),
      reconnectDelayMs: options.reconnectDelayMs ?? 250,
      maxReconnectDelayMs: options.maxReconnectDelayMs ?? 10_000,
      pingIntervalMs: options.pingIntervalMs ?? 25_000,
      gapWaitMs: options.gapWaitMs ?? 200,
      sendTimeoutMs: options.sendTimeoutMs ?? 30_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      pageSize: options.pageSize ?? 200,
      encoding: options.encoding ?? 'json',
      msgpack: options.msgpack,
      webSocket: options.webSocket,
    };
  }

  /** connecting, live (socket open and subscribed), offline (waiting to reconnect) or closed. */
  get state() {
    return this.#state;
  }

  /** Messages delivered to the stream and not yet taken by the consumer. */
  get queued() {
    return this.#queue.length - this.#head;
  }

  /**
   * The last seq the consumer took, per conversation: pass it as `positions` to a later
   * connection to go on where this one stopped.
   * @returns {Record<string, number>}
   */
  positions() {
    return Object.fromEntries(this.#taken);
  }

  /**
   * @template {keyof LiveEvents} K
   * @param {K} type
   * @param {LiveEvents[K]} listener
   * @returns {() => void} removes the listener
   */
  on(type, listener) {
    this.#listeners[type].add(listener);
    return () => this.#listeners[type].delete(listener);
  }

  /**
   * Signs in if needed, connects, and resolves once the socket is live and every conversation's
   * starting position is known. Connection failures are retried, not thrown.
   */
  async start() {
    if (this.#factory) throw new Error('start() was already called');
    this.#codec = this.#options.encoding === 'msgpack' ? await msgpackCodec(this.#options.msgpack) : jsonCodec;
    this.#factory = this.#options.webSocket ?? (await defaultWebSocket());
    // a renewed token gets a new socket at once (the old one would be closed when its token expires)
    this.#unsubscribeSession = this.#client.onSession((session) => this.#ws && this.#socketToken !== session.token && this.#reconnectNow());
    const ready = new Promise((resolve) => (this.#onReady = () => resolve(undefined)));
    void this.#connect();
    await ready;
  }

  /** Stops: closes the socket, ends the message stream, fails unanswered sends with `closed`. */
  close() {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#unsubscribeSession?.();
    clearTimeout(this.#reconnectTimer);
    clearInterval(this.#pingTimer);
    for (const state of this.#conversations.values()) clearTimeout(state.gapTimer);
    const ws = this.#ws;
    this.#ws = undefined;
    ws?.close(1000);
    for (const [id, send] of this.#sends) {
      clearTimeout(send.timer);
      send.reject(new SoTalkError('closed', 'the live connection was closed before the server answered'));
      this.#sends.delete(id);
    }
    this.#setState('closed');
    this.#wake?.();
  }

  /**
   * The message stream: every message of the user's conversations (the user's own included),
   * exactly once, each conversation in seq order. Ends when close() is called.
   * @returns {AsyncIterableIterator<Message>}
   */
  [Symbol.asyncIterator]() {
    return {
      next: () => this.next(),
      return: async () => ({ done: true, value: undefined }),
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  /** The next message of the stream; `done` once closed. @returns {Promise<IteratorResult<Message, undefined>>} */
  async next() {
    for (;;) {
      if (this.#head < this.#queue.length) {
        const message = /** @type {Message} */ (this.#queue[this.#head++]);
        if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
          this.#queue = this.#queue.slice(this.#head);
          this.#head = 0;
        }
        this.#taken.set(message.conversation_id, message.seq);
        if (this.#lagging && this.queued <= this.#options.lowWaterMark) this.#resume();
        return { done: false, value: message };
      }
      if (this.#stopped) return { done: true, value: undefined };
      await new Promise((resolve) => (this.#wake = () => resolve(undefined)));
      this.#wake = undefined;
    }
  }

  /**
   * Sends a message over the socket; resolves with the stored message once the server committed
   * it. A fresh client_message_id is added unless given; a send cut off by a disconnect is sent
   * again after reconnecting, under the same id, so it is stored once whatever happened.
   * @param {import('./types.js').SendMessageRequest} body
   * @returns {Promise<Message>}
   */
  send(body) {
    if (this.#stopped) return Promise.reject(new SoTalkError('closed', 'the live connection is closed'));
    const frame = { ...body, type: 'send', client_message_id: body.client_message_id ?? crypto.randomUUID(), request_id: `s${this.#nextRequest++}` };
    return new Promise((resolve, reject) => {
      const timer = quietTimeout(() => {
        this.#sends.delete(frame.request_id);
        reject(new SoTalkError('timeout', `no answer to the send within ${this.#options.sendTimeoutMs} ms`));
      }, this.#options.sendTimeoutMs);
      this.#sends.set(frame.request_id, { frame, resolve, reject, timer });
      if (this.#state === 'live') this.#write(frame);
    });
  }

  /**
   * A delivery (`received`) or `read` receipt up to `seq`; false when not connected (receipts
   * never move backwards, so a later one covers a lost one).
   * @param {'received' | 'read'} type
   * @param {string} conversationId
   * @param {number} seq
   */
  receipt(type, conversationId, seq) {
    return this.#state === 'live' && this.#write({ type, conversation_id: conversationId, seq });
  }

  /** A typing notice; false when not connected. @param {string} conversationId */
  typing(conversationId) {
    return this.#state === 'live' && this.#write({ type: 'typing', conversation_id: conversationId });
  }

  /** @param {Record<string, unknown>} frame */
  #write(frame) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== OPEN) return false;
    ws.send(this.#codec.encode(frame));
    return true;
  }

  async #connect() {
    if (this.#stopped) return;
    this.#setState('connecting');
    let token;
    try {
      // after repeated failures make sure the token is still accepted (a refused upgrade says nothing)
      if (this.#attempt >= 2) await this.#client.me();
      token = await this.#client.token();
    } catch (err) {
      this.#emit('error', /** @type {Error} */ (err));
      this.#scheduleReconnect();
      return;
    }
    if (this.#stopped) return;
    const url = this.#client.baseUrl.replace(/^http/, 'ws') + '/ws';
    const factory = /** @type {import('./types.js').WebSocketFactory} */ (this.#factory);
    const ws = factory(url, this.#codec.protocol ? [this.#codec.protocol] : [], token);
    this.#socketToken = token;
    ws.binaryType = 'arraybuffer';
    this.#ws = ws;
    ws.onmessage = (event) => {
      if (this.#ws !== ws) return;
      this.#lastFrameAt = Date.now();
      let frame;
      try {
        frame = this.#codec.decode(event.data);
      } catch {
        return;
      }
      this.#onFrame(frame);
    };
    ws.onerror = () => {}; // a close event follows
    // a connection accepted but never answered (a server starting or stuck) is given up on
    const helloTimer = quietTimeout(() => this.#ws === ws && this.#state === 'connecting' && this.#abandon(ws), this.#options.connectTimeoutMs);
    ws.onopen = () => {};
    ws.onclose = (event) => {
      clearTimeout(helloTimer);
      if (this.#ws !== ws) return;
      this.#ws = undefined;
      this.#onClosed(event.code);
    };
  }

  /** @param {number} code */
  #onClosed(code) {
    clearInterval(this.#pingTimer);
    if (this.#stopped) return;
    this.#setState('offline');
    if (code === 4001) {
      // the token expired under the socket: sign in again, then reconnect at once
      this.#client.signIn().then(
        () => this.#reconnectNow(),
        (err) => {
          this.#emit('error', err);
          this.#scheduleReconnect();
        },
      );
      return;
    }
    this.#scheduleReconnect();
  }

  #scheduleReconnect() {
    if (this.#stopped) return;
    clearTimeout(this.#reconnectTimer);
    const delay = backoffDelay(this.#attempt++, this.#options.reconnectDelayMs, this.#options.maxReconnectDelayMs);
    // not a quiet timer: a connection waiting to come back keeps a Node process alive until close()
    this.#reconnectTimer = setTimeout(() => void this.#connect(), delay);
  }

  #reconnectNow() {
    if (this.#stopped || !this.#factory) return;
    clearTimeout(this.#reconnectTimer);
    clearInterval(this.#pingTimer);
    const ws = this.#ws;
    this.#ws = undefined;
    ws?.close(1000);
    void this.#connect();
  }

  /** @param {any} frame */
  #onFrame(frame) {
    if (frame === null || typeof frame !== 'object') return;
    const send = typeof frame.request_id === 'string' ? this.#sends.get(frame.request_id) : undefined;
    switch (frame.type) {
      case 'hello':
        this.#attempt = 0;
        this.#setState('live');
        this.#startPings();
        for (const pending of this.#sends.values()) this.#write(pending.frame);
        void this.#catchUpAll();
        return;
      case 'pong':
        return;
      case 'ack':
        if (!send) return;
        this.#sends.delete(frame.request_id);
        clearTimeout(send.timer);
        send.resolve(frame.message);
        this.#onMessage(frame.message);
        return;
      case 'error':
        if (send) this.#onSendError(send, frame.error ?? {});
        else if (frame.request_id == null && frame.error?.code !== 'unauthorized') this.#emit('error', new SoTalkError(frame.error?.code ?? 'invalid_request', frame.error?.message ?? 'socket error'));
        return;
      case 'new_message':
        this.#emit('event', frame);
        this.#onMessage(frame.message);
        return;
      default:
        this.#emit('event', frame);
    }
  }

  /**
   * @param {PendingSend} send
   * @param {{ code?: import('./types.js').ErrorCode, message?: string, field?: string }} error
   */
  #onSendError(send, error) {
    if (error.code === 'unavailable' || error.code === 'rate_limited') {
      // nothing was stored: try again a little later (on this socket or after the next hello)
      quietTimeout(() => this.#sends.has(send.frame.request_id) && this.#state === 'live' && this.#write(send.frame), backoffDelay(1, 500, 5_000));
      return;
    }
    this.#sends.delete(send.frame.request_id);
    clearTimeout(send.timer);
    send.reject(new SoTalkError(error.code ?? 'invalid_request', error.message ?? 'the server refused the send', { field: error.field }));
  }

  /** Drops a socket that does not answer and reconnects. @param {import('./types.js').WebSocketLike} ws */
  #abandon(ws) {
    this.#ws = undefined;
    ws.close(1000);
    this.#onClosed(1006);
  }

  #startPings() {
    clearInterval(this.#pingTimer);
    this.#lastFrameAt = Date.now();
    const interval = this.#options.pingIntervalMs;
    this.#pingTimer = setInterval(() => {
      if (Date.now() - this.#lastFrameAt > 2 * interval) {
        // nothing arrived, not even a pong: the connection is dead even if the socket does not know
        if (this.#ws) this.#abandon(this.#ws);
        return;
      }
      this.#write({ type: 'ping' });
    }, interval);
    /** @type {any} */ (this.#pingTimer).unref?.();
  }

  /** After every hello: each conversation whose last_seq is beyond what the stream holds is read from history. */
  async #catchUpAll() {
    const ws = this.#ws;
    let list;
    try {
      list = await this.#client.allConversations();
    } catch (err) {
      this.#emit('error', /** @type {Error} */ (err));
      // still on the same socket: try again (a new socket catches up by itself)
      quietTimeout(() => this.#ws === ws && this.#state === 'live' && void this.#catchUpAll(), backoffDelay(this.#attempt, 500, 10_000));
      return;
    }
    if (this.#stopped) return;
    for (const conversation of list) {
      let state = this.#conversations.get(conversation.id);
      if (!state) {
        let start = this.#options.positions[conversation.id] ?? (this.#ready ? 0 : conversation.last_seq);
        // on the first list, messages that came as events meanwhile are after the start
        for (const message of this.#early) if (message.conversation_id === conversation.id) start = Math.min(start, message.seq - 1);
        state = this.#conversationState(conversation.id, start);
      }
      if (conversation.last_seq > state.seq || state.stale) void this.#fetch(conversation.id, state);
    }
    if (!this.#ready) {
      this.#ready = true;
      const early = this.#early;
      this.#early = [];
      for (const message of early) this.#onMessage(message);
      this.#onReady?.();
    }
  }

  /** @param {string} id @param {number} seq */
  #conversationState(id, seq) {
    /** @type {ConversationState} */
    const state = { seq, pending: new Map(), fetching: false, again: false, stale: false, gapTimer: undefined };
    this.#conversations.set(id, state);
    if (!this.#taken.has(id)) this.#taken.set(id, seq);
    return state;
  }

  /** @param {Message | undefined} message */
  #onMessage(message) {
    if (!message || typeof message.seq !== 'number') return;
    if (!this.#ready) {
      this.#early.push(message);
      return;
    }
    const id = message.conversation_id;
    const state = this.#conversations.get(id) ?? this.#conversationState(id, this.#options.positions[id] ?? 0);
    if (message.seq <= state.seq) return;
    if (this.#lagging) {
      // not kept: history has it, and it is read once the consumer has caught up
      state.stale = true;
      return;
    }
    state.pending.set(message.seq, message);
    this.#drain(state);
    this.#watchGap(id, state);
  }

  /** A message waits for its predecessor a moment (it may be on its way), then history is read. @param {string} id @param {ConversationState} state */
  #watchGap(id, state) {
    if (state.pending.size === 0 || state.gapTimer || state.fetching || this.#stopped) return;
    state.gapTimer = quietTimeout(() => {
      state.gapTimer = undefined;
      if (state.pending.size > 0) void this.#fetch(id, state);
    }, this.#options.gapWaitMs);
  }

  /** Moves the messages that follow the stream's position, in order, to the consumer. @param {ConversationState} state */
  #drain(state) {
    for (let next = state.pending.get(state.seq + 1); next; next = state.pending.get(state.seq + 1)) {
      state.pending.delete(state.seq + 1);
      state.seq++;
      this.#enqueue(next);
    }
    for (const seq of state.pending.keys()) if (seq <= state.seq) state.pending.delete(seq);
  }

  /** @param {Message} message */
  #enqueue(message) {
    this.#queue.push(message);
    this.#wake?.();
    if (!this.#lagging && this.queued >= this.#options.highWaterMark) {
      this.#lagging = true;
      this.#emit('lagging', { queued: this.queued });
    }
  }

  /** The consumer drained below the low-water mark: read what it missed from history. */
  #resume() {
    this.#lagging = false;
    for (const [id, state] of this.#conversations) if (state.stale) void this.#fetch(id, state);
  }

  /**
   * Reads a conversation's history after the stream's position until the end (or until the
   * consumer is too far behind); one reader per conversation at a time.
   * @param {string} id
   * @param {ConversationState} state
   */
  async #fetch(id, state) {
    if (state.fetching) {
      state.again = true;
      return;
    }
    state.fetching = true;
    clearTimeout(state.gapTimer);
    state.gapTimer = undefined;
    try {
      do {
        state.again = false;
        state.stale = false;
        for (;;) {
          if (this.#stopped) return;
          if (this.#lagging) {
            state.stale = true;
            break;
          }
          const page = await this.#client.messages(id, { after_seq: state.seq, limit: this.#options.pageSize });
          for (const message of page.messages) if (message.seq > state.seq) state.pending.set(message.seq, message);
          this.#drain(state);
          if (!page.has_more || page.messages.length === 0) break;
        }
      } while (state.again && !this.#lagging);
    } catch (err) {
      // not a member any more: nothing to catch up (a later membership starts from here)
      if (err instanceof SoTalkError && err.code === 'not_found') return;
      state.stale = true;
      this.#emit('error', /** @type {Error} */ (err));
      // the next hello retries; while the socket stays up, retry here
      quietTimeout(() => this.#state === 'live' && state.stale && void this.#fetch(id, state), backoffDelay(1, 500, 10_000));
    } finally {
      state.fetching = false;
    }
    this.#watchGap(id, state);
  }

  /** @param {import('./types.js').LiveState} state */
  #setState(state) {
    if (this.#state === state) return;
    this.#state = state;
    this.#emit('state', state);
  }

  /**
   * @template {keyof LiveEvents} K
   * @param {K} type
   * @param {Parameters<LiveEvents[K]>[0]} value
   */
  #emit(type, value) {
    for (const listener of this.#listeners[type]) {
      try {
        /** @type {(v: typeof value) => void} */ (listener)(value);
      } catch {
        // a listener's failure is its own; the connection goes on
      }
    }
  }
}
