import { LRUCache } from 'lru-cache';
import type { TemplatedApp } from '../http/uws.js';
import type { ConversationEvent } from './events.js';
import { packr } from './protocol.js';

/** One event encoded once per wire format, shared by every socket it goes to. */
export class EncodedEvent {
  #json: string | undefined;
  #msgpack: Buffer | undefined;
  constructor(readonly event: ConversationEvent) {}
  get json(): string {
    return (this.#json ??= JSON.stringify(this.event));
  }
  get msgpack(): Buffer {
    return (this.#msgpack ??= packr.pack(this.event));
  }
}

/** The parts of a uWS socket the hub uses. */
export interface HubSocket {
  subscribe(topic: string): boolean;
  unsubscribe(topic: string): boolean;
  getUserData(): { msgpack: boolean; closed: boolean };
}

/** uWS topics: one per conversation and one per user, each per wire format. */
export const conversationTopic = (conversationId: string, msgpack: boolean) => `c:${conversationId}:${msgpack ? 'm' : 'j'}`;
export const userTopic = (userId: string, msgpack: boolean) => `u:${userId}:${msgpack ? 'm' : 'j'}`;

interface LocalUser {
  sockets: Set<HubSocket>;
  /** Conversations whose topics this user's sockets are subscribed to. */
  conversations: Set<string>;
  /** Bumped by every membership change of this user, so a list loaded meanwhile is reloaded. */
  epoch: number;
  loaded: boolean;
  /** Settles once the sockets are subscribed to every conversation of the user. */
  ready: Promise<void>;
  markReady: () => void;
}

interface OrderState {
  conversationId: string;
  /** The seq to send next; undefined until the start of the sequence here is known. */
  next: number | undefined;
  /**
   * Events waiting for a predecessor: whether that predecessor was written less than a window
   * before this message (its event may still be on its way), and when this event arrived (ms).
   */
  held: Map<number, { event: EncodedEvent; close: boolean; seenAt: number }>;
  timer: NodeJS.Timeout | undefined;
}

export interface HubOptions {
  /** The conversations a user is a member of (loaded when their first socket opens here). */
  conversationsOf: (userId: string) => Promise<string[]>;
  /** The first local user of a conversation arrived / the last one left (Redis subscriptions follow). */
  onServe?: (conversationId: string) => void;
  onUnserve?: (conversationId: string) => void;
  /** How long a new_message waits for a predecessor whose event may still be on its way. */
  reorderWindowMs?: number;
  onFramesOut?: (count: number) => void;
  /** A queued delivery threw (counted; the others queued with it still go out). */
  onDeliveryError?: (err: unknown) => void;
  clock?: () => number;
}

/**
 * Delivers events to this instance's sockets. Every socket subscribes to the uWS topic of each
 * conversation its user is in, so an event is one publish per wire format, whatever the number of
 * members; membership changes move subscriptions. new_message leaves in seq order per
 * conversation: one waits only when its predecessor is missing and could still arrive (committed
 * less than the reorder window ago), and then at most until the window closes.
 */
export class SocketHub {
  readonly #app: TemplatedApp;
  readonly #o: HubOptions;
  readonly #windowMs: number;
  readonly #clock: () => number;
  readonly #onFramesOut: (count: number) => void;
  readonly #users = new Map<string, LocalUser>();
  /** Local users per conversation. */
  readonly #served = new Map<string, number>();
  readonly #order = new LRUCache<string, OrderState>({
    max: 100_000,
    ttl: 10 * 60 * 1000,
    dispose: (state) => this.#flushHeld(state),
  });
  #queue: (() => void)[] = [];
  #scheduled = false;

  constructor(app: TemplatedApp, options: HubOptions) {
    this.#app = app;
    this.#o = options;
    this.#windowMs = options.reorderWindowMs ?? 150;
    this.#clock = options.clock ?? Date.now;
    this.#onFramesOut = options.onFramesOut ?? (() => {});
  }

