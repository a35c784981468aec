import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { messageAad, open, seal } from '../../src/crypto/aead.js';
import { conversationKeySalt, deriveAuthTokenSecret, deriveConversationKey, keyFingerprint } from '../../src/crypto/kdf.js';

interface AeadVector {
  key: string;
  conversation_id: string;
  message_id: string;
  sender_id: string;
  aad_utf8: string;
  nonce: string;
  plaintext_utf8: string;
  ciphertext: string;
  tag: string;
  why?: string;
}

// The project's crypto test vectors (docs/design.md, Crypto).
const vectors = JSON.parse(readFileSync(new URL('../fixtures/crypto-vectors.json', import.meta.url), 'utf8')) as {
  fingerprints: { master_key_b64: string; fingerprint: string }[];
  conversation_keys: { master_key_b64: string; conversation_id: string; created_unix_seconds: number; version: number; salt_utf8: string; key: string }[];
  aead: AeadVector[];
  aead_must_fail: AeadVector[];
  auth_token_secret: { master_key_b64: string; secret: string }[];
};
const b64 = (s: string) => Buffer.from(s, 'base64');
const hex = (s: string) => Buffer.from(s, 'hex');

describe('crypto vectors (docs/design.md, Crypto)', () => {
  it('has vectors of every kind', () => {
    expect(vectors.fingerprints.length).toBeGreaterThan(0);
    expect(vectors.conversation_keys.length).toBeGreaterThan(0);
    expect(vectors.aead.length).toBeGreaterThan(0);
    expect(vectors.aead_must_fail.length).toBeGreaterThan(0);
    expect(vectors.auth_token_secret.length).toBeGreaterThan(0);
  });

  it.each(vectors.fingerprints)('fingerprint of a master key ($fingerprint)', (v) => {
    expect(keyFingerprint(b64(v.master_key_b64))).toBe(v.fingerprint);
  });

  it.each(vectors.conversation_keys)('conversation key $conversation_id v$version @$created_unix_seconds', (v) => {
    expect(conversationKeySalt(v.conversation_id, v.created_unix_seconds, v.version)).toBe(v.salt_utf8);
    expect(deriveConversationKey(b64(v.master_key_b64), v.conversation_id, v.created_unix_seconds, v.version).toString('hex')).toBe(v.key);
  });

  it.each(vectors.auth_token_secret)('auth token secret', (v) => {
    expect(deriveAuthTokenSecret(b64(v.master_key_b64)).toString('hex')).toBe(v.secret);
  });

  it.each(vectors.aead)('AES-256-GCM seal and open reproduce the vector', (v) => {
    const aad = messageAad(v.conversation_id, v.message_id, v.sender_id);
    expect(aad.toString('utf8')).toBe(v.aad_utf8);
    const sealed = seal(hex(v.key), hex(v.nonce), Buffer.from(v.plaintext_utf8, 'utf8'), aad);
    expect(sealed.ciphertext.toString('hex')).toBe(v.ciphertext);
    expect(sealed.tag.toString('hex')).toBe(v.tag);
    expect(open(hex(v.key), hex(v.nonce), hex(v.ciphertext), hex(v.tag), aad)?.toString('utf8')).toBe(v.plaintext_utf8);
  });

  it.each(vectors.aead_must_fail)('rejects: $why', (v) => {
    const aad = messageAad(v.conversation_id, v.message_id, v.sender_id);
    expect(aad.toString('utf8')).toBe(v.aad_utf8);
    expect(open(hex(v.key), hex(v.nonce), hex(v.ciphertext), hex(v.tag), aad)).toBeNull();
  });
});
