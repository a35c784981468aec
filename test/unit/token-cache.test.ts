// Unit tests: the search token cache (src/keys/search-keys.ts) stays bounded and drops the least
// recently used conversations first.
import { describe, expect, it } from 'vitest';
import { TokenCache } from '../../src/keys/search-keys.js';

const token = (i: number) => Buffer.alloc(16, i);

describe('TokenCache', () => {
  it('never holds more than max tokens, dropping whole scopes least recently used first', () => {
    const cache = new TokenCache(10);
    const a = cache.scope('fp:a');
    for (let i = 0; i < 4; i++) cache.add(a, `a${i}`, token(i));
    const b = cache.scope('fp:b');
    for (let i = 0; i < 4; i++) cache.add(b, `b${i}`, token(i));
    expect(cache.scope('fp:a').get('a1')).toEqual(token(1)); // a is now the most recently used
    const c = cache.scope('fp:c');
    for (let i = 0; i < 3; i++) cache.add(c, `c${i}`, token(i)); // 11 > 10: b goes (down to ≤ 9)
    expect(cache.size).toBe(7);
    expect(cache.scope('fp:b').size).toBe(0);
    expect(cache.scope('fp:a').get('a3')).toEqual(token(3));
    expect(cache.scope('fp:c').get('c2')).toEqual(token(2));
  });

  it('one scope larger than the bound is emptied, not detached: the count stays exact', () => {
    const cache = new TokenCache(5);
    const big = cache.scope('fp:big');
    for (let i = 0; i < 23; i++) {
      cache.add(big, `w${i}`, token(i));
      expect(cache.size).toBeLessThanOrEqual(5);
      expect(cache.size).toBe(big.size);
    }
    expect(cache.scope('fp:big')).toBe(big);
  });
});