  /** Conversations with at least one local member online. */
  servedConversations(): string[] {
    return [...this.#served.keys()];
  }

  /**
   * A socket opened: subscribe it to its user's topic and conversations. Resolves once it is
   * subscribed to all of them (the socket's `hello` waits for that: every event after it arrives).
   */
  attach(ws: HubSocket, userId: string): Promise<void> {
    ws.subscribe(userTopic(userId, ws.getUserData().msgpack));
    let user = this.#users.get(userId);
    if (user) {
      user.sockets.add(ws);
      if (user.loaded) for (const c of user.conversations) ws.subscribe(conversationTopic(c, ws.getUserData().msgpack));
      return user.ready;
    }
    let markReady!: () => void;
    const ready = new Promise<void>((resolve) => (markReady = resolve));
    user = { sockets: new Set([ws]), conversations: new Set(), epoch: 0, loaded: false, ready, markReady };
    this.#users.set(userId, user);
    this.#load(userId, user);
    return ready;
  }

  #load(userId: string, user: LocalUser): void {
    const epoch = user.epoch;
    this.#o.conversationsOf(userId).then(
      (ids) => {
        if (this.#users.get(userId) !== user) return user.markReady(); // every socket closed meanwhile
        if (user.epoch !== epoch) return this.#load(userId, user); // membership changed while loading
        for (const c of ids) this.#join(user, c);
        user.loaded = true;
        user.markReady();
      },
      (err: unknown) => {
        this.#o.onDeliveryError?.(err);
        // Without its list the user would miss events: retry shortly while sockets stay open.
        setTimeout(() => (this.#users.get(userId) === user ? this.#load(userId, user) : user.markReady()), 1000).unref();
      },
    );
  }

  detach(ws: HubSocket, userId: string): void {
    const user = this.#users.get(userId);
    if (!user || !user.sockets.delete(ws) || user.sockets.size > 0) return;
    this.#users.delete(userId);
    for (const c of user.conversations) this.#unserve(c);
  }

  #join(user: LocalUser, conversationId: string): void {
    if (user.conversations.has(conversationId)) return;
    user.conversations.add(conversationId);
    for (const ws of user.sockets) ws.subscribe(conversationTopic(conversationId, ws.getUserData().msgpack));
    const n = this.#served.get(conversationId) ?? 0;
    this.#served.set(conversationId, n + 1);
    if (n === 0) this.#o.onServe?.(conversationId);
  }

  #leave(user: LocalUser, conversationId: string): void {
    if (!user.conversations.delete(conversationId)) return;
    for (const ws of user.sockets) if (!ws.getUserData().closed) ws.unsubscribe(conversationTopic(conversationId, ws.getUserData().msgpack));
    this.#unserve(conversationId);
  }

  #unserve(conversationId: string): void {
    const n = (this.#served.get(conversationId) ?? 1) - 1;
    if (n > 0) {
      this.#served.set(conversationId, n);
      return;
    }
    this.#served.delete(conversationId);
    this.#order.delete(conversationId);
    this.#o.onUnserve?.(conversationId);
  }

  /** Users joined a conversation: their sockets here subscribe, then every member hears of each. */
  membersAdded(conversationId: string, userIds: string[]): void {
    for (const id of userIds) {
      const user = this.#users.get(id);
      if (!user) continue;
      user.epoch++;
      if (user.loaded) this.#join(user, conversationId);
    }
    for (const id of userIds) this.deliver(conversationId, { type: 'member_added', conversation_id: conversationId, user_id: id });
  }

