import { createSecretKey, hkdfSync, type KeyObject } from 'node:crypto';
import { NONCE_BYTES, TAG_BYTES, open, seal } from '../crypto/aead.js';
import { NonceSource } from '../crypto/nonce.js';
import type { MasterKeyring } from '../keys/keyring.js';

const PUBSUB_INFO = 'sotalk-pubsub-v1';
const VERSION = 1;
const KEY_ID_BYTES = 8;
const ORIGIN_BYTES = 16;
/** version | key id | origin instance | nonce — authenticated (AAD, with the channel), not secret. */
const HEADER_BYTES = 1 + KEY_ID_BYTES + ORIGIN_BYTES + NONCE_BYTES;

/** Pub/sub key of one master key: HKDF-SHA256(master, salt = "", info = "sotalk-pubsub-v1"). */
export function derivePubSubKey(masterKey: KeyObject | Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), PUBSUB_INFO, 32));
}

export type OpenedPubSub = { kind: 'own' } | { kind: 'invalid' } | { kind: 'ok'; plaintext: Buffer };

/**
 * Seals pub/sub payloads: AES-256-GCM under a key derived from the active master key, bound to
 * the channel and the origin instance. Every master key held can open (a rolling master-key
 * deploy has instances on either side). The origin travels in clear so an instance skips its
 * own publications without decrypting them.
 */
export class PubSubSealer {
  readonly #sealKey: KeyObject;
  readonly #sealKeyId: Buffer;
  readonly #openKeys = new Map<string, KeyObject>();
  readonly #origin: Buffer;
  readonly #nonces = new NonceSource(1024);

  /** `origin`: 16 bytes naming this instance. */
  constructor(keyring: MasterKeyring, origin: Buffer) {
    if (origin.length !== ORIGIN_BYTES) throw new Error('pub/sub origin must be 16 bytes');
    this.#origin = origin;
    for (const fingerprint of keyring.fingerprints()) {
      const raw = derivePubSubKey(keyring.get(fingerprint)!);
      this.#openKeys.set(fingerprint, createSecretKey(raw));
      raw.fill(0);
    }
    this.#sealKeyId = Buffer.from(keyring.active.fingerprint, 'hex');
    this.#sealKey = this.#openKeys.get(keyring.active.fingerprint)!;
  }

  seal(channel: string, plaintext: Buffer): Buffer {
    const out = Buffer.allocUnsafe(HEADER_BYTES + plaintext.length + TAG_BYTES);
    out[0] = VERSION;
    this.#sealKeyId.copy(out, 1);
    this.#origin.copy(out, 1 + KEY_ID_BYTES);
    const nonce = this.#nonces.next();
    nonce.copy(out, 1 + KEY_ID_BYTES + ORIGIN_BYTES);
    const header = out.subarray(0, HEADER_BYTES);
    const { ciphertext, tag } = seal(this.#sealKey, nonce, plaintext, aadOf(header, channel));
    ciphertext.copy(out, HEADER_BYTES);
    tag.copy(out, HEADER_BYTES + ciphertext.length);
    return out;
  }

  open(channel: string, message: Buffer): OpenedPubSub {
    if (message.length < HEADER_BYTES + TAG_BYTES || message[0] !== VERSION) return { kind: 'invalid' };
    if (this.#origin.equals(message.subarray(1 + KEY_ID_BYTES, HEADER_BYTES - NONCE_BYTES))) return { kind: 'own' };
    const key = this.#openKeys.get(message.subarray(1, 1 + KEY_ID_BYTES).toString('hex'));
    if (!key) return { kind: 'invalid' };
    const header = message.subarray(0, HEADER_BYTES);
    const nonce = message.subarray(HEADER_BYTES - NONCE_BYTES, HEADER_BYTES);
    const plaintext = open(key, nonce, message.subarray(HEADER_BYTES, message.length - TAG_BYTES), message.subarray(message.length - TAG_BYTES), aadOf(header, channel));
    return plaintext ? { kind: 'ok', plaintext } : { kind: 'invalid' };
  }
}

function aadOf(header: Buffer, channel: string): Buffer {
  return Buffer.concat([header, Buffer.from(channel, 'utf8')]);
}
