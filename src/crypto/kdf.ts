import { createHmac, hkdfSync, type KeyObject } from 'node:crypto';

/** Key material accepted by the derivation functions: raw bytes or a secret KeyObject (faster in hkdfSync). */
export type KeyInput = Buffer | KeyObject;

const CONVERSATION_INFO = 'sotalk-conversation-encryption-v1';
const AUTH_TOKEN_INFO = 'sotalk-auth-token-v1';
const FINGERPRINT_LABEL = 'sotalk-key-fingerprint';

/** Identifies a master key without revealing it: hex(HMAC-SHA256(key, label))[0:16]. */
export function keyFingerprint(masterKey: KeyInput): string {
  return createHmac('sha256', masterKey).update(FINGERPRINT_LABEL).digest('hex').slice(0, 16);
}

/** The salt of a conversation key version (docs/design.md, Crypto); the timestamp comes from storage. */
export function conversationKeySalt(conversationId: string, createdUnixSeconds: number, version: number): string {
  return `${conversationId.toLowerCase()}:${createdUnixSeconds}:${version}`;
}

/** HKDF-SHA256 conversation key, version `version` of `conversationId` (docs/design.md, Crypto). */
export function deriveConversationKey(
  masterKey: KeyInput,
  conversationId: string,
  createdUnixSeconds: number,
  version: number,
): Buffer {
  const salt = conversationKeySalt(conversationId, createdUnixSeconds, version);
  return Buffer.from(hkdfSync('sha256', masterKey, salt, CONVERSATION_INFO, 32));
}

/** Default HMAC secret for access tokens when AUTH_TOKEN_SECRET is unset. */
export function deriveAuthTokenSecret(masterKey: KeyInput): Buffer {
  return Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), AUTH_TOKEN_INFO, 32));
}
