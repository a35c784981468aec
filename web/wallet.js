// An ed25519 wallet made and used with WebCrypto. A wallet record is plain JSON
// ({address, jwk, created_at}) so it can live in localStorage and be exported.

import { base58Decode, base58Encode } from './base58.js';

const ED25519 = { name: 'Ed25519' };
// PKCS#8 header of an ed25519 private key; the 32-byte seed follows it.
const PKCS8_PREFIX = new Uint8Array([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]);

export function b64urlEncode(bytes) {
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

export function b64urlDecode(text) {
  const bin = atob(text.replace(/-/g, '+').replace(/_/g, '/'));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** Whether this browser's WebCrypto can make ed25519 keys. */
export async function ed25519Supported() {
  try {
    await crypto.subtle.generateKey(ED25519, false, ['sign', 'verify']);
    return true;
  } catch {
    return false;
  }
}

async function recordFromPrivateKey(privateKey) {
  const jwk = await crypto.subtle.exportKey('jwk', privateKey);
  return {
    address: base58Encode(b64urlDecode(jwk.x)),
    jwk: { kty: 'OKP', crv: 'Ed25519', x: jwk.x, d: jwk.d },
    created_at: new Date().toISOString(),
  };
}

/** A new random wallet. */
export async function generateWallet() {
  const pair = await crypto.subtle.generateKey(ED25519, true, ['sign', 'verify']);
  return recordFromPrivateKey(pair.privateKey);
}

const signingKeys = new WeakMap();

/** Signs UTF-8 text; returns the base58 of the 64-byte signature (what /auth/verify expects). */
export async function signText(record, text) {
  let key = signingKeys.get(record);
  if (!key) {
    key = await crypto.subtle.importKey('jwk', record.jwk, ED25519, false, ['sign']);
    signingKeys.set(record, key);
  }
  const signature = await crypto.subtle.sign(ED25519, key, new TextEncoder().encode(text));
  return base58Encode(new Uint8Array(signature));
}

/** The 64-byte secret key (seed then public key) in base58, as Solana wallets export it. */
export function exportSecretBase58(record) {
  const seed = b64urlDecode(record.jwk.d);
  const pub = b64urlDecode(record.jwk.x);
  const out = new Uint8Array(64);
  out.set(seed, 0);
  out.set(pub, 32);
  return base58Encode(out);
}

/** The private key as a JWK (JSON text). */
export function exportJwk(record) {
  return JSON.stringify({ ...record.jwk, key_ops: ['sign'], ext: true }, null, 2);
}

/**
 * A wallet from text a user pasted: a JWK (JSON object with `d`), a Solana keypair file (a JSON
 * array of 64 numbers), or base58 of the 64-byte secret key or of the 32-byte seed. The public key
 * is recomputed from the seed and must match the one given, if any.
 */
export async function importWallet(text) {
  const input = text.trim();
  if (input === '') throw new Error('Paste a secret key first.');
  let seed;
  let givenPublic;
  if (input.startsWith('{')) {
    let jwk;
    try {
      jwk = JSON.parse(input);
    } catch {
      throw new Error('That looks like JSON but does not parse.');
    }
    if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.d !== 'string') {
      throw new Error('The JWK must be an Ed25519 private key (kty "OKP", crv "Ed25519", with "d").');
    }
    seed = b64urlDecode(jwk.d);
    if (typeof jwk.x === 'string') givenPublic = b64urlDecode(jwk.x);
  } else {
    let bytes;
    if (input.startsWith('[')) {
      let numbers;
      try {
        numbers = JSON.parse(input);
      } catch {
        throw new Error('That looks like a JSON array but does not parse.');
      }
      if (!Array.isArray(numbers) || numbers.some((n) => !Number.isInteger(n) || n < 0 || n > 255)) {
        throw new Error('A keypair array must hold numbers from 0 to 255.');
      }
      bytes = Uint8Array.from(numbers);
    } else {
      try {
        bytes = base58Decode(input);
      } catch (err) {
        throw new Error(`Not a base58 secret key: ${err.message}.`, { cause: err });
      }
    }
    if (bytes.length !== 64 && bytes.length !== 32) {
      throw new Error(`A secret key is 64 bytes (or a 32-byte seed); this is ${bytes.length} bytes.`);
    }
    seed = bytes.slice(0, 32);
    if (bytes.length === 64) givenPublic = bytes.slice(32);
  }
  if (seed.length !== 32) throw new Error('The private part of the key must be 32 bytes.');
  const pkcs8 = new Uint8Array(PKCS8_PREFIX.length + 32);
  pkcs8.set(PKCS8_PREFIX);
  pkcs8.set(seed, PKCS8_PREFIX.length);
  const privateKey = await crypto.subtle.importKey('pkcs8', pkcs8, ED25519, true, ['sign']);
  const record = await recordFromPrivateKey(privateKey);
  if (givenPublic && b64urlEncode(givenPublic) !== record.jwk.x) {
    throw new Error('The public half of this key does not belong to its secret half.');
  }
  return record;
}
