import { Cluster, Redis, type RedisOptions } from 'ioredis';

/** A connection to one Redis server or to a Redis Cluster (REDIS_URL decides). */
export type RedisClient = Redis | Cluster;

/**
 * REDIS_URL names one server (`redis://[user:password@]host:port[/db]`, `rediss://` for TLS) or a
 * Redis Cluster: `redis+cluster://[user:password@]host:port[,host:port...]` (`rediss+cluster://` for
 * TLS). The cluster's nodes listed are where the client starts; it learns the rest from the cluster.
 */
export type RedisTarget =
  | { kind: 'single'; url: string }
  | { kind: 'cluster'; nodes: { host: string; port: number }[]; username?: string; password?: string; tls: boolean };

const CLUSTER_URL = /^(rediss?)\+cluster:\/\/(?:([^@/]*)@)?([^/?#@]+)\/?$/i;
const HOST_PORT = /^(\[[0-9a-f:.]+\]|[a-z0-9.-]+):(\d{1,5})$/i;

/** Parses REDIS_URL; throws an Error whose message says what is wrong (without echoing a password). */
export function parseRedisUrl(raw: string): RedisTarget {
  const cluster = CLUSTER_URL.exec(raw);
  if (!cluster) {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new Error('is not a valid URL');
    }
    if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') throw new Error('must use redis:, rediss:, redis+cluster: or rediss+cluster:');
    return { kind: 'single', url: raw };
  }
  const [, scheme, auth, hosts] = cluster;
  const nodes = hosts!.split(',').map((hp) => {
    const m = HOST_PORT.exec(hp.trim());
    const port = Number(m?.[2]);
    if (!m || port < 1 || port > 65535) throw new Error('must list the cluster nodes as host:port[,host:port...]');
    return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
  });
  const target: RedisTarget = { kind: 'cluster', nodes, tls: scheme!.toLowerCase() === 'rediss' };
  if (auth) {
    const colon = auth.indexOf(':');
    const user = decodeURIComponent(colon < 0 ? auth : auth.slice(0, colon));
    if (user) target.username = user;
    if (colon >= 0) target.password = decodeURIComponent(auth.slice(colon + 1));
  }
  return target;
}

export interface ClientOptions extends RedisOptions {
  /** Cluster only: SSUBSCRIBE through one connection per master (sharded pub/sub). */
  shardedSubscribers?: boolean;
}

/**
 * One client for REDIS_URL: ioredis's Redis for one server, its Cluster for a cluster. On a cluster
 * the connection options apply to every node's connection; the retry strategy and the offline queue
 * apply to the cluster as a whole (a node that goes away is found again through the others).
 */
export function createRedis(redisUrl: string, options: ClientOptions = {}): RedisClient {
  const target = parseRedisUrl(redisUrl);
  const { shardedSubscribers = false, ...redisOptions } = options;
  if (target.kind === 'single') return new Redis(redisUrl, redisOptions);
  const { retryStrategy, enableOfflineQueue, enableAutoPipelining, ...nodeOptions } = redisOptions;
  return new Cluster(target.nodes, {
    shardedSubscribers,
    ...(retryStrategy ? { clusterRetryStrategy: retryStrategy } : {}),
    ...(enableOfflineQueue === undefined ? {} : { enableOfflineQueue }),
    ...(enableAutoPipelining === undefined ? {} : { enableAutoPipelining }),
    // A failed-over shard is usually taken over within a few seconds: retry the moved slot meanwhile.
    retryDelayOnClusterDown: 200,
    retryDelayOnFailover: 200,
    redisOptions: {
      ...nodeOptions,
      ...(target.username ? { username: target.username } : {}),
      ...(target.password ? { password: target.password } : {}),
      ...(target.tls ? { tls: {} } : {}),
    },
  });
}

/**
 * Readiness: one server answers PING; a cluster reports `cluster_state:ok` and every master it
 * names answers PING (a master that is down fails this before the cluster itself notices).
 */
export async function checkRedis(client: RedisClient): Promise<void> {
  if (!(client instanceof Cluster)) {
    await client.ping();
    return;
  }
  const info = String(await client.cluster('INFO'));
  const state = /cluster_state:(\w+)/.exec(info)?.[1];
  if (state !== 'ok') throw new Error(`redis cluster state: ${state ?? 'unknown'}`);
  await Promise.all(client.nodes('master').map((node) => node.ping()));
}
