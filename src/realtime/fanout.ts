import { randomBytes } from 'node:crypto';
import { Cluster } from 'ioredis';
import type { Logger } from '../log.js';
import { UUID_PATTERN } from '../http/validation.js';
import type { MasterKeyring } from '../keys/keyring.js';
import type { ConversationEvent, EventPublisher } from './events.js';
import type { SocketHub } from './hub.js';
import type { MemberDirectory } from './member-directory.js';
import { packr } from './protocol.js';
import { PubSubSealer } from './pubsub-seal.js';
import { checkRedis, createRedis, type RedisClient } from '../redis.js';

/**
 * Channel layout: one channel per conversation (`sotalk:c:{<id>}`, the braces keep a cluster's
 * hash slot per conversation), subscribed to only by instances with a member of it online, and
 * one control channel for membership changes, which every instance hears (a member added on one
 * instance may be online on any other, which must subscribe). Every event costs exactly one
 * PUBLISH, whatever the number of members or instances. Payloads are sealed (PubSubSealer):
 * Redis never sees plaintext, and a message that does not open is dropped and counted.
 *
 * On a Redis Cluster the same channels use sharded pub/sub (SPUBLISH/SSUBSCRIBE): a channel lives
 * on the shard owning its hash slot, so an event touches that one shard instead of being broadcast
 * over the cluster bus to every node. ioredis keeps one subscriber connection per master and, when
 * a shard fails over or a node restarts, subscribes its channels again on the shard's new owner.
 * One server keeps plain PUBLISH/SUBSCRIBE (it works with Redis before 7, and costs the same there).
 */
const CONVERSATION_CHANNEL = (id: string) => `sotalk:c:{${id}}`;
const CONVERSATION_CHANNEL_PATTERN = /^sotalk:c:\{([0-9a-f-]{36})\}$/;
const CONTROL_CHANNEL = 'sotalk:ctl';
/** Sealed events older (or further in the future) than this are dropped as replays. */
const MAX_AGE_MS = 60_000;
const MAX_MEMBERS_PER_EVENT = 100_000;
const EVENT_TYPES = new Set(['new_message', 'message_updated', 'message_deleted', 'receipt', 'typing', 'key_rotated']);

/** What travels inside a sealed payload. */
type Wire =
  | { t: number; k: 'event'; e: ConversationEvent; p?: number }
  | { t: number; k: 'typing'; c: string; u: string }
  | { t: number; k: 'added'; c: string; u: string[] }
  | { t: number; k: 'removed'; c: string; u: string };

export type PubSubOutcome = 'delivered' | 'own' | 'dropped';

export interface EventBusOptions {
  hub: SocketHub;
  directory: MemberDirectory;
  keyring: MasterKeyring;
  logger: Logger;
  redisUrl?: string | undefined;
  /** A PUBLISH was sent, by channel kind. */
  onPublish?: (kind: 'conversation' | 'control') => void;
  /** A pub/sub message arrived: delivered, our own (skipped) or dropped (forged, stale, malformed). */
  onReceived?: (outcome: PubSubOutcome) => void;
  onRedisError?: () => void;
  clock?: () => number;
}

/** Routes conversation events to members' sockets: here through the hub, elsewhere through Redis. */
export class EventBus implements EventPublisher {
  readonly #hub: SocketHub;
  readonly #directory: MemberDirectory;
  readonly #logger: Logger;
  readonly #sealer: PubSubSealer;
  readonly #pub: RedisClient | undefined;
  readonly #sub: RedisClient | undefined;
  /** REDIS_URL names a cluster: sharded pub/sub. */
  readonly #sharded: boolean;
  readonly #clock: () => number;
  readonly #onPublish: NonNullable<EventBusOptions['onPublish']>;
  readonly #onReceived: NonNullable<EventBusOptions['onReceived']>;
  /** Channels to (un)subscribe, sent together on the next turn of the event loop. */
  #toSubscribe = new Set<string>();
  #toUnsubscribe = new Set<string>();
  #scheduled = false;