  /** A user left: the remaining members and the user hear of it, then the user's sockets unsubscribe. */
  memberRemoved(conversationId: string, userId: string): void {
    const user = this.#users.get(userId);
    if (user) user.epoch++;
    this.deliver(conversationId, { type: 'member_removed', conversation_id: conversationId, user_id: userId });
    this.#enqueue(() => {
      const now = this.#users.get(userId);
      if (now) this.#leave(now, conversationId);
    });
  }

  /**
   * Queues an event for the conversation's local sockets; `prevAt` (ms) is when the predecessor of
   * a new_message was committed. Delivery happens on the next turn of the event loop, so a socket
   * that sent a message gets its ack before the event.
   */
  deliver(conversationId: string, event: ConversationEvent | EncodedEvent, prevAt?: number): void {
    const encoded = event instanceof EncodedEvent ? event : new EncodedEvent(event);
    this.#enqueue(() => {
      if (encoded.event.type === 'new_message') this.#ordered(conversationId, encoded, prevAt);
      else this.#publish(conversationId, encoded);
    });
  }

  /** Typing goes to the members' user topics, the typer's own sockets excepted. */
  typing(conversationId: string, typerId: string, members: string[]): void {
    const encoded = new EncodedEvent({ type: 'typing', conversation_id: conversationId, user_id: typerId });
    this.#enqueue(() => {
      for (const m of members) if (m !== typerId && this.#users.has(m)) this.#publishTopics(userTopic(m, false), userTopic(m, true), encoded);
    });
  }

  #enqueue(action: () => void): void {
    this.#queue.push(action);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.#flush());
    }
  }

  #flush(): void {
    this.#scheduled = false;
    const queue = this.#queue;
    this.#queue = [];
    for (const action of queue) {
      try {
        action();
      } catch (err) {
        this.#o.onDeliveryError?.(err);
      }
    }
  }

  #publish(conversationId: string, event: EncodedEvent): void {
    this.#publishTopics(conversationTopic(conversationId, false), conversationTopic(conversationId, true), event);
  }

  #publishTopics(jsonTopic: string, packTopic: string, event: EncodedEvent): void {
    let frames = 0;
    const jsonCount = this.#app.numSubscribers(jsonTopic);
    const packCount = this.#app.numSubscribers(packTopic);
    if (jsonCount > 0) {
      this.#app.publish(jsonTopic, event.json, false);
      frames += jsonCount;
    }
    if (packCount > 0) {
      this.#app.publish(packTopic, event.msgpack, true);
      frames += packCount;
    }
    if (frames > 0) this.#onFramesOut(frames);
  }

  #ordered(conversationId: string, event: EncodedEvent, prevAt: number | undefined): void {
    if (event.event.type !== 'new_message' || !this.#served.has(conversationId)) return;
    const seq = event.event.message.seq;
    let state = this.#order.get(conversationId);
    if (!state) {
      state = { conversationId, next: undefined, held: new Map(), timer: undefined };
      this.#order.set(conversationId, state);
    }
    if (state.next === undefined) {
      // First events of this conversation here: where the sequence starts is not known yet.
      state.held.set(seq, this.#heldEntry(event, prevAt));
      this.#start(state);
      return;
    }
    if (seq < state.next) {
      // Its window closed already (or a duplicate): send now rather than never.
      this.#publish(conversationId, event);
      return;
    }
    if (seq > state.next) {
      state.held.set(seq, this.#heldEntry(event, prevAt));
      const s = state;
      state.timer ??= setTimeout(() => this.#flushHeld(s), this.#windowMs);
      return;
    }
    this.#publish(conversationId, event);
    state.next = seq + 1;
    this.#drain(state);
  }

  /**
   * Decides where a conversation's sequence starts here: at the lowest held seq once its
   * predecessor cannot be on its way any more (seq 1, or committed at least a window ago); until
   * then it waits, at most until then.
   */
  #start(state: OrderState): void {
    if (state.timer) clearTimeout(state.timer);
    state.timer = undefined;
    const lowest = Math.min(...state.held.keys());
    const { close, seenAt } = state.held.get(lowest)!;
    const waitMs = lowest === 1 || !close ? 0 : seenAt + this.#windowMs - this.#clock();
    if (waitMs > 0) {
      state.timer = setTimeout(() => this.#start(state), Math.min(waitMs, this.#windowMs));
      return;
    }
    state.next = lowest;
    this.#drain(state);
    if (state.held.size > 0) state.timer ??= setTimeout(() => this.#flushHeld(state), this.#windowMs);
  }

  /**
   * A predecessor written less than a window before this message (both times from the database's
   * clock) may have been committed by another instance whose event is still on its way: wait for
   * it, up to a window from this event's arrival. One written long before was delivered long ago.
   */
  #heldEntry(event: EncodedEvent, prevAt: number | undefined): { event: EncodedEvent; close: boolean; seenAt: number } {
    const createdAt = event.event.type === 'new_message' ? Date.parse(event.event.message.created_at) : NaN;
    const close = prevAt !== undefined && (!Number.isFinite(createdAt) || createdAt - prevAt < this.#windowMs);
    return { event, close, seenAt: this.#clock() };
  }

  #drain(state: OrderState): void {
    for (let e = state.held.get(state.next!); e; e = state.held.get(state.next!)) {
      state.held.delete(state.next!);
      this.#publish(state.conversationId, e.event);
      state.next!++;
    }
    if (state.held.size === 0 && state.timer) {
      clearTimeout(state.timer);
      state.timer = undefined;
    }
  }

  /** The window closed: send what is held in seq order and move past the gap. */
  #flushHeld(state: OrderState): void {
    if (state.timer) clearTimeout(state.timer);
    state.timer = undefined;
    const seqs = [...state.held.keys()].sort((a, b) => a - b);
    for (const seq of seqs) {
      this.#publish(state.conversationId, state.held.get(seq)!.event);
      state.next = seq + 1;
    }
    state.held.clear();
  }

  close(): void {
    for (const state of this.#order.values()) {
      if (state.timer) clearTimeout(state.timer);
      state.held.clear();
    }
    this.#order.clear();
  }
}
