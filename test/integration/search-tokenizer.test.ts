// Search tokens off the main thread (issue "Send and fan-out pipeline", item 2): the worker path
// gives exactly the inline tokens, big texts and big queries run in slices (never in one turn), and a
// query beyond SEARCH_MAX_QUERY_TOKENS is a 400 on `q`.
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MessageCipher } from '../../src/cipher/message-cipher.js';
import { ApiError } from '../../src/errors.js';
import { MasterKeyring } from '../../src/keys/keyring.js';
import { SearchKeys } from '../../src/keys/search-keys.js';
import { searchWords } from '../../src/crypto/search-tokens.js';
import { SearchTokenizer } from '../../src/services/search-tokenizer.js';

const master = randomBytes(32);
const old = randomBytes(32);
const keyring = new MasterKeyring(master, [old]);
const keys = new SearchKeys(keyring);
let cipher: MessageCipher;
let pooled: SearchTokenizer;
let inline: SearchTokenizer;

const maxOf = (xs: number[]) => xs.reduce((a, b) => Math.max(a, b), 0);
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

  it('ten 64 KiB Han texts and a 2,500-conversation query never hold the event loop for more than one slice', async () => {
    // Structural, not timed: a ticker re-queued every turn of the event loop marks the turns, and
    // a SearchKeys that logs every word it hashes on this thread shows how much ran in each turn.
    const texts = Array.from({ length: 10 }, () => han(21_000));
    const words = ['one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight'];
    const conversations = Array.from({ length: 2500 }, () => randomUUID());
    const perTurn: number[] = [0];
    class CountingKeys extends SearchKeys {
      override wordTokensUnder(fingerprint: string, conversationId: string, w: string[]): Buffer[] | undefined {
        perTurn[perTurn.length - 1]! += w.length;
        return super.wordTokensUnder(fingerprint, conversationId, w);
      }
    }
    const run = async (t: SearchTokenizer) => {
      perTurn.length = 0;
      perTurn.push(0);
      let done = false;
      const tick = () => {
        perTurn.push(0);
        if (!done) setImmediate(tick);
      };
      setImmediate(tick);
      await Promise.all([...texts.map((text) => t.tokensFor(randomUUID(), text)), t.queryTokens(conversations, words)]);
      done = true;
    };

    const counting = new CountingKeys(keyring);
    await run(new SearchTokenizer({ keys: counting, runTask: (n, t) => cipher.runTask(n, t), pooled: true, maxQueryTokens: 200_000, inlineChars: 0, inlineQueryTokens: 0 }));
    expect(maxOf(perTurn), 'pooled: nothing hashed on the main thread').toBe(0);

    await run(new SearchTokenizer({ keys: new CountingKeys(keyring), runTask: () => undefined, pooled: false, maxQueryTokens: 200_000 }));
    const textWords = searchWords(texts[0]!).length;
    const total = perTurn.reduce((a, b) => a + b, 0);
    expect(total).toBe(texts.length * textWords + conversations.length * words.length * 2);
    // one text and one query chunk (4,096 tokens) at most per turn: the two run side by side
    expect(maxOf(perTurn)).toBeLessThanOrEqual(textWords + 4096);
    expect(perTurn.filter((n) => n > 0).length).toBeGreaterThanOrEqual(texts.length);
  }, 60_000);
});
