// The web client's pure modules (web/*.js) run in Node too: base58, the WebCrypto wallet, error text.

import { createPublicKey, randomBytes, verify } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import bs58 from 'bs58';
import { beforeAll, describe, expect, it } from 'vitest';

const WEB = join(fileURLToPath(import.meta.url), '..', '..', '..', 'web');
// web/ is plain JavaScript without declarations: import by URL and type what the tests use.
const load = (file: string) => import(pathToFileURL(join(WEB, file)).href);

interface WalletRecord {
  address: string;
  jwk: { kty: string; crv: string; x: string; d: string };
}

let base58: {
  base58Encode(bytes: Uint8Array): string;
  base58Decode(text: string): Uint8Array;
  isWalletAddress(text: string): boolean;
};
let wallet: {
  generateWallet(): Promise<WalletRecord>;
  signText(record: WalletRecord, text: string): Promise<string>;
  exportSecretBase58(record: WalletRecord): string;
  exportJwk(record: WalletRecord): string;
  importWallet(text: string): Promise<WalletRecord>;
};
let api: {
  SoTalkError: new (code: string, message: string, details?: { status?: number; field?: string; retryAfterS?: number }) => Error;
  describeError(action: string, err: unknown): string;
};

beforeAll(async () => {
  [base58, wallet, api] = await Promise.all([load('base58.js'), load('wallet.js'), load('api.js')]);
});

describe('web/base58.js', () => {
  it('agrees with bs58 both ways, leading zero bytes included', () => {
    const samples = [new Uint8Array(0), new Uint8Array([0]), new Uint8Array([0, 0, 1]), new Uint8Array(32), new Uint8Array(32).fill(255)];
    for (let i = 0; i < 200; i++) {
      const bytes = randomBytes(i % 70);
      if (i % 5 === 0 && bytes.length > 2) bytes[0] = bytes[1] = 0;
      samples.push(new Uint8Array(bytes));
    }
    for (const bytes of samples) {
      const text = bs58.encode(bytes);
      expect(base58.base58Encode(bytes)).toBe(text);
      expect([...base58.base58Decode(text)]).toEqual([...bytes]);
    }
  });

  it('rejects characters outside the alphabet and tells wallet addresses apart', () => {
    expect(() => base58.base58Decode('abc0')).toThrow(/"0" is not a base58 character/);
    expect(base58.isWalletAddress(bs58.encode(randomBytes(32)))).toBe(true);
    expect(base58.isWalletAddress(bs58.encode(randomBytes(31)))).toBe(false);
    expect(base58.isWalletAddress('not a wallet')).toBe(false);
  });
});

describe('web/wallet.js', () => {
  it('makes ed25519 wallets whose signatures the server side verifies', async () => {
    const record = await wallet.generateWallet();
    const raw = bs58.decode(record.address);
    expect(raw).toHaveLength(32);
    const publicKey = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(raw).toString('base64url') }, format: 'jwk' });
    const message = 'Sign in to SoTalk\n\nWallet: x\nNonce: ñ ✓';
    const signature = bs58.decode(await wallet.signText(record, message));
    expect(signature).toHaveLength(64);
    expect(verify(null, Buffer.from(message, 'utf8'), publicKey, signature)).toBe(true);
  });

  it('exports and imports the same key as base58, JWK and a Solana keypair array', async () => {
    const record = await wallet.generateWallet();
    const secret = wallet.exportSecretBase58(record);
    expect(bs58.decode(secret)).toHaveLength(64);
    const bytes = [...bs58.decode(secret)];
    for (const text of [secret, wallet.exportJwk(record), JSON.stringify(bytes), bs58.encode(Uint8Array.from(bytes.slice(0, 32)))]) {
      const imported = await wallet.importWallet(text);
      expect(imported.address).toBe(record.address);
      expect(imported.jwk).toEqual(record.jwk);
    }
  });

  it('refuses keys that are malformed or whose halves do not match', async () => {
    const a = await wallet.generateWallet();
    const b = await wallet.generateWallet();
    const mixed = Uint8Array.from([...bs58.decode(wallet.exportSecretBase58(a)).subarray(0, 32), ...bs58.decode(b.address)]);
    await expect(wallet.importWallet(bs58.encode(mixed))).rejects.toThrow(/public half/);
    await expect(wallet.importWallet('')).rejects.toThrow(/Paste a secret key/);
    await expect(wallet.importWallet('0OIl')).rejects.toThrow(/Not a base58 secret key/);
    await expect(wallet.importWallet(bs58.encode(randomBytes(40)))).rejects.toThrow(/this is 40 bytes/);
    await expect(wallet.importWallet('{"kty":"RSA"}')).rejects.toThrow(/Ed25519 private key/);
    await expect(wallet.importWallet('[1,2,300]')).rejects.toThrow(/0 to 255/);
  });
});

describe('web/api.js describeError', () => {
  it("puts the server's own words in front of the user", () => {
    const { SoTalkError, describeError } = api;
    expect(describeError('Could not save your name', new SoTalkError('invalid_request', 'display_name: must be 1 to 64 characters', { status: 400, field: 'display_name' })))
      .toBe('Could not save your name: display_name: must be 1 to 64 characters.');
    expect(describeError('Could not start the chat', new SoTalkError('not_found', 'user not found', { status: 404, field: 'member_ids' })))
      .toBe('Could not start the chat: user not found (field "member_ids").');
    expect(describeError('Message not sent', new SoTalkError('rate_limited', 'too many messages', { status: 429, retryAfterS: 3 })))
      .toBe('Message not sent: too many messages. Try again in 3 s.');
    expect(describeError('Could not load', new SoTalkError('network', 'cannot reach http://localhost:8080'))).toBe('Could not load: Cannot reach the SoTalk server. Is it still running?');
    expect(describeError('Sign-in failed', new Error('boom!'))).toBe('Sign-in failed: boom!');
  });
});
