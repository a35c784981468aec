import { createHmac, hkdfSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { deriveConversationKey } from '../../src/crypto/kdf.js';
import { deriveSearchKey, searchToken, searchWords } from '../../src/crypto/search-tokens.js';

const sorted = (text: string) => searchWords(text).sort();

describe('searchWords (docs/design.md tokenizer)', () => {
  it('English: lower case, punctuation splits, 1-letter words dropped, duplicates once', () => {
    expect(sorted("Hello, World! It's a HELLO-world day: 42 x")).toEqual(['42', 'day', 'hello', 'it', 'world'].sort());
  });
  it('Russian', () => {
    expect(sorted('Привет, мир! Как дела?')).toEqual(['дела', 'как', 'мир', 'привет'].sort());
  });
  it('German with diacritics, NFKC-normalised (composed and decomposed forms agree)', () => {
    const composed = 'Grüße aus Köln, Straße';
    const decomposed = 'Gru\u0308ße aus Ko\u0308ln, Straße';
    expect(sorted(composed)).toEqual(['aus', 'grüße', 'köln', 'straße'].sort());
    expect(sorted(decomposed)).toEqual(sorted(composed));
  });
  it('NFKC folds compatibility forms (full-width letters, ligatures)', () => {
    expect(sorted('ＡＢＣ ﬁne')).toEqual(['abc', 'fine']);
  });
  it('Chinese: overlapping character pairs', () => {
    expect(sorted('我爱北京天安门')).toEqual(['我爱', '爱北', '北京', '京天', '天安', '安门'].sort());
  });
  it('Japanese: kana and kanji pairs; a run switching to Latin splits', () => {
    expect(sorted('東京タワーtower')).toEqual(['東京', '京タ', 'タワ', 'ワー', 'tower'].sort());
  });
  it('Thai: character pairs', () => {
    expect(sorted('สวัสดี')).toEqual(['สว', 'วั', 'ัส', 'สด', 'ดี'].sort());
  });
  it('emoji and symbols are separators, never words', () => {
    expect(sorted('🔥fire🔥 party 🎉🎉 ok👍')).toEqual(['fire', 'ok', 'party']);
  });
  it('runs longer than 64 characters are not indexed; exactly 64 are', () => {
    expect(searchWords('a'.repeat(65))).toEqual([]);
    expect(searchWords('b'.repeat(64))).toEqual(['b'.repeat(64)]);
  });
  it('a text with no indexable word gives none', () => {
    expect(searchWords('a , . ! 🎉 7')).toEqual([]);
  });
});

describe('blind-index tokens', () => {
  const master = Buffer.from('AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=', 'base64');
  const conversation = '0b8f6c2e-3d4a-4c1e-9a57-2f1d6b8e9c01';
  it('search key is HKDF(master, salt = conversation id, info sotalk-search-v1) and differs from every message key', () => {
    const expected = Buffer.from(hkdfSync('sha256', master, conversation, 'sotalk-search-v1', 32));
    const key = deriveSearchKey(master, conversation);
    expect(key.equals(expected)).toBe(true);
    expect(key.equals(deriveConversationKey(master, conversation, 1732838400, 1))).toBe(false);
  });
  it('token is the first 16 bytes of HMAC-SHA256(search key, word)', () => {
    const key = deriveSearchKey(master, conversation);
    const token = searchToken(key, 'hello');
    expect(token).toHaveLength(16);
    expect(token.equals(createHmac('sha256', key).update('hello').digest().subarray(0, 16))).toBe(true);
    expect(token.equals(searchToken(deriveSearchKey(master, 'f47ac10b-58cc-4372-a567-0e02b2c3d479'), 'hello'))).toBe(false);
  });
});

describe('searchWords around emoji modifiers', () => {
  it('a variation selector or keycap after an emoji does not glue onto the next word', () => {
    expect(sorted('I ❤️love you ☀️sunny 1️⃣ first')).toEqual(['first', 'love', 'sunny', 'you'].sort());
  });
});

describe('searchWords counts characters, not UTF-16 units', () => {
  it('a single astral letter is too short; 64 astral letters are a word, 65 are not', () => {
    const astral = '𐐀'; // DESERET CAPITAL LETTER LONG I (lower-cases to 𐐨), one code point, two UTF-16 units
    expect(searchWords(astral)).toEqual([]);
    expect(searchWords(astral.repeat(64))).toHaveLength(1);
    expect(searchWords(astral.repeat(65))).toEqual([]);
  });
});
