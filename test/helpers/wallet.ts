import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import bs58 from 'bs58';

export interface TestWallet {
  /** base58 of the raw 32-byte ed25519 public key, as a Solana wallet address. */
  address: string;
  privateKey: KeyObject;
  /** base58 of the 64-byte ed25519 signature of `message` (UTF-8). */
  sign(message: string): string;
}

export function newWallet(): TestWallet {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  return {
    address: bs58.encode(raw),
    privateKey,
    sign: (message) => bs58.encode(sign(null, Buffer.from(message, 'utf8'), privateKey)),
  };
}
