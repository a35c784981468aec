import type { KeyObject } from 'node:crypto';
import { open, seal } from './aead.js';
import type { NonceSource } from './nonce.js';

/** One message to encrypt: key reference, AAD text (docs/design.md, Crypto) and UTF-8 plaintext bytes. */
export interface SealJob<K> {
  key: K;
  aad: string;
  plaintext: Uint8Array;
}

export interface SealOutput {
  nonce: Buffer;
  ciphertext: Buffer;
  tag: Buffer;
}

export interface OpenJob<K> {
  key: K;
  aad: string;
  nonce: Uint8Array;
  ciphertext: Uint8Array;
  tag: Uint8Array;
}

/** A Buffer view of the same bytes (no copy). */
export const asBuffer = (u: Uint8Array) => (Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength));

/** Encrypts each job with a fresh nonce; a missing key is a programming error and throws. */
export function sealBatch<K>(jobs: SealJob<K>[], resolve: (key: K) => KeyObject | undefined, nonces: NonceSource): SealOutput[] {
  return jobs.map((job) => {
    const key = resolve(job.key);
    if (!key) throw new Error('no master key for the requested key version');
    const nonce = nonces.next();
    const sealed = seal(key, nonce, asBuffer(job.plaintext), Buffer.from(job.aad, 'utf8'));
    return { nonce, ...sealed };
  });
}

/** Decrypts each job; null where the key is missing or the tag does not verify. */
export function openBatch<K>(jobs: OpenJob<K>[], resolve: (key: K) => KeyObject | undefined): (Buffer | null)[] {
  return jobs.map((job) => {
    const key = resolve(job.key);
    if (!key) return null;
    return open(key, asBuffer(job.nonce), asBuffer(job.ciphertext), asBuffer(job.tag), Buffer.from(job.aad, 'utf8'));
  });
}
