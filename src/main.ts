import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { Config } from './config.js';
import { MessageCipher } from './cipher/message-cipher.js';
import { deriveAuthTokenSecret } from './crypto/kdf.js';
import { describeDatabase, openDatabase, untilReachable } from './db/database.js';
import { InstanceHeartbeat } from './db/instances.js';
import { migrateUp } from './db/migrations.js';
import { PACKAGE_ROOT } from './paths.js';
import { SearchIndexMaintenance } from './db/search-maintenance.js';
import { atRestRoutes } from './http/at-rest-routes.js';
import { authRoutes } from './http/auth-routes.js';
import { featureRoutes } from './http/features-routes.js';
import { conversationRoutes } from './http/conversations-routes.js';
import { messageRoutes } from './http/messages-routes.js';
import { opsRoutes } from './http/ops-routes.js';
import { InFlight } from './http/in-flight.js';
import { mountNotFound, mountRoutes, type Route, type RouterOptions } from './http/router.js';
import { loadStaticFiles } from './http/static-files.js';
import { userRoutes } from './http/users-routes.js';
import { searchRoutes } from './http/search-routes.js';
import { SearchService } from './services/search.js';
import { SearchTokenizer } from './services/search-tokenizer.js';
import { listen, uWS, uwsIsNative } from './http/uws.js';
import { KeyVersions } from './keys/key-versions.js';
import { MasterKeyring } from './keys/keyring.js';
import { SearchKeys } from './keys/search-keys.js';
import { createLogger, type Logger } from './log.js';
import { Metrics } from './metrics.js';
import { EventBus } from './realtime/fanout.js';
import { SocketHub } from './realtime/hub.js';
import { MemberDirectory } from './realtime/member-directory.js';
import { SocketServer } from './realtime/socket-server.js';
import { AuditLog } from './services/audit-log.js';
import { AuthService } from './services/auth.js';
import { ConversationService } from './services/conversations.js';
import { MessageService } from './services/messages.js';
import { RateLimiter, RateLimits } from './services/rate-limiter.js';
import { HistoryCache } from './services/history-cache.js';
import { SendBatcher } from './services/send-batcher.js';
import { UserService } from './services/users.js';

export interface ServerDeps {
  /** The service clock (token expiry, key-version timestamps); tests inject one. */
  clock?: () => Date;
  logger?: Logger;
}

export interface RunningServer {
  port: number;
  /** Every route registered, as METHOD and OpenAPI-style path (`/api/v1/users/{id}`). */
  routes: { method: string; path: string }[];
  nativeUws: boolean;
  embeddedDatabase: boolean;
  /** After an unexpected error: /readyz answers 503 from now on (the process is about to stop). */
  markFaulted(): void;
  close(): Promise<void>;
}

/** The port could not be bound (one line for the operator). */
export class ListenError extends Error {
  constructor(host: string, port: number) {
    super(`cannot listen on ${host}:${port}: address in use (or not available)`);
  }
}

/** JSON escapes can make a body several times its content: bound bodies well above the content limit. */
const bodyLimit = (config: Config) => 6 * config.maxMessageBytes + 64 * 1024;

