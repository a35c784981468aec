import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import { UUID_PATTERN } from '../http/validation.js';
import type { ConversationEvent, EventPublisher } from './events.js';
import type { SocketHub } from './hub.js';
import type { MemberDirectory } from './member-directory.js';
import { packr } from './protocol.js';

/**
 * Channel layout: one channel per user (`sotalk:u:<user id>`), subscribed to only by the
 * instances that hold a socket of that user, plus one control channel for membership-cache
 * invalidations. An event costs one PUBLISH per recipient and reaches only the instances that
 * serve a recipient, so cost grows with recipients, never with instances × users.
 */
const USER_CHANNEL_PREFIX = 'sotalk:u:';
const CONTROL_CHANNEL = 'sotalk:ctl';
const EVENT_TYPES = new Set(['new_message', 'message_updated', 'message_deleted', 'receipt', 'typing', 'key_rotated', 'member_added', 'member_removed']);

interface WireEvent {
  /** Origin instance: an instance ignores its own publications (it delivered locally). */
  o: string;
  e: ConversationEvent;
  /** A user whose sockets must not get it (the typer). */
  x?: string;
}

interface WireControl {
  o: string;
  invalidate: string;
}

export interface EventBusOptions {
  hub: SocketHub;
  directory: MemberDirectory;
  logger: Logger;
  redisUrl?: string | undefined;
  /** A malformed pub/sub message was dropped. */
  onRejected?: () => void;
  onRedisError?: () => void;
}

/** Routes conversation events to members' sockets: here through the hub, elsewhere through Redis. */
export class EventBus implements EventPublisher {
  readonly instanceId = randomUUID();
  readonly #hub: SocketHub;
  readonly #directory: MemberDirectory;
  readonly #logger: Logger;
  readonly #pub: Redis | undefined;
  readonly #sub: Redis | undefined;
  readonly #onRejected: () => void;
  /** Local socket count per user, to subscribe to a user's channel once. */
  readonly #online = new Map<string, number>();

