// Micro-benchmarks of the crypto hot paths: encrypt, decrypt, derive, pool vs inline.
// Run: npm run bench [-- --time 200]   (BENCH_TIME_MS=200 too; BENCH_JSON=1 for JSON lines)
import { createCipheriv, createDecipheriv, createSecretKey, randomBytes } from 'node:crypto';
import { Bench } from 'tinybench';
import { open, seal } from '../src/crypto/aead.js';
import { openBatch, sealBatch, type OpenJob, type SealJob } from '../src/crypto/batch.js';
import { deriveConversationKey } from '../src/crypto/kdf.js';
import { NonceSource } from '../src/crypto/nonce.js';
import { MessageCipher } from '../src/cipher/message-cipher.js';
import { ConversationKeyCache, type KeyRef } from '../src/keys/conversation-keys.js';
import { MasterKeyring } from '../src/keys/keyring.js';
import { num, parseArgs } from './lib/common.js';
import { report } from './report.js';

const options = parseArgs(
  process.argv.slice(2),
  { time: { default: process.env.BENCH_TIME_MS ?? '1000', help: 'measured milliseconds per task (BENCH_TIME_MS)' } },
  'usage: npm run bench -- [options]\n' +
    'Micro-benchmarks of the crypto hot paths: AES-256-GCM per message size (node:crypto vs seal/open),\n' +
    'conversation key derivation, and batches inline vs on the worker pool (CRYPTO_POOL_SIZE workers).\n' +
    'One table per section (ops/s, p50/p99 µs); BENCH_JSON=1 adds a JSON line per task.\noptions:',
);
const time = num(options, 'time', 1, 600_000);
const master = randomBytes(32);
const keyring = new MasterKeyring(master);
const ref: KeyRef = { conversationId: '0b8f6c2e-3d4a-4c1e-9a57-2f1d6b8e9c01', version: 1, createdUnixSeconds: 1732838400, fingerprint: keyring.active.fingerprint };
const keyBytes = deriveConversationKey(master, ref.conversationId, ref.createdUnixSeconds, ref.version);
const key = createSecretKey(keyBytes);
const aad = Buffer.from(`${ref.conversationId}:018f3a6e-7b1c-7d2e-8f30-4a5b6c7d8e9f:5a1e3c9d-2b4f-4e6a-8c0d-1f2e3a4b5c6d`);
const nonces = new NonceSource();

// 1. AES-256-GCM per message size: raw node:crypto vs the project's seal/open.
for (const size of [256, 4096, 65536]) {
  const plaintext = randomBytes(size);
  const fixedNonce = randomBytes(12);
  const sealed = seal(key, fixedNonce, plaintext, aad);
  const bench = new Bench({ time, warmupTime: Math.min(200, time) });
  bench
    .add(`raw node:crypto encrypt (prefetched nonce)`, () => {
      const c = createCipheriv('aes-256-gcm', key, nonces.next());
      c.setAAD(aad);
      c.update(plaintext);
      c.final();
      c.getAuthTag();
    })
    .add(`raw node:crypto encrypt (randomBytes nonce)`, () => {
      const c = createCipheriv('aes-256-gcm', key, randomBytes(12));
      c.setAAD(aad);
      c.update(plaintext);
      c.final();
      c.getAuthTag();
    })
    .add(`sotalk seal`, () => {
      seal(key, nonces.next(), plaintext, aad);
    })
    .add(`raw node:crypto decrypt`, () => {
      const d = createDecipheriv('aes-256-gcm', key, fixedNonce);
      d.setAAD(aad);
      d.setAuthTag(sealed.tag);
      d.update(sealed.ciphertext);
      d.final();
    })
    .add(`sotalk open`, () => {
      open(key, fixedNonce, sealed.ciphertext, sealed.tag, aad);
    });
  await bench.run();
  report(`AES-256-GCM, ${size} B message`, bench);
}

// 2. Key derivation: HKDF per call vs the in-process cache.
{
  const cache = new ConversationKeyCache(keyring);
  let i = 0;
  const bench = new Bench({ time, warmupTime: Math.min(200, time) });
  bench
    .add('derive uncached (HKDF, KeyObject ikm)', () => {
      deriveConversationKey(keyring.active.key, ref.conversationId, ref.createdUnixSeconds, ++i);
    })
    .add('derive uncached (HKDF, Buffer ikm)', () => {
      deriveConversationKey(master, ref.conversationId, ref.createdUnixSeconds, ++i);
    })
    .add('derive cached (LRU hit)', () => {
      cache.get(ref);
    });
  await bench.run();
  report('conversation key derivation', bench);
}

