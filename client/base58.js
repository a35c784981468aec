// Base58 (Bitcoin / Solana alphabet): wallet addresses and signatures travel in it.

const ALPHABET = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
const INDEX = new Map([...ALPHABET].map((c, i) => [c, i]));

/** @param {Uint8Array} bytes */
export function base58Encode(bytes) {
  let zeros = 0;
  while (zeros < bytes.length && bytes[zeros] === 0) zeros++;
  /** @type {number[]} */
  const digits = []; // base-58 digits, least significant first
  for (let i = zeros; i < bytes.length; i++) {
    let carry = /** @type {number} */ (bytes[i]);
    for (let j = 0; j < digits.length; j++) {
      carry += /** @type {number} */ (digits[j]) * 256;
      digits[j] = carry % 58;
      carry = Math.floor(carry / 58);
    }
    while (carry > 0) {
      digits.push(carry % 58);
      carry = Math.floor(carry / 58);
    }
  }
  let out = '1'.repeat(zeros);
  for (let i = digits.length - 1; i >= 0; i--) out += ALPHABET[/** @type {number} */ (digits[i])];
  return out;
}

/** @param {string} text @returns {Uint8Array} throws on a character outside the alphabet */
export function base58Decode(text) {
  let zeros = 0;
  while (zeros < text.length && text[zeros] === '1') zeros++;
  /** @type {number[]} */
  const bytes = []; // least significant first
  for (let i = zeros; i < text.length; i++) {
    const value = INDEX.get(/** @type {string} */ (text[i]));
    if (value === undefined) throw new Error(`"${text[i]}" is not a base58 character`);
    let carry = value;
    for (let j = 0; j < bytes.length; j++) {
      carry += /** @type {number} */ (bytes[j]) * 58;
      bytes[j] = carry & 0xff;
      carry >>= 8;
    }
    while (carry > 0) {
      bytes.push(carry & 0xff);
      carry >>= 8;
    }
  }
  const out = new Uint8Array(zeros + bytes.length);
  for (let i = 0; i < bytes.length; i++) out[out.length - 1 - i] = /** @type {number} */ (bytes[i]);
  return out;
}

/** True for the base58 form of exactly 32 bytes (an ed25519 public key, i.e. a wallet address). */
/** @param {string} text */
export function isWalletAddress(text) {
  try {
    return text.length >= 32 && text.length <= 44 && base58Decode(text).length === 32;
  } catch {
    return false;
  }
}
