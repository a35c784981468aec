// Piscina task file: batch encryption and decryption off the main thread. Never touches the database.
import { workerData } from 'node:worker_threads';
import { move } from 'piscina';
import { open, seal } from '../src/crypto/aead.js';
import { asBuffer as b } from '../src/crypto/batch.js';
import { NonceSource } from '../src/crypto/nonce.js';
import { runPackedOpen, runPackedSeal, setRunSeconds, type PackedBatch } from '../src/crypto/packed-batch.js';
import { ConversationKeyCache, type KeyRef } from '../src/keys/conversation-keys.js';
import { MasterKeyring } from '../src/keys/keyring.js';
import { SearchKeys } from '../src/keys/search-keys.js';
import { packTokenReply, type QueryTokenTask, type TextTokenTask } from '../src/crypto/token-tasks.js';

const masterKeys = (workerData as { masterKeys: Uint8Array[] }).masterKeys.map((k) => Buffer.from(k));
const [first, ...rest] = masterKeys;
if (!first) throw new Error('crypto worker started without master keys');
// Each worker derives and caches conversation and search keys itself (bounded LRU, zeroed on eviction).
const keyring = new MasterKeyring(first, rest);
const keys = new ConversationKeyCache(keyring);
const searchKeys = new SearchKeys(keyring);
for (const k of masterKeys) k.fill(0);
const nonces = new NonceSource();

/** Runs one packed batch (see src/crypto/packed-batch.ts) and moves the reply buffer back. */
export default function run(batch: PackedBatch<KeyRef>) {
  const started = performance.now();
  const reply =
    batch.op === 'open'
      ? runPackedOpen(batch, (ref, aad, nonce, ct, tag) => {
          const key = keys.get(ref);
          return key ? open(key, b(nonce), b(ct), b(tag), Buffer.from(aad)) : null;
        })
      : runPackedSeal(batch, (ref, aad, plaintext) => {
          const key = keys.get(ref);
          if (!key) throw new Error('no master key for the requested key version');
          const nonce = nonces.next();
          return { nonce, ...seal(key, nonce, b(plaintext), Buffer.from(aad)) };
        });
  setRunSeconds(reply, (performance.now() - started) / 1000);
  return move(reply);
}

/** Blind-index tokens of message texts (sends, edits): one task per turn of the main event loop. */
export function textTokens(task: TextTokenTask) {
  const lists = task.texts.map((text, i) => searchKeys.tokensUnder(task.fingerprint, task.conversationIds[i]!, text) ?? []);
  return move(packTokenReply(lists));
}

/** Query tokens: every word under every requested master key and conversation, in that order. */
export function queryTokens(task: QueryTokenTask) {
  const lists = task.fingerprints.flatMap((fp) => task.conversationIds.map((c) => searchKeys.wordTokensUnder(fp, c, task.words) ?? []));
  return move(packTokenReply(lists));
}
