import { randomFillSync } from 'node:crypto';
import { NONCE_BYTES } from './aead.js';

/**
 * Hands out 12-byte random nonces from a prefetched CSPRNG buffer: one randomFillSync per
 * `batch` nonces instead of one randomBytes call each. Each slice is handed out once.
 */
export class NonceSource {
  #pool: Buffer;
  #offset: number;
  readonly #batch: number;

  constructor(batch = 4096) {
    this.#batch = batch;
    this.#pool = Buffer.alloc(0);
    this.#offset = 0;
  }

  next(): Buffer {
    if (this.#offset + NONCE_BYTES > this.#pool.length) {
      // A fresh buffer each refill: nonces already handed out keep pointing at the old bytes.
      this.#pool = randomFillSync(Buffer.allocUnsafeSlow(NONCE_BYTES * this.#batch));
      this.#offset = 0;
    }
    const nonce = this.#pool.subarray(this.#offset, this.#offset + NONCE_BYTES);
    this.#offset += NONCE_BYTES;
    return nonce;
  }
}
