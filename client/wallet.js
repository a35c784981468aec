// An ed25519 wallet through WebCrypto (browsers and Node 20 alike): an address and a signer.

import { base58Encode } from './base58.js';

const ED25519 = { name: 'Ed25519' };
// PKCS#8 header of an ed25519 private key; the 32-byte seed follows it.
const PKCS8_PREFIX = new Uint8Array([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]);

/** @param {CryptoKey} privateKey @param {CryptoKey} publicKey @returns {Promise<import('./types.js').Wallet>} */
async function walletOf(privateKey, publicKey) {
  const address = base58Encode(new Uint8Array(await crypto.subtle.exportKey('raw', publicKey)));
  return {
    address,
    async sign(text) {
      return base58Encode(new Uint8Array(await crypto.subtle.sign(ED25519, privateKey, new TextEncoder().encode(text))));
    },
  };
}

/** A new random wallet; its private key cannot be exported. */
export async function generateWallet() {
  const pair = /** @type {CryptoKeyPair} */ (await crypto.subtle.generateKey(ED25519, false, ['sign', 'verify']));
  return walletOf(pair.privateKey, pair.publicKey);
}

/**
 * The wallet of a 32-byte ed25519 seed (the first half of a Solana 64-byte secret key).
 * @param {Uint8Array} seed
 */
export async function walletFromSeed(seed) {
  if (seed.length !== 32) throw new RangeError(`an ed25519 seed is 32 bytes, not ${seed.length}`);
  const pkcs8 = new Uint8Array(PKCS8_PREFIX.length + 32);
  pkcs8.set(PKCS8_PREFIX);
  pkcs8.set(seed, PKCS8_PREFIX.length);
  const privateKey = await crypto.subtle.importKey('pkcs8', pkcs8, ED25519, true, ['sign']);
  const jwk = await crypto.subtle.exportKey('jwk', privateKey);
  const publicKey = await crypto.subtle.importKey('jwk', { kty: 'OKP', crv: 'Ed25519', x: jwk.x }, ED25519, true, ['verify']);
  return walletOf(privateKey, publicKey);
}
