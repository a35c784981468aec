import { createSecretKey, type KeyObject } from 'node:crypto';
import { keyFingerprint } from '../crypto/kdf.js';

export interface MasterKey {
  fingerprint: string;
  key: KeyObject;
}

/**
 * The master keys this process holds: one active key that new key versions are created under,
 * and old (or next) keys kept for decryption only. Keys are known by fingerprint.
 */
export class MasterKeyring {
  readonly active: MasterKey;
  readonly #byFingerprint = new Map<string, MasterKey>();

  constructor(active: Buffer, old: Buffer[] = []) {
    this.active = { fingerprint: keyFingerprint(active), key: createSecretKey(active) };
    this.#byFingerprint.set(this.active.fingerprint, this.active);
    for (const raw of old) {
      const entry = { fingerprint: keyFingerprint(raw), key: createSecretKey(raw) };
      if (!this.#byFingerprint.has(entry.fingerprint)) this.#byFingerprint.set(entry.fingerprint, entry);
    }
  }

  get(fingerprint: string): KeyObject | undefined {
    return this.#byFingerprint.get(fingerprint)?.key;
  }

  fingerprints(): string[] {
    return [...this.#byFingerprint.keys()];
  }

  /** Raw key bytes for handing to worker threads (workerData); nothing else should call this. */
  exportForWorkers(): Buffer[] {
    return [...this.#byFingerprint.values()].map((k) => k.key.export());
  }
}