// 3. Batch decryption / encryption: inline vs the worker pool, per batch size (messages/s).
{
  const cipher = new MessageCipher({ keyring, poolSize: Number(process.env.CRYPTO_POOL_SIZE ?? 1), inlineMax: 0 });
  const cache = new ConversationKeyCache(keyring);
  const resolve = (r: KeyRef) => cache.get(r);
  const plaintext = randomBytes(256);
  for (const n of [1, 10, 100, 1000]) {
    const sealJobs: SealJob<KeyRef>[] = Array.from({ length: n }, () => ({ key: ref, aad: aad.toString(), plaintext }));
    const openJobs: OpenJob<KeyRef>[] = sealBatch(sealJobs, resolve, nonces).map((s) => ({ key: ref, aad: aad.toString(), ...s }));
    const bench = new Bench({ time, warmupTime: Math.min(200, time) });
    bench
      .add(`open ${n} inline`, () => {
        openBatch(openJobs, resolve);
      })
      .add(`open ${n} pool`, async () => {
        await cipher.open(openJobs);
      })
      .add(`seal ${n} inline`, () => {
        sealBatch(sealJobs, resolve, nonces);
      })
      .add(`seal ${n} pool`, async () => {
        await cipher.seal(sealJobs);
      });
    await bench.run();
    report(`batch of ${n} × 256 B, messages/s`, bench, n);
  }
  await cipher.close();
}

// 4. Serialising a history page / event: JSON vs msgpack (plain msgpack, as socket frames use).
{
  const { packr } = await import('../src/realtime/protocol.js');
  const message = (i: number) => ({
    id: `01a228aa-4db1-75c1-8ea5-78ab11748a${String(i).padStart(2, '0')}`,
    conversation_id: '01a228aa-4da0-7095-914f-2e21a3e5d4b4',
    sender_id: '01a228aa-4d6e-722d-b0c8-37c83dc53599',
    seq: i + 1,
    content: 'x'.repeat(256),
    content_type: 'text',
    reply_to_id: null,
    client_message_id: null,
    signature: null,
    status: 'read',
    created_at: '2026-11-29T18:56:19.379Z',
    updated_at: '2026-11-29T18:56:19.379Z',
    edited_at: null,
    deleted: false,
  });
  const page = { messages: Array.from({ length: 100 }, (_, i) => message(i)), has_more: true };
  const event = { type: 'new_message', message: message(1) };
  const pageJson = JSON.stringify(page);
  const pagePack = packr.pack(page);
  const bench = new Bench({ time, warmupTime: Math.min(200, time) });
  bench
    .add('page of 100: JSON.stringify', () => {
      JSON.stringify(page);
    })
    .add('page of 100: msgpack pack', () => {
      packr.pack(page);
    })
    .add('page of 100: JSON.parse', () => {
      JSON.parse(pageJson);
    })
    .add('page of 100: msgpack unpack', () => {
      packr.unpack(pagePack);
    })
    .add('new_message event: JSON.stringify', () => {
      JSON.stringify(event);
    })
    .add('new_message event: msgpack pack', () => {
      packr.pack(event);
    });
  await bench.run();
  report(`serialisation (page ${pageJson.length} B JSON / ${pagePack.length} B msgpack)`, bench);
}

// 5. Search indexing on the send path: tokenising a message and hashing its words (docs/design.md, search).
{
  const { SearchKeys } = await import('../src/keys/search-keys.js');
  const { searchWords } = await import('../src/crypto/search-tokens.js');
  const { packTokenReply, readTokenReply } = await import('../src/crypto/token-tasks.js');
  const replyLists = Array.from({ length: 16 }, () => Array.from({ length: 44 }, () => randomBytes(16)));
  const search = new SearchKeys(keyring);
  const english = 'The quick brown fox jumps over the lazy dog while the server encrypts every message at rest; '.repeat(3).slice(0, 256);
  const mixed = 'Grüße aus Köln! Привет, мир. 我爱北京天安门 東京タワー 🎉 party tonight at 8, bring snacks and the good mood '.repeat(2).slice(0, 256);
  const bench = new Bench({ time, warmupTime: Math.min(200, time) });
  bench
    .add('searchWords, 256 B English', () => {
      searchWords(english);
    })
    .add('index tokens, 256 B English (words + HMACs)', () => {
      search.tokensFor(ref.conversationId, english);
    })
    .add('index tokens, 256 B multilingual', () => {
      search.tokensFor(ref.conversationId, mixed);
    })
    .add('query tokens, 2 words × 100 conversations', () => {
      search.queryTokens(Array.from({ length: 100 }, (_, i) => `0b8f6c2e-3d4a-4c1e-9a57-2f1d6b8e9c${String(i).padStart(2, '0')}`), ['quick', 'fox']);
    })
    .add("worker's token reply, 16 messages × 44 tokens (pack + read)", () => {
      readTokenReply(packTokenReply(replyLists), replyLists.length);
    });
  await bench.run();
  report('search indexing', bench);
}
