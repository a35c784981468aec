import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { Piscina } from 'piscina';
import { openBatch, sealBatch, type OpenJob, type SealJob, type SealOutput } from '../crypto/batch.js';
import { NonceSource } from '../crypto/nonce.js';
import { packOpen, packSeal, readOpenReply, readSealReply, runSecondsOf, type PackedBatch } from '../crypto/packed-batch.js';
import { ConversationKeyCache, type KeyRef } from '../keys/conversation-keys.js';
import type { MasterKeyring } from '../keys/keyring.js';

export type { KeyRef, SealJob, OpenJob, SealOutput };

export interface MessageCipherOptions {
  keyring: MasterKeyring;
  /** Worker threads; 0 runs everything inline on the calling thread. */
  poolSize: number;
  /** Batches of at most this many jobs run inline (a pool round trip costs more than small batches). */
  inlineMax: number;
  onWorkerError?: (err: unknown) => void;
  /** Per pooled batch: seconds waiting for a worker, seconds running in it. */
  onTask?: (waitS: number, runS: number) => void;
}

const WORKER_TS = fileURLToPath(new URL('../../workers/crypto-worker.ts', import.meta.url));
const WORKER_JS = WORKER_TS.replace(/\.ts$/, '.js');

/** Raised when a worker's reply does not have the shape of the task it was given. */
export class WorkerReplyError extends Error {}

// Piscina loads a task file with require() first and import() if that fails. Node 20.19+ can
// require() an ES module, and a worker terminated while that require() instantiates the module
// aborts the whole process (V8 "IsGraphAsync ... instantiated module": a CLI job that had
// finished died with SIGABRT as it closed its pool). Turning require(esm) off in the workers sends
// Piscina straight to import(), which a termination interrupts safely.
const NO_REQUIRE_ESM = process.allowedNodeEnvironmentFlags.has('--no-experimental-require-module') ? ['--no-experimental-require-module'] : [];

/**
 * "Encrypt this for conversation c": the message service's only view of cryptography. Callers pass
 * key references and bytes; key material stays here and in the workers (Tink's Aead, batched).
 */
export class MessageCipher {
  readonly #keys: ConversationKeyCache;
  readonly #nonces = new NonceSource();
  readonly #pool: Piscina | undefined;
  readonly #inlineMax: number;
  readonly #resolve: (ref: KeyRef) => ReturnType<ConversationKeyCache['get']>;
  readonly #onTask: MessageCipherOptions['onTask'];
  readonly #onRetry: ((err: unknown) => void) | undefined;

  constructor(options: MessageCipherOptions) {
    this.#keys = new ConversationKeyCache(options.keyring);
    this.#resolve = (ref) => this.#keys.get(ref);
    this.#inlineMax = options.inlineMax;
    this.#onTask = options.onTask;
    this.#onRetry = options.onWorkerError;
    if (options.poolSize > 0) {
      const compiled = existsSync(WORKER_JS);
      this.#pool = new Piscina({
        filename: compiled ? WORKER_JS : WORKER_TS,
        minThreads: options.poolSize,
        maxThreads: options.poolSize,
        idleTimeout: 60_000,
        workerData: { masterKeys: options.keyring.exportForWorkers() },
        // TypeScript worker files load through tsx (a development checkout without dist/).
        execArgv: [...(compiled ? [] : ['--import', import.meta.resolve('tsx')]), ...NO_REQUIRE_ESM],
      });
      // A worker that fails to start or dies is replaced by Piscina; its task rejects. Never fatal.
      this.#pool.on('error', (err: unknown) => options.onWorkerError?.(err));
    }
  }

  get poolSize(): number {
    return this.#pool?.threads.length ?? 0;
  }

  /** Pool size, utilisation (0..1) and queued tasks, for metrics. */
  stats(): { size: number; utilization: number; queueDepth: number } {
    if (!this.#pool) return { size: 0, utilization: 0, queueDepth: 0 };
    return { size: this.#pool.threads.length, utilization: Math.min(1, Math.max(0, this.#pool.utilization)), queueDepth: this.#pool.queueSize };
  }

  /**
   * Packs, runs and reads a batch. A worker that dies mid-task (Piscina replaces it) or answers
   * nonsense gets the batch once more, freshly packed (the first copy's buffers moved away);
   * a second failure rejects, so callers never hang.
   */
  async #pooled<T>(pack: () => PackedBatch<KeyRef>, read: (reply: unknown, layout: { meta: Uint32Array }) => T): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const batch = pack();
      const layout = { meta: batch.meta.slice() };
      try {
        return read(await this.#run(batch), layout);
      } catch (err) {
        if (attempt >= 2) throw new WorkerReplyError(`crypto batch failed twice: ${(err as Error).message}`);
        this.#onRetry?.(err);
      }
    }
  }

  /** Runs a packed batch in a worker, its buffers moved both ways; returns the reply buffer. */
  async #run(batch: PackedBatch<KeyRef>): Promise<unknown> {
    const submitted = performance.now();
    const reply: unknown = await this.#pool!.run(batch, { transferList: [batch.meta.buffer, batch.data.buffer] as ArrayBuffer[] });
    if (reply instanceof ArrayBuffer && reply.byteLength >= 8) {
      const run = runSecondsOf(reply);
      this.#onTask?.(Math.max(0, (performance.now() - submitted) / 1000 - run), run);
    }
    return reply;
  }

  async seal(jobs: SealJob<KeyRef>[]): Promise<SealOutput[]> {
    if (jobs.length === 0) return [];
    if (!this.#pool || jobs.length <= this.#inlineMax) return sealBatch(jobs, this.#resolve, this.#nonces);
    return this.#pooled(() => packSeal(jobs, keyId), readSealReply);
  }

  /** Plaintext bytes per job, or null where the tag does not verify or the master key is not held. */
  async open(jobs: OpenJob<KeyRef>[]): Promise<(Buffer | null)[]> {
    if (jobs.length === 0) return [];
    if (!this.#pool || jobs.length <= this.#inlineMax) return openBatch(jobs, this.#resolve);
    return this.#pooled(() => packOpen(jobs, keyId), readOpenReply);
  }

  /**
   * Runs a named task of the worker file (search tokens) off the main thread; undefined when there
   * is no pool (CRYPTO_POOL_SIZE=0: the caller computes inline).
   */
  runTask(name: 'textTokens' | 'queryTokens', task: object): Promise<unknown> | undefined {
    return this.#pool?.run(task, { name });
  }

  /** Terminates one worker thread as a crash would (fault-injection for tests). */
  async killWorkerForTests(): Promise<void> {
    await this.#pool?.threads[0]?.terminate();
  }

  async close(): Promise<void> {
    this.#keys.clear();
    await this.#pool?.destroy();
  }
}

const keyId = (k: KeyRef) => `${k.conversationId}:${k.version}:${k.createdUnixSeconds}:${k.fingerprint}`;
