import { describe, expect, it } from 'vitest';
import { NonceSource } from '../../src/crypto/nonce.js';

describe('NonceSource', () => {
  it('hands out a million 12-byte nonces with no repeat, and earlier nonces never change', () => {
    const source = new NonceSource(1000);
    const seen = new Set<string>();
    const first = source.next();
    const firstCopy = Buffer.from(first);
    seen.add(first.toString('base64'));
    let wrongLength = 0;
    for (let i = 1; i < 1_000_000; i++) {
      const nonce = source.next();
      if (nonce.length !== 12) wrongLength++;
      seen.add(nonce.toString('latin1'));
    }
    expect(wrongLength).toBe(0);
    expect(seen.size).toBe(1_000_000);
    // refills allocate a new buffer instead of overwriting what was handed out
    expect(first.equals(firstCopy)).toBe(true);
  }, 120_000);
});
