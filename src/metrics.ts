import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export interface PoolStats {
  size: number;
  utilization: number;
  queueDepth: number;
}

/** Every Prometheus family SoTalk exports (docs/operations.md, Metrics), in one registry per server. */
export class Metrics {
  readonly registry = new Registry();
  readonly httpRequests = new Counter({
    name: 'sotalk_http_requests_total',
    help: 'HTTP requests answered, by route pattern, method and status',
    labelNames: ['route', 'method', 'status'] as const,
    registers: [this.registry],
  });
  readonly httpDuration = new Histogram({
    name: 'sotalk_http_request_duration_seconds',
    help: 'HTTP request latency from first byte to answer',
    labelNames: ['route', 'method'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly wsConnections = new Gauge({ name: 'sotalk_ws_connections', help: 'Open WebSocket connections', registers: [this.registry] });
  readonly wsFrames = new Counter({
    name: 'sotalk_ws_frames_total',
    help: 'WebSocket frames, by direction (in, out)',
    labelNames: ['direction'] as const,
    registers: [this.registry],
  });
  readonly encrypted = new Counter({ name: 'sotalk_messages_encrypted_total', help: 'Messages encrypted', registers: [this.registry] });
  readonly decrypted = new Counter({ name: 'sotalk_messages_decrypted_total', help: 'Messages decrypted and served', registers: [this.registry] });
  readonly integrityErrors = new Counter({
    name: 'sotalk_integrity_errors_total',
    help: 'Messages whose authentication tag did not verify (or whose key is missing)',
    registers: [this.registry],
  });
  readonly cryptoTaskWait = new Histogram({
    name: 'sotalk_crypto_task_wait_seconds',
    help: 'Time crypto batches waited in the pool queue',
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly cryptoTaskRun = new Histogram({
    name: 'sotalk_crypto_task_run_seconds',
    help: 'Time crypto batches ran in a worker',
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly dependencyErrors = new Counter({
    name: 'sotalk_dependency_errors_total',
    help: 'Errors talking to Postgres or Redis (connection losses, unavailable answers)',
    labelNames: ['dependency'] as const,
    registers: [this.registry],
  });
  readonly droppedInputs = new Counter({
    name: 'sotalk_rejected_inputs_total',
    help: 'Malformed inputs rejected at a process boundary, by source',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });

  readonly sendFlushSize = new Histogram({
    name: 'sotalk_send_flush_size',
    help: 'Messages per group commit (one database round trip)',
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
    registers: [this.registry],
  });
  readonly sendFlushDuration = new Histogram({
    name: 'sotalk_send_flush_duration_seconds',
    help: 'Duration of a group commit, from its start to the database answer',
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly redisPublishes = new Counter({
    name: 'sotalk_redis_publishes_total',
    help: 'Redis PUBLISH commands sent, by channel kind (conversation, control)',
    labelNames: ['channel'] as const,
    registers: [this.registry],
  });
  readonly pubsubReceived = new Counter({
    name: 'sotalk_pubsub_received_total',
    help: 'Pub/sub messages received, by outcome (delivered, own: this instance published it, dropped: forged, stale or malformed)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly deliveryErrors = new Counter({
    name: 'sotalk_event_delivery_errors_total',
    help: 'Events that failed to reach local sockets (each failure isolated to its event)',
    registers: [this.registry],
  });

  constructor(sources: { pool: () => PoolStats; auditBacklog: () => number }, processIndex?: number) {
    // Several processes behind one port: each series says which process it comes from.
    if (processIndex !== undefined) this.registry.setDefaultLabels({ process: String(processIndex) });
    const registers = [this.registry];
    new Gauge({ name: 'sotalk_crypto_pool_size', help: 'Crypto worker threads', registers, collect() { this.set(sources.pool().size); } });
    new Gauge({
      name: 'sotalk_crypto_pool_utilization',
      help: 'Share of worker time spent running tasks (0..1)',
      registers,
      collect() {
        this.set(sources.pool().utilization);
      },
    });
    new Gauge({ name: 'sotalk_crypto_pool_queue_depth', help: 'Crypto tasks waiting for a worker', registers, collect() { this.set(sources.pool().queueDepth); } });
    new Gauge({ name: 'sotalk_audit_backlog', help: 'Decryption audit rows not yet written', registers, collect() { this.set(sources.auditBacklog()); } });
    collectDefaultMetrics({ register: this.registry, prefix: 'sotalk_' });
  }

  observeHttp(route: string, method: string, status: number, seconds: number): void {
    this.httpRequests.inc({ route, method, status: String(status) });
    this.httpDuration.observe({ route, method }, seconds);
  }
}