  constructor(options: EventBusOptions) {
    this.#hub = options.hub;
    this.#directory = options.directory;
    this.#logger = options.logger;
    this.#onRejected = options.onRejected ?? (() => {});
    if (options.redisUrl) {
      const common = { maxRetriesPerRequest: 1, retryStrategy: (n: number) => Math.min(50 * n, 2000), lazyConnect: false };
      // Publishing while Redis is down fails fast (events are best-effort) instead of queueing without bound.
      this.#pub = new Redis(options.redisUrl, { ...common, enableOfflineQueue: false, enableAutoPipelining: true, connectionName: 'sotalk-pub' });
      // Subscriptions wait for the connection instead of failing (no per-request retry limit).
      this.#sub = new Redis(options.redisUrl, { ...common, maxRetriesPerRequest: null, autoResubscribe: true, connectionName: 'sotalk-sub' });
      let connectedBefore = false;
      this.#sub.on('ready', () => {
        // After an outage: invalidations were missed (forget cached memberships) and subscriptions
        // made while down may have failed (subscribe again; repeating one is harmless).
        if (connectedBefore) this.#directory.clear();
        connectedBefore = true;
        const channels = [CONTROL_CHANNEL, ...[...this.#online.keys()].map((u) => USER_CHANNEL_PREFIX + u)];
        void this.#sub?.subscribe(...channels).catch(() => {});
      });
      for (const conn of [this.#pub, this.#sub]) {
        conn.on('error', (err: Error) => {
          options.onRedisError?.();
          this.#logger.warn({ err: { message: err.message } }, 'redis connection error');
        });
      }
      this.#sub.on('messageBuffer', (channel: Buffer, message: Buffer) => this.#onRemote(channel.toString(), message));
    }
  }

  get redis(): Redis | undefined {
    return this.#pub;
  }

  publish(conversationId: string, event: ConversationEvent, alsoTo: string[] = []): void {
    this.#route(conversationId, event, alsoTo, undefined);
  }

  /** Typing goes to every member's sockets except the typer's own. */
  typing(conversationId: string, userId: string): void {
    this.#route(conversationId, { type: 'typing', conversation_id: conversationId, user_id: userId }, [], userId);
  }

  #route(conversationId: string, event: ConversationEvent, alsoTo: string[], exceptUser: string | undefined): void {
    if (event.type === 'member_added' || event.type === 'member_removed') this.#invalidate(conversationId);
    this.#directory.members(conversationId).then(
      (members) => {
        const targets = alsoTo.length ? [...new Set([...members, ...alsoTo])] : members;
        this.#hub.deliver(targets, event, exceptUser);
        if (this.#pub && this.#pub.status === 'ready') {
          const wire: WireEvent = exceptUser ? { o: this.instanceId, e: event, x: exceptUser } : { o: this.instanceId, e: event };
          const payload = packr.pack(wire);
          for (const user of targets) {
            if (user !== exceptUser) this.#pub.publish(USER_CHANNEL_PREFIX + user, payload).catch(() => {});
          }
        }
      },
      (err: unknown) => this.#logger.warn({ conversationId, err: { message: (err as Error).message } }, 'event routing failed'),
    );
  }

  #invalidate(conversationId: string): void {
    this.#directory.invalidate(conversationId);
    if (this.#pub?.status === 'ready') {
      const control: WireControl = { o: this.instanceId, invalidate: conversationId };
      this.#pub.publish(CONTROL_CHANNEL, packr.pack(control)).catch(() => {});
    }
  }

  #onRemote(channel: string, message: Buffer): void {
    let wire: unknown;
    try {
      wire = packr.unpack(message);
    } catch {
      this.#onRejected();
      return;
    }
    if (!wire || typeof wire !== 'object' || typeof (wire as WireEvent).o !== 'string') {
      this.#onRejected();
      return;
    }
    if ((wire as WireEvent).o === this.instanceId) return;
    if (channel === CONTROL_CHANNEL) {
      const id = (wire as WireControl).invalidate;
      if (typeof id === 'string' && UUID_PATTERN.test(id)) this.#directory.invalidate(id);
      else this.#onRejected();
      return;
    }
    const user = channel.slice(USER_CHANNEL_PREFIX.length);
    const event = (wire as WireEvent).e as { type?: unknown; conversation_id?: unknown; message?: { conversation_id?: unknown; seq?: unknown } } | undefined;
    const conversationId = event?.type === 'new_message' || event?.type === 'message_updated' ? event.message?.conversation_id : event?.conversation_id;
    if (!channel.startsWith(USER_CHANNEL_PREFIX) || !event || typeof event.type !== 'string' || !EVENT_TYPES.has(event.type) || typeof conversationId !== 'string') {
      this.#onRejected();
      return;
    }
    if (event.type === 'new_message' && typeof event.message?.seq !== 'number') {
      this.#onRejected();
      return;
    }
    if (event.type === 'member_added' || event.type === 'member_removed') this.#directory.invalidate(conversationId);
    this.#hub.deliver([user], event as ConversationEvent, (wire as WireEvent).x);
  }

  /** A user's first socket here: listen on their channel. */
  userOnline(userId: string): void {
    const n = (this.#online.get(userId) ?? 0) + 1;
    this.#online.set(userId, n);
    if (n === 1) void this.#sub?.subscribe(USER_CHANNEL_PREFIX + userId).catch(() => {});
  }

  userOffline(userId: string): void {
    const n = (this.#online.get(userId) ?? 1) - 1;
    if (n > 0) {
      this.#online.set(userId, n);
      return;
    }
    this.#online.delete(userId);
    void this.#sub?.unsubscribe(USER_CHANNEL_PREFIX + userId).catch(() => {});
  }

  async ping(): Promise<void> {
    if (!this.#pub) return;
    await this.#pub.ping();
  }

  async close(): Promise<void> {
    await Promise.all([this.#pub?.quit().catch(() => {}), this.#sub?.quit().catch(() => {})]);
    this.#pub?.disconnect();
    this.#sub?.disconnect();
  }
}
