import { createCipheriv, createDecipheriv, type KeyObject } from 'node:crypto';

export const ALGORITHM = 'AES-256-GCM';
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;

export interface Sealed {
  ciphertext: Buffer;
  tag: Buffer;
}

/** Additional authenticated data binding a ciphertext to its message (docs/design.md, Crypto). */
export function messageAad(conversationId: string, messageId: string, senderId: string): Buffer {
  return Buffer.from(`${conversationId}:${messageId}:${senderId}`, 'utf8');
}

export function seal(key: Buffer | KeyObject, nonce: Buffer, plaintext: Buffer, aad: Buffer): Sealed {
  const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  const first = cipher.update(plaintext);
  const last = cipher.final();
  return { ciphertext: last.length === 0 ? first : Buffer.concat([first, last]), tag: cipher.getAuthTag() };
}

/** Returns the plaintext, or null when the tag does not verify (wrong key, nonce, AAD or bytes). */
export function open(key: Buffer | KeyObject, nonce: Buffer, ciphertext: Buffer, tag: Buffer, aad: Buffer): Buffer | null {
  if (nonce.length !== NONCE_BYTES || tag.length !== TAG_BYTES) return null;
  const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  const first = decipher.update(ciphertext);
  try {
    const last = decipher.final();
    return last.length === 0 ? first : Buffer.concat([first, last]);
  } catch {
    first.fill(0);
    return null;
  }
}
