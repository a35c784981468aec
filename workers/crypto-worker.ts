// Piscina task file: batch encryption and decryption off the main thread. Never touches the database.
import { workerData } from 'node:worker_threads';
import { openBatch, sealBatch, type OpenJob, type SealJob } from '../src/crypto/batch.js';
import { NonceSource } from '../src/crypto/nonce.js';
import { ConversationKeyCache, type KeyRef } from '../src/keys/conversation-keys.js';
import { MasterKeyring } from '../src/keys/keyring.js';

export type CryptoTask = { op: 'seal'; jobs: SealJob<KeyRef>[] } | { op: 'open'; jobs: OpenJob<KeyRef>[] };

const masterKeys = (workerData as { masterKeys: Uint8Array[] }).masterKeys.map((k) => Buffer.from(k));
const [first, ...rest] = masterKeys;
if (!first) throw new Error('crypto worker started without master keys');
const keys = new ConversationKeyCache(new MasterKeyring(first, rest));
for (const k of masterKeys) k.fill(0);
const nonces = new NonceSource();
const resolve = (ref: KeyRef) => keys.get(ref);

/** Returns the batch's results and how long it ran here, in seconds (`t`). */
export default function run(task: CryptoTask) {
  const started = performance.now();
  const r = task.op === 'seal' ? sealBatch(task.jobs, resolve, nonces) : openBatch(task.jobs, resolve);
  return { r, t: (performance.now() - started) / 1000 };
}
