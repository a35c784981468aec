// Search tokens off the main thread (issue "Send and fan-out pipeline", item 2): the worker path
// gives exactly the inline tokens, big texts and big queries do not stall the event loop, and a
// query beyond SEARCH_MAX_QUERY_TOKENS is a 400 on `q`.
import { randomBytes, randomUUID } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MessageCipher } from '../../src/cipher/message-cipher.js';
import { ApiError } from '../../src/errors.js';
import { MasterKeyring } from '../../src/keys/keyring.js';
import { SearchKeys } from '../../src/keys/search-keys.js';
import { SearchTokenizer } from '../../src/services/search-tokenizer.js';

const master = randomBytes(32);
const old = randomBytes(32);
const keyring = new MasterKeyring(master, [old]);
const keys = new SearchKeys(keyring);
let cipher: MessageCipher;
let pooled: SearchTokenizer;
let inline: SearchTokenizer;

const hex = (tokens: Buffer[]) => tokens.map((t) => t.toString('hex'));
const han = (n: number) => Array.from({ length: n }, (_, i) => String.fromCodePoint(0x4e00 + ((i * 7919) % 20000))).join('');

beforeAll(() => {
  cipher = new MessageCipher({ keyring, poolSize: 1, inlineMax: 16 });
  pooled = new SearchTokenizer({ keys, runTask: (n, t) => cipher.runTask(n, t), pooled: true, maxQueryTokens: 200_000, inlineChars: 0, inlineQueryTokens: 0 });
  inline = new SearchTokenizer({ keys, runTask: () => undefined, pooled: false, maxQueryTokens: 200_000 });
});

afterAll(async () => {
  await cipher?.close();
});

describe('SearchTokenizer', () => {
  it('tokens from the worker equal the inline ones, for many texts submitted in one turn', async () => {
    const texts = ['hello world', 'Grüße aus Köln 2024', han(40), 'ไทยภาษา test', '', '👍 !', 'x'.repeat(70) + ' ok'];
    const conversations = texts.map(() => randomUUID());
    const fromWorker = await Promise.all(texts.map((t, i) => pooled.tokensFor(conversations[i]!, t)));
    texts.forEach((t, i) => expect(hex(fromWorker[i]!), t).toEqual(hex(keys.tokensFor(conversations[i]!, t))));
    expect(fromWorker[0]).toHaveLength(2);
    expect(fromWorker[4]).toHaveLength(0);
  });

  it('query tokens from the worker equal the inline ones, under every master key held', async () => {
    const conversations = Array.from({ length: 300 }, () => randomUUID());
    const words = ['alpha', 'beta', 'gamma'];
    const a = await pooled.queryTokens(conversations, words);
    const b = await inline.queryTokens(conversations, words);
    const key = (t: { conversationId: string; token: Buffer; word: number }) => `${t.conversationId}:${t.word}:${t.token.toString('hex')}`;
    expect(a.map(key).sort()).toEqual(b.map(key).sort());
    expect(a).toHaveLength(300 * 3 * 2);
  });

  it('a query needing more tokens than the cap is a 400 on q, before any hashing', async () => {
    const capped = new SearchTokenizer({ keys, runTask: () => undefined, pooled: false, maxQueryTokens: 1000 });
    const err = await capped.queryTokens(Array.from({ length: 100 }, () => randomUUID()), ['a1', 'b2', 'c3', 'd4', 'e5', 'f6']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).field).toBe('q');
  });

  it('ten 64 KiB Han texts and a 2,500-conversation query keep the event loop responsive (pooled and inline)', async () => {
    const texts = Array.from({ length: 10 }, () => han(21_000));
    for (const t of [pooled, inline]) {
      const delay = monitorEventLoopDelay({ resolution: 5 });
      delay.enable();
      const conversations = Array.from({ length: 2500 }, () => randomUUID());
      await Promise.all([
        ...texts.map((text) => t.tokensFor(randomUUID(), text)),
        t.queryTokens(conversations, ['one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight']),
      ]);
      delay.disable();
      // a bound on blocking: far above a slice's few ms (and CI's noise), far below the ~1 s this blocked in one piece before
      expect(delay.max / 1e6).toBeLessThan(500);
    }
  }, 60_000);
});
