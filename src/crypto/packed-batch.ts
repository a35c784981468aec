import type { OpenJob, SealJob, SealOutput } from './batch.js';
import { NONCE_BYTES, TAG_BYTES } from './aead.js';

/**
 * Wire format of crypto batches between the main thread and the workers: a few flat buffers
 * that are transferred (moved), never cloned, instead of an array of objects holding buffers.
 *
 * request:  keys (distinct key references), meta (Uint32 per job: key index, aad bytes, body
 *           bytes) and data (each job's aad then body: nonce‖tag‖ciphertext to open, plaintext
 *           to seal).
 * reply:    one ArrayBuffer: float64 run seconds, then for `open` one status byte per job padded
 *           to 8 and the plaintexts; for `seal` nonce‖tag‖ciphertext per job.
 */
export interface PackedBatch<K> {
  op: 'open' | 'seal';
  keys: K[];
  meta: Uint32Array;
  data: Uint8Array;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const HEADER = 8;
const pad8 = (n: number) => (n + 7) & ~7;

function keyIndexer<K>(keyId: (k: K) => string) {
  const index = new Map<string, number>();
  const keys: K[] = [];
  return {
    keys,
    of(key: K): number {
      const id = keyId(key);
      let i = index.get(id);
      if (i === undefined) {
        i = keys.length;
        keys.push(key);
        index.set(id, i);
      }
      return i;
    },
  };
}

export function packOpen<K>(jobs: OpenJob<K>[], keyId: (k: K) => string): PackedBatch<K> {
  const keys = keyIndexer(keyId);
  const aads = jobs.map((j) => encoder.encode(j.aad));
  const meta = new Uint32Array(jobs.length * 3);
  let total = 0;
  jobs.forEach((j, i) => {
    total += aads[i]!.length + NONCE_BYTES + TAG_BYTES + j.ciphertext.length;
  });
  const data = new Uint8Array(total);
  let at = 0;
  jobs.forEach((j, i) => {
    const aad = aads[i]!;
    meta[i * 3] = keys.of(j.key);
    meta[i * 3 + 1] = aad.length;
    meta[i * 3 + 2] = NONCE_BYTES + TAG_BYTES + j.ciphertext.length;
    data.set(aad, at);
    at += aad.length;
    // A wrong-length nonce or tag (a corrupt row) must fail to open, not shift the layout.
    data.set(j.nonce.length === NONCE_BYTES ? j.nonce : new Uint8Array(NONCE_BYTES), at);
    data.set(j.tag.length === TAG_BYTES ? j.tag : new Uint8Array(TAG_BYTES), at + NONCE_BYTES);
    data.set(j.ciphertext, at + NONCE_BYTES + TAG_BYTES);
    at += meta[i * 3 + 2]!;
  });
  return { op: 'open', keys: keys.keys, meta, data };
}

export function packSeal<K>(jobs: SealJob<K>[], keyId: (k: K) => string): PackedBatch<K> {
  const keys = keyIndexer(keyId);
  const aads = jobs.map((j) => encoder.encode(j.aad));
  const meta = new Uint32Array(jobs.length * 3);
  let total = 0;
  jobs.forEach((j, i) => {
    total += aads[i]!.length + j.plaintext.length;
  });
  const data = new Uint8Array(total);
  let at = 0;
  jobs.forEach((j, i) => {
    meta[i * 3] = keys.of(j.key);
    meta[i * 3 + 1] = aads[i]!.length;
    meta[i * 3 + 2] = j.plaintext.length;
    data.set(aads[i]!, at);
    data.set(j.plaintext, at + aads[i]!.length);
    at += aads[i]!.length + j.plaintext.length;
  });
  return { op: 'seal', keys: keys.keys, meta, data };
}

/** Walks a packed batch's jobs (worker side); views into `data`, no copies. */
export function* unpackJobs<K>(batch: PackedBatch<K>): Generator<{ key: K; aad: string; body: Uint8Array }> {
  const { meta, data } = batch;
  let at = 0;
  for (let i = 0; i < meta.length / 3; i++) {
    const aadLen = meta[i * 3 + 1]!;
    const bodyLen = meta[i * 3 + 2]!;
    const key = batch.keys[meta[i * 3]!];
    if (key === undefined || at + aadLen + bodyLen > data.length) throw new Error('malformed packed batch');
    yield { key, aad: decoder.decode(data.subarray(at, at + aadLen)), body: data.subarray(at + aadLen, at + aadLen + bodyLen) };
    at += aadLen + bodyLen;
  }
}

/** Size of the reply buffer for a batch. */
export function replySize(batch: PackedBatch<unknown>): number {
  const n = batch.meta.length / 3;
  let body = 0;
  for (let i = 0; i < n; i++) body += batch.meta[i * 3 + 2]!;
  // open: plaintext = body − nonce − tag; seal: nonce‖tag‖ciphertext = body + nonce + tag
  return batch.op === 'open' ? HEADER + pad8(n) + body - n * (NONCE_BYTES + TAG_BYTES) : HEADER + body + n * (NONCE_BYTES + TAG_BYTES);
}

/** Worker side: runs `open` on each job into a fresh reply buffer. */
export function runPackedOpen<K>(batch: PackedBatch<K>, open: (key: K, aad: string, nonce: Uint8Array, ct: Uint8Array, tag: Uint8Array) => Uint8Array | null): ArrayBuffer {
  const n = batch.meta.length / 3;
  const out = new ArrayBuffer(replySize(batch));
  const bytes = new Uint8Array(out);
  let at = HEADER + pad8(n);
  let i = 0;
  for (const job of unpackJobs(batch)) {
    const nonce = job.body.subarray(0, NONCE_BYTES);
    const tag = job.body.subarray(NONCE_BYTES, NONCE_BYTES + TAG_BYTES);
    const ct = job.body.subarray(NONCE_BYTES + TAG_BYTES);
    const plain = open(job.key, job.aad, nonce, ct, tag);
    if (plain && plain.length === ct.length) {
      bytes[HEADER + i] = 1;
      bytes.set(plain, at);
    }
    at += ct.length;
    i++;
  }
  return out;
}

/** Worker side: runs `seal` on each job into a fresh reply buffer. */
export function runPackedSeal<K>(batch: PackedBatch<K>, seal: (key: K, aad: string, plaintext: Uint8Array) => SealOutput): ArrayBuffer {
  const out = new ArrayBuffer(replySize(batch));
  const bytes = new Uint8Array(out);
  let at = HEADER;
  for (const job of unpackJobs(batch)) {
    const s = seal(job.key, job.aad, job.body);
    if (s.ciphertext.length !== job.body.length) throw new Error('ciphertext length differs from plaintext length');
    bytes.set(s.nonce, at);
    bytes.set(s.tag, at + NONCE_BYTES);
    bytes.set(s.ciphertext, at + NONCE_BYTES + TAG_BYTES);
    at += NONCE_BYTES + TAG_BYTES + s.ciphertext.length;
  }
  return out;
}

export function setRunSeconds(reply: ArrayBuffer, seconds: number): void {
  new DataView(reply).setFloat64(0, seconds, true);
}

export function runSecondsOf(reply: ArrayBuffer): number {
  return new DataView(reply).getFloat64(0, true);
}

/** Main side: plaintext views per job (null where the tag failed); validates the reply's size. */
export function readOpenReply(reply: unknown, batch: { meta: Uint32Array }): (Buffer | null)[] {
  const n = batch.meta.length / 3;
  const lengths = Array.from({ length: n }, (_, i) => batch.meta[i * 3 + 2]! - NONCE_BYTES - TAG_BYTES);
  const expected = HEADER + pad8(n) + lengths.reduce((a, b) => a + b, 0);
  if (!(reply instanceof ArrayBuffer) || reply.byteLength !== expected) throw new Error('open: malformed worker reply');
  const flags = new Uint8Array(reply, HEADER, n);
  let at = HEADER + pad8(n);
  return lengths.map((len, i) => {
    const view = flags[i] === 1 ? Buffer.from(reply, at, len) : null;
    at += len;
    return view;
  });
}

/** Main side: nonce, tag and ciphertext views per job; validates the reply's size. */
export function readSealReply(reply: unknown, batch: { meta: Uint32Array }): SealOutput[] {
  const n = batch.meta.length / 3;
  const lengths = Array.from({ length: n }, (_, i) => batch.meta[i * 3 + 2]!);
  const expected = HEADER + lengths.reduce((a, b) => a + b + NONCE_BYTES + TAG_BYTES, 0);
  if (!(reply instanceof ArrayBuffer) || reply.byteLength !== expected) throw new Error('seal: malformed worker reply');
  let at = HEADER;
  return lengths.map((len) => {
    const out = {
      nonce: Buffer.from(reply, at, NONCE_BYTES),
      tag: Buffer.from(reply, at + NONCE_BYTES, TAG_BYTES),
      ciphertext: Buffer.from(reply, at + NONCE_BYTES + TAG_BYTES, len),
    };
    at += NONCE_BYTES + TAG_BYTES + len;
    return out;
  });
}