/** Composition root: config → db → crypto → services → http → listen. */
export async function startServer(config: Config, deps: ServerDeps = {}): Promise<RunningServer> {
  const logger = deps.logger ?? createLogger(config.logLevel);
  const clock = deps.clock ?? (() => new Date());
  if (!uwsIsNative) logger.warn('uWebSockets.js native binary not loaded: running on the slow JavaScript fallback');
  if (config.masterKeySource === 'dev-file-created') {
    logger.warn({ dataDir: config.dataDir }, 'ENCRYPTION_MASTER_KEY unset: created a development key in the data dir (never do this in production)');
  }
  if (config.databasePoolSizeIgnored) {
    logger.warn('DATABASE_POOL_SIZE ignored: the embedded database (no DATABASE_URL) is one session, so its pool holds 1 connection');
  }

  // Gauges read the pool and the audit log at scrape time, after start-up has built them.
  const metrics: Metrics = new Metrics({ pool: () => cipher.stats(), auditBacklog: () => audit.backlog }, config.processIndex);
  const db = await openDatabase({
    databaseUrl: config.databaseUrl,
    dataDir: config.dataDir,
    maxConnections: config.databasePoolSize,
    onConnectionError: () => metrics.dependencyErrors.inc({ dependency: 'postgres' }),
  });
  const applied = await untilReachable(() => migrateUp(db.pool), describeDatabase(config), logger, config.databaseConnectTimeoutS);
  if (applied.length > 0) logger.info({ applied }, 'migrations applied');

  const keyring = new MasterKeyring(config.masterKey, config.oldMasterKeys);
  const fingerprints = { active: keyring.active.fingerprint, all: keyring.fingerprints() };
  // Registered only once the port is bound (below): an instance that failed to start is none.
  const heartbeat = new InstanceHeartbeat(db.pool, randomUUID(), fingerprints, (err) =>
    logger.warn({ err: { message: (err as Error).message } }, 'instance heartbeat failed'),
  );
  const cipher = new MessageCipher({
    keyring,
    poolSize: config.cryptoPoolSize,
    inlineMax: config.cryptoInlineMax,
    onWorkerError: (err) => logger.error({ err: { message: (err as Error)?.message } }, 'crypto worker error'),
    onTask: (waitS, runS) => {
      metrics.cryptoTaskWait.observe(waitS);
      metrics.cryptoTaskRun.observe(runS);
    },
  });
  const searchKeys = config.searchEnabled ? new SearchKeys(keyring) : null;
  const searchTokens = searchKeys
    ? new SearchTokenizer({
        keys: searchKeys,
        runTask: (name, task) => cipher.runTask(name, task),
        pooled: cipher.poolSize > 0,
        maxQueryTokens: config.searchMaxQueryTokens,
      })
    : null;
  // PGlite is one session: a background merge there would only queue behind the sends.
  const searchMaintenance =
    config.searchEnabled && !db.embedded
      ? new SearchIndexMaintenance(db.pool, 1000, (err) => logger.debug({ err: { message: (err as Error).message } }, 'search index merge failed'))
      : undefined;
  const keys = new KeyVersions(db.pool, keyring, clock, { maxMessages: config.keyRotationMessages, maxAgeS: config.keyRotationMaxAgeS });
  const audit = new AuditLog({ pool: db.pool, logger, clock });
  const app = uWS.App();
  const inFlight = new InFlight();
  const directory = new MemberDirectory(db.pool);
  const hub = new SocketHub(app, {
    conversationsOf: (userId) => directory.conversationsOf(userId),
    onServe: (id) => events.serve(id),
    onUnserve: (id) => events.unserve(id),
    onFramesOut: (n) => metrics.wsFrames.inc({ direction: 'out' }, n),
    onDeliveryError: (err) => {
      metrics.deliveryErrors.inc();
      logger.warn({ err: { message: (err as Error)?.message } }, 'event delivery failed');
    },
  });
  const events: EventBus = new EventBus({
    hub,
    directory,
    keyring,
    logger,
    redisUrl: config.redisUrl,
    onPublish: (kind) => metrics.redisPublishes.inc({ channel: kind }),
    onReceived: (outcome) => {
      metrics.pubsubReceived.inc({ outcome });
      if (outcome === 'dropped') metrics.droppedInputs.inc({ source: 'redis' });
    },
    onRedisError: () => metrics.dependencyErrors.inc({ dependency: 'redis' }),
  });

  const limiter = new RateLimiter(events.redis);
  const limits = new RateLimits(limiter, {
    send: config.rateLimitSendPerMin,
    typing: config.rateLimitTypingPerMin,
    signin: config.rateLimitSignInPerMin,
    'signin-address': config.rateLimitSignInPerAddressPerMin,
    edit: config.rateLimitEditPerMin,
    delete: config.rateLimitDeletePerMin,
    'rotate-key': config.rateLimitRotateKeyPerMin,
    'create-conversation': config.rateLimitCreateConversationPerMin,
    'member-change': config.rateLimitMemberChangePerMin,
    receipt: config.rateLimitReceiptPerMin,
    search: config.rateLimitSearchPerMin,
  });
  // Tokens (and search cursors) are signed with the active master key's secret and accepted under
  // any configured key's, so they survive a two-phase master-key rollout across instances.
  const tokenSecrets = config.authTokenSecret ? [config.authTokenSecret] : keyring.fingerprints().map((fp) => deriveAuthTokenSecret(keyring.get(fp)!));
  const auth = new AuthService({
    limits,
    pool: db.pool,
    tokenSecrets,
    tokenTtlS: config.authTokenTtlS,
    clock,
  });
  const users = new UserService(db.pool);
  const conversations = new ConversationService({ pool: db.pool, keys, events, limits });
  const batcher = new SendBatcher({
    pool: db.pool,
    logger,
    maxBatch: config.sendBatchMax,
    maxInFlight: db.embedded ? 1 : config.sendFlushConcurrency,
    keyPolicy: keys.commitPolicy,
    onFlush: (size, seconds) => {
      metrics.sendFlushSize.observe(size);
      metrics.sendFlushDuration.observe(seconds);
    },
    onKeysRetired: (ids) => ids.forEach((id) => conversations.forgetKeyVersion(id)),
  });
  const messages = new MessageService({
    pool: db.pool, cipher, keys, conversations, audit, events, logger, maxMessageBytes: config.maxMessageBytes, counters: metrics, batcher,
    history: new HistoryCache({ maxBytes: config.historyCacheBytes, ttlMs: config.historyCacheTtlMs }),
    limits,
    search: searchTokens,
  });

  let faulted = false;
  const routes: Route[] = [
    ...opsRoutes(
      [
        { name: 'database', check: async () => void (await db.pool.query('SELECT 1')) },
        ...(config.redisUrl ? [{ name: 'redis', check: () => events.ping() }] : []),
      ],
      metrics.registry,
      () => faulted,
    ),
    ...featureRoutes({ search: searchKeys !== null, at_rest_panel: config.atRestPanel, max_message_bytes: config.maxMessageBytes }),
    ...authRoutes(auth),
    ...userRoutes(users),
    ...conversationRoutes(conversations),
    ...messageRoutes(messages),
    // A demonstration aid for the web client; loadConfig refuses the flag in production.
    ...(config.atRestPanel ? atRestRoutes(db.pool) : []),
    ...(searchKeys
      ? searchRoutes(new SearchService({ pool: db.pool, tokens: searchTokens!, conversations, messages, cursorSecrets: tokenSecrets, limits }))
      : []),
  ];
  if (config.atRestPanel) logger.warn('SOTALK_AT_REST_PANEL is on: members can read stored nonces and ciphertext previews (never enable in production)');
  const routerOptions: RouterOptions = {
    maxBodyBytes: bodyLimit(config),
    authenticate: auth.authenticate,
    trustProxyHops: config.trustProxyHops,
    logger,
    observe: (route, method, status, seconds, requestId) => {
      metrics.observeHttp(route, method, status, seconds);
      if (status >= 500 || logger.isLevelEnabled('debug')) {
        logger[status >= 500 ? 'warn' : 'debug']({ requestId, route, method, status, ms: seconds * 1000 }, 'request');
      }
    },
    inFlight,
    onUnavailable: () => metrics.dependencyErrors.inc({ dependency: 'postgres' }),
  };
  const sockets = new SocketServer({
    auth,
    messages,
    conversations,
    bus: events,
    hub,
    logger,
    maxFrameBytes: config.wsMaxFrameBytes,
    maxBufferedBytes: config.wsMaxBufferedBytes,
    limits,
    inFlight,
    onUnavailable: () => metrics.dependencyErrors.inc({ dependency: 'postgres' }),
    onConnections: (delta) => metrics.wsConnections.inc(delta),
    onFrames: (direction, n) => metrics.wsFrames.inc({ direction }, n),
  });
  sockets.mount(app);
  mountRoutes(app, routes, routerOptions);
  // the web client at /, the client library it uses (and any browser may load) at /client/
  mountNotFound(app, routerOptions, loadStaticFiles(join(PACKAGE_ROOT, 'client'), '/client', loadStaticFiles(join(PACKAGE_ROOT, 'web'))));

  const listenSocket = await new Promise<uWS.us_listen_socket>((resolve, reject) => {
    // uWS shares ports (SO_REUSEPORT) unless told otherwise: only SOTALK_PROCESSES > 1 asks for
    // sharing, so an unrelated second server on the port fails instead of silently joining.
    listen(app, config.host, config.port, config.processes > 1, (socket) =>
      socket ? resolve(socket) : reject(new ListenError(config.host, config.port)),
    );
  });
  const port = uWS.us_socket_local_port(listenSocket);
  await heartbeat.start();
  logger.info(
    {
      url: `http://${['0.0.0.0', '::'].includes(config.host) ? 'localhost' : config.host.includes(':') ? `[${config.host}]` : config.host}:${port}/`,
      host: config.host,
      port,
      ...(config.processIndex === undefined ? {} : { process: config.processIndex }),
      database: describeDatabase(config),
      databasePool: config.databasePoolSize,
      pool: cipher.poolSize,
      native: uwsIsNative,
      masterKey: fingerprints.active,
      oldMasterKeys: fingerprints.all.filter((f) => f !== fingerprints.active),
    },
    'sotalk listening',
  );

  let closing: Promise<void> | undefined;
  return {
    port,
    routes: routes.map((r) => ({ method: r.method.toUpperCase(), path: r.path.replace(/:([a-z_]+)/g, '{$1}') })),
    nativeUws: uwsIsNative,
    embeddedDatabase: db.embedded,
    markFaulted() {
      faulted = true;
    },
    close() {
      closing ??= (async () => {
        // Stop accepting, let accepted requests and frames finish (they will be acknowledged),
        // then flush batched writes and audit rows, close sockets (1001) and the pool.
        uWS.us_listen_socket_close(listenSocket);
        const drained = await inFlight.drain(10_000);
        if (!drained) logger.warn({ inFlight: inFlight.count }, 'shutdown: requests still running after 10 s');
        await batcher.drain();
        await limiter.close();
        await searchMaintenance?.close();
        sockets.closeAll();
        hub.close();
        await events.close();
        await audit.close();
        await cipher.close();
        await heartbeat.close().catch(() => {});
        await db.close();
        logger.info('sotalk stopped');
      })();
      return closing;
    },
  };
}