  constructor(options: EventBusOptions) {
    this.#hub = options.hub;
    this.#directory = options.directory;
    this.#logger = options.logger;
    this.#clock = options.clock ?? Date.now;
    this.#sealer = new PubSubSealer(options.keyring, randomBytes(16));
    this.#onPublish = options.onPublish ?? (() => {});
    this.#onReceived = options.onReceived ?? (() => {});
    this.#sharded = false;
    if (options.redisUrl) {
      const common = { maxRetriesPerRequest: 1, retryStrategy: (n: number) => Math.min(50 * n, 2000), lazyConnect: false };
      // Publishing while Redis is down fails fast (events are best-effort) instead of queueing without bound.
      this.#pub = createRedis(options.redisUrl, { ...common, enableOfflineQueue: false, enableAutoPipelining: true, connectionName: 'sotalk-pub' });
      // Subscriptions wait for the connection instead of failing (no per-request retry limit).
      const sub = createRedis(options.redisUrl, { ...common, maxRetriesPerRequest: null, autoResubscribe: true, connectionName: 'sotalk-sub', shardedSubscribers: true });
      this.#sub = sub;
      this.#sharded = sub instanceof Cluster;
      let connectedBefore = false;
      sub.on('ready', () => {
        // After an outage: membership changes were missed (forget cached memberships) and, on one
        // server, subscriptions made while down may have failed (subscribe again; repeating one is
        // harmless). A cluster client queues them and subscribes its channels again itself.
        if (connectedBefore) this.#directory.clear();
        connectedBefore = true;
        if (!this.#sharded) void sub.subscribe(CONTROL_CHANNEL, ...this.#hub.servedConversations().map(CONVERSATION_CHANNEL)).catch(() => {});
      });
      if (sub instanceof Cluster) {
        // ioredis remembers the sharded channels and subscribes them again itself whenever its
        // subscribers are rebuilt (a node gone, a failover): only cached memberships need forgetting.
        sub.on('subscribersReady', () => this.#directory.clear());
        void sub.ssubscribe(CONTROL_CHANNEL).catch(() => {});
        sub.on('smessageBuffer', (channel: Buffer, message: Buffer) => this.#onRemote(channel.toString(), message));
      } else {
        sub.on('messageBuffer', (channel: Buffer, message: Buffer) => this.#onRemote(channel.toString(), message));
      }
      for (const conn of [this.#pub, sub]) {
        conn.on('error', (err: Error) => {
          options.onRedisError?.();
          this.#logger.warn({ err: { message: err.message } }, 'redis connection error');
        });
      }
    }
  }

  get redis(): RedisClient | undefined {
    return this.#pub;
  }

  /** The hub's first local member of a conversation came online: listen on its channel. */
  serve = (conversationId: string): void => {
    if (!this.#sub) return;
    const channel = CONVERSATION_CHANNEL(conversationId);
    if (!this.#toUnsubscribe.delete(channel)) this.#toSubscribe.add(channel);
    this.#scheduleSubscriptions();
  };

  unserve = (conversationId: string): void => {
    if (!this.#sub) return;
    const channel = CONVERSATION_CHANNEL(conversationId);
    if (!this.#toSubscribe.delete(channel)) this.#toUnsubscribe.add(channel);
    this.#scheduleSubscriptions();
  };

  #scheduleSubscriptions(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      const sub = [...this.#toSubscribe];
      const unsub = [...this.#toUnsubscribe];
      this.#toSubscribe.clear();
      this.#toUnsubscribe.clear();
      const conn = this.#sub;
      if (conn instanceof Cluster) {
        // One command per channel (a sharded (un)subscribe takes channels of one slot); while the
        // cluster is not ready they wait in the offline queue, and ioredis remembers the channels.
        for (const channel of sub) void conn.ssubscribe(channel).catch(() => {});
        for (const channel of unsub) void conn.sunsubscribe(channel).catch(() => {});
        return;
      }
      if (conn?.status !== 'ready') return; // 'ready' subscribes to everything served
      if (sub.length > 0) void conn.subscribe(...sub).catch(() => {});
      if (unsub.length > 0) void conn.unsubscribe(...unsub).catch(() => {});
    });
  }

  /** A conversation event (not typing or membership): to local members now, to other instances through Redis. */
  publish(conversationId: string, event: ConversationEvent, prevAt?: number): void {
    this.#hub.deliver(conversationId, event, prevAt);
    this.#send(CONVERSATION_CHANNEL(conversationId), prevAt === undefined ? { t: this.#clock(), k: 'event', e: event } : { t: this.#clock(), k: 'event', e: event, p: prevAt });
  }

  /** Typing goes to every member's sockets except the typer's own. */
  typing(conversationId: string, userId: string): void {
    this.#typingHere(conversationId, userId);
    this.#send(CONVERSATION_CHANNEL(conversationId), { t: this.#clock(), k: 'typing', c: conversationId, u: userId });
  }

  #typingHere(conversationId: string, userId: string): void {
    this.#directory.members(conversationId).then(
      (members) => this.#hub.typing(conversationId, userId, members),
      (err: unknown) => this.#logger.warn({ conversationId, err: { message: (err as Error).message } }, 'typing routing failed'),
    );
  }

  membersAdded(conversationId: string, userIds: string[]): void {
    this.#directory.invalidate(conversationId);
    this.#hub.membersAdded(conversationId, userIds);
    this.#send(CONTROL_CHANNEL, { t: this.#clock(), k: 'added', c: conversationId, u: userIds });
  }

  memberRemoved(conversationId: string, userId: string): void {
    this.#directory.invalidate(conversationId);
    this.#hub.memberRemoved(conversationId, userId);
    this.#send(CONTROL_CHANNEL, { t: this.#clock(), k: 'removed', c: conversationId, u: userId });
  }

  #send(channel: string, wire: Wire): void {
    if (this.#pub?.status !== 'ready') return;
    let payload: Buffer;
    try {
      payload = this.#sealer.seal(channel, packr.pack(wire));
    } catch (err) {
      this.#logger.warn({ channel, err: { message: (err as Error).message } }, 'event could not be encoded');
      return;
    }
    this.#onPublish(channel === CONTROL_CHANNEL ? 'control' : 'conversation');
    (this.#sharded ? this.#pub.spublish(channel, payload) : this.#pub.publish(channel, payload)).catch(() => {});
  }

  #onRemote(channel: string, message: Buffer): void {
    const opened = this.#sealer.open(channel, message);
    if (opened.kind === 'own') return this.#onReceived('own');
    const wire = opened.kind === 'ok' ? this.#decode(opened.plaintext) : undefined;
    const conversationId = channel === CONTROL_CHANNEL ? undefined : CONVERSATION_CHANNEL_PATTERN.exec(channel)?.[1];
    if (!wire || (channel !== CONTROL_CHANNEL && !conversationId) || !this.#apply(wire, conversationId)) {
      this.#onReceived('dropped');
      return;
    }
    this.#onReceived('delivered');
  }

  #decode(plaintext: Buffer): Wire | undefined {
    let wire: unknown;
    try {
      wire = packr.unpack(plaintext);
    } catch {
      return undefined;
    }
    if (!wire || typeof wire !== 'object') return undefined;
    const t = (wire as { t?: unknown }).t;
    if (typeof t !== 'number' || Math.abs(this.#clock() - t) > MAX_AGE_MS) return undefined;
    return wire as Wire;
  }

  /** Validates and delivers a remote message; false when it is not one this server sends. */
  #apply(wire: Wire, channelConversation: string | undefined): boolean {
    switch (wire.k) {
      case 'event': {
        const e = wire.e as { type?: unknown; conversation_id?: unknown; message?: { conversation_id?: unknown; seq?: unknown } } | undefined;
        if (!e || typeof e.type !== 'string' || !EVENT_TYPES.has(e.type) || e.type === 'typing') return false;
        const id = e.type === 'new_message' || e.type === 'message_updated' ? e.message?.conversation_id : e.conversation_id;
        if (id !== channelConversation) return false;
        if (e.type === 'new_message' && !Number.isSafeInteger(e.message?.seq)) return false;
        if (wire.p !== undefined && typeof wire.p !== 'number') return false;
        this.#hub.deliver(channelConversation!, wire.e, wire.p);
        return true;
      }
      case 'typing':
        if (wire.c !== channelConversation || !isUuid(wire.u)) return false;
        this.#typingHere(wire.c, wire.u);
        return true;
      case 'added':
        if (channelConversation !== undefined || !isUuid(wire.c) || !Array.isArray(wire.u) || wire.u.length > MAX_MEMBERS_PER_EVENT || !wire.u.every(isUuid)) return false;
        this.#directory.invalidate(wire.c);
        this.#hub.membersAdded(wire.c, wire.u);
        return true;
      case 'removed':
        if (channelConversation !== undefined || !isUuid(wire.c) || !isUuid(wire.u)) return false;
        this.#directory.invalidate(wire.c);
        this.#hub.memberRemoved(wire.c, wire.u);
        return true;
      default:
        return false;
    }
  }

  async ping(): Promise<void> {
    if (this.#pub) await checkRedis(this.#pub);
  }

  async close(): Promise<void> {
    await Promise.all([this.#pub?.quit().catch(() => {}), this.#sub?.quit().catch(() => {})]);
    this.#pub?.disconnect();
    this.#sub?.disconnect();
  }
}

const isUuid = (v: unknown): v is string => typeof v === 'string' && UUID_PATTERN.test(v);
