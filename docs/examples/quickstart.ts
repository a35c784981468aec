// Sign in two wallets, open a direct conversation, send a message, read it back.
// Run against a server: npx tsx docs/examples/quickstart.ts [http://localhost:8080]
import { generateKeyPairSync, sign } from 'node:crypto';
import bs58 from 'bs58';

const base = (process.argv[2] ?? 'http://localhost:8080') + '/api/v1';

async function call(path: string, body?: unknown, token?: string) {
  const res = await fetch(base + path, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

async function signIn() {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const wallet = bs58.encode(publicKey.export({ format: 'der', type: 'spki' }).subarray(-32));
  const { nonce, message } = await call('/auth/challenge', { wallet });
  const signature = bs58.encode(sign(null, Buffer.from(message), privateKey));
  return call('/auth/verify', { wallet, nonce, signature });
}

const alice = await signIn();
const bob = await signIn();
const { conversation } = await call('/conversations', { type: 'direct', member_ids: [bob.user.id] }, alice.token);
await call('/messages', { conversation_id: conversation.id, content: 'gm, Bob' }, alice.token);
const { messages } = await call(`/conversations/${conversation.id}/messages`, undefined, bob.token);
console.log(messages.map((m: { seq: number; content: string }) => `#${m.seq}: ${m.content}`).join('\n'));
