import { randomFillSync } from 'node:crypto';
import { v7 as uuidv7 } from 'uuid';

/**
 * UUIDv7 ids (time-ordered, monotonic within the process) with randomness taken from a prefetched
 * CSPRNG buffer: the uuid package's default asks WebCrypto for 16 bytes per id, a measurable share
 * of a send's main-thread time.
 */
export class IdSource {
  #pool = Buffer.alloc(0);
  #offset = 0;
  #msecs = -Infinity;
  #seq = 0;

  next(): string {
    if (this.#offset + 16 > this.#pool.length) {
      this.#pool = randomFillSync(Buffer.allocUnsafe(16 * 1024));
      this.#offset = 0;
    }
    const random = this.#pool.subarray(this.#offset, this.#offset + 16);
    this.#offset += 16;
    const now = Date.now();
    if (now > this.#msecs) {
      this.#msecs = now;
      // a random 31-bit start (as RFC 9562's method 1) leaves room to count up within a millisecond
      this.#seq = random.readUInt32BE(6) & 0x7fffffff;
    } else if (++this.#seq > 0xffffffff) {
      this.#msecs++;
      this.#seq = random.readUInt32BE(6) & 0x7fffffff;
    }
    return uuidv7({ random, msecs: this.#msecs, seq: this.#seq });
  }
}

const shared = new IdSource();

/** A new UUIDv7 string. */
export const newId = (): string => shared.next();
