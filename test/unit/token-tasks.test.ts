// Unit tests: token lists packed by a worker and read back on the main thread (src/crypto/token-tasks.ts).
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { packTokenReply, readTokenReply } from '../../src/crypto/token-tasks.js';

describe('token replies', () => {
  it('round-trip lists of 16-byte tokens, empty lists included, byte for byte', () => {
    const lists = [[randomBytes(16), randomBytes(16)], [], Array.from({ length: 44 }, () => randomBytes(16))];
    const back = readTokenReply(packTokenReply(lists), 3);
    expect(back.map((l) => l.map((t) => t.toString('hex')))).toEqual(lists.map((l) => l.map((t) => t.toString('hex'))));
  });

  it('refuses a reply with another number of lists, or not a buffer', () => {
    expect(() => readTokenReply(packTokenReply([[randomBytes(16)]]), 2)).toThrow(/wrong number of lists/);
    expect(() => readTokenReply({ lists: [] }, 0)).toThrow(/not a buffer/);
  });
});
