// What both examples share: JSON calls with a timeout, wallet sign-in, one-line failures.
import { generateKeyPairSync, sign } from 'node:crypto';
import bs58 from 'bs58';

/** How long any step may take (ms); EXAMPLE_TIMEOUT_MS overrides. */
export const TIMEOUT_MS = Number(process.env.EXAMPLE_TIMEOUT_MS) || 10_000;

/** Prints one line on stderr and exits 1. */
export function fail(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

export async function call(base: string, path: string, body?: unknown, token?: string) {
  let res: Response;
  try {
    res = await fetch(`${base}/api/v1${path}`, {
      method: body === undefined ? 'GET' : 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch (err) {
    const timedOut = (err as Error).name === 'TimeoutError';
    fail(timedOut ? `${base}: no answer to ${path} within ${TIMEOUT_MS} ms` : `cannot reach ${base} (${path}): is the server running there?`);
  }
  const text = await res.text();
  if (!res.ok) fail(`${base}${path}: ${res.status} ${text}`);
  return JSON.parse(text);
}

/** A fresh ed25519 wallet, signed in through challenge and verify. */
export async function signIn(base: string) {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const wallet = bs58.encode(publicKey.export({ format: 'der', type: 'spki' }).subarray(-32));
  const { nonce, message } = await call(base, '/auth/challenge', { wallet });
  return call(base, '/auth/verify', { wallet, nonce, signature: bs58.encode(sign(null, Buffer.from(message), privateKey)) });
}
