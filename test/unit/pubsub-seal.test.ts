import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MasterKeyring } from '../../src/keys/keyring.js';
import { PubSubSealer } from '../../src/realtime/pubsub-seal.js';

const keyA = randomBytes(32);
const keyB = randomBytes(32);
const payload = Buffer.from('{"type":"new_message","content":"secret words"}');

describe('PubSubSealer', () => {
  const a = new PubSubSealer(new MasterKeyring(keyA), randomBytes(16));
  const b = new PubSubSealer(new MasterKeyring(keyA), randomBytes(16));

  it('another instance with the same master key opens what one sealed; the plaintext is not in the sealed bytes', () => {
    const sealed = a.seal('sotalk:c:{x}', payload);
    expect(sealed.includes(Buffer.from('secret'))).toBe(false);
    expect(b.open('sotalk:c:{x}', sealed)).toEqual({ kind: 'ok', plaintext: payload });
  });

  it('the sealing instance recognises its own publication without decrypting', () => {
    expect(a.open('sotalk:c:{x}', a.seal('sotalk:c:{x}', payload))).toEqual({ kind: 'own' });
  });

  it('a payload moved to another channel, a flipped bit anywhere, a truncation or garbage does not open', () => {
    const sealed = b.seal('sotalk:c:{x}', payload);
    expect(a.open('sotalk:c:{y}', sealed).kind).toBe('invalid');
    for (let i = 0; i < sealed.length; i++) {
      const bad = Buffer.from(sealed);
      bad[i]! ^= 0x01;
      const opened = a.open('sotalk:c:{x}', bad);
      // flipping the origin can make it look like ours (then skipped), never valid
      expect(opened.kind === 'ok', `byte ${i}`).toBe(false);
    }
    expect(a.open('sotalk:c:{x}', sealed.subarray(0, sealed.length - 1)).kind).toBe('invalid');
    expect(a.open('sotalk:c:{x}', Buffer.alloc(0)).kind).toBe('invalid');
    expect(a.open('sotalk:c:{x}', randomBytes(100)).kind).toBe('invalid');
  });

  it('any key of the keyring opens (two-phase master-key rotation); a key not held does not', () => {
    const nextActive = new PubSubSealer(new MasterKeyring(keyB, [keyA]), randomBytes(16));
    const oldActive = new PubSubSealer(new MasterKeyring(keyA, [keyB]), randomBytes(16));
    const stranger = new PubSubSealer(new MasterKeyring(randomBytes(32)), randomBytes(16));
    expect(oldActive.open('c', nextActive.seal('c', payload)).kind).toBe('ok');
    expect(nextActive.open('c', oldActive.seal('c', payload)).kind).toBe('ok');
    expect(a.open('c', nextActive.seal('c', payload)).kind).toBe('invalid');
    expect(stranger.open('c', a.seal('c', payload)).kind).toBe('invalid');
  });
});
