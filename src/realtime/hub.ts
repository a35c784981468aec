import { LRUCache } from 'lru-cache';
import type { TemplatedApp } from '../http/uws.js';
import type { ConversationEvent } from './events.js';
import { packr } from './protocol.js';

/** One event encoded once per wire format, shared by every socket it goes to. */
class EncodedEvent {
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

interface OrderState {
  user: string;
  next: number;
  held: Map<number, EncodedEvent>;
  timer: NodeJS.Timeout | undefined;
}

export interface HubOptions {
  /** How long a new_message waits for the ones before it before it is sent anyway. */
  reorderWindowMs?: number;
  onFramesOut?: (count: number) => void;
}

/** uWS topics a user's sockets subscribe to, one per wire format. */
export const userTopic = (userId: string, msgpack: boolean) => `u:${userId}:${msgpack ? 'm' : 'j'}`;

/**
 * Delivers events to this instance's sockets through uWS topics (one publish reaches every socket
 * of a user). new_message events leave in seq order per user and conversation: one that arrives
 * ahead of its predecessor waits for it, at most `reorderWindowMs`.
 */
export class SocketHub {
  readonly #app: TemplatedApp;
  readonly #windowMs: number;
  readonly #onFramesOut: (count: number) => void;
  readonly #order = new LRUCache<string, OrderState>({
    max: 100_000,
    ttl: 10 * 60 * 1000,
    dispose: (state) => this.#flushHeld(state),
  });
  #queue: { users: string[]; event: EncodedEvent; exceptUser: string | undefined }[] = [];
  #scheduled = false;

  constructor(app: TemplatedApp, options: HubOptions = {}) {
    this.#app = app;
    this.#windowMs = options.reorderWindowMs ?? 150;
    this.#onFramesOut = options.onFramesOut ?? (() => {});
  }

  hasSockets(userId: string): boolean {
    return this.#app.numSubscribers(userTopic(userId, false)) + this.#app.numSubscribers(userTopic(userId, true)) > 0;
  }

  /**
   * Queues an event for the local sockets of `users`. Delivery happens on the next turn of the
   * event loop, so a socket that sent a message gets its ack before the event.
   */
  deliver(users: string[], event: ConversationEvent, exceptUser?: string): void {
    this.#queue.push({ users, event: new EncodedEvent(event), exceptUser });
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.#flush());
    }
  }

  #flush(): void {
    this.#scheduled = false;
    const queue = this.#queue;
    this.#queue = [];
    for (const { users, event, exceptUser } of queue) {
      for (const user of users) {
        if (user === exceptUser || !this.hasSockets(user)) continue;
        if (event.event.type === 'new_message') this.#ordered(user, event);
        else this.#send(user, event);
      }
    }
  }

  #send(user: string, event: EncodedEvent): void {
    let frames = 0;
    const jsonTopic = userTopic(user, false);
    const packTopic = userTopic(user, true);
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
    this.#onFramesOut(frames);
  }

  #ordered(user: string, event: EncodedEvent): void {
    if (event.event.type !== 'new_message') return;
    const { conversation_id: conversationId, seq } = event.event.message;
    const key = `${user}:${conversationId}`;
    let state = this.#order.get(key);
    if (!state) {
      // First event of this pair here: seq 1 has no predecessor; a later one may have been
      // overtaken by its predecessor (another instance, a slower commit), so it waits like any gap.
      state = { user, next: seq === 1 ? 1 : seq - 1, held: new Map(), timer: undefined };
      this.#order.set(key, state);
    }
    if (seq < state.next) {
      // Its window closed already (or a duplicate): send now rather than never.
      this.#send(user, event);
      return;
    }
    if (seq > state.next) {
      state.held.set(seq, event);
      state.timer ??= setTimeout(() => this.#flushHeld(state), this.#windowMs);
      return;
    }
    this.#send(user, event);
    state.next = seq + 1;
    this.#drain(state);
  }

  #drain(state: OrderState): void {
    for (let e = state.held.get(state.next); e; e = state.held.get(state.next)) {
      state.held.delete(state.next);
      this.#send(state.user, e);
      state.next++;
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
      this.#send(state.user, state.held.get(seq)!);
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
