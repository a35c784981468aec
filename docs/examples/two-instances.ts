// Alice sends through instance A; Bob's socket on instance B receives it through Redis.
// Run: npx tsx docs/examples/two-instances.ts http://localhost:8081 http://localhost:8082
import { generateKeyPairSync, sign } from 'node:crypto';
import bs58 from 'bs58';
import WebSocket from 'ws';

const [a = 'http://localhost:8081', b = 'http://localhost:8082'] = process.argv.slice(2);

async function call(base: string, path: string, body?: unknown, token?: string) {
  const res = await fetch(`${base}/api/v1${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return res.json();
}

async function signIn(base: string) {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const wallet = bs58.encode(publicKey.export({ format: 'der', type: 'spki' }).subarray(-32));
  const { nonce, message } = await call(base, '/auth/challenge', { wallet });
  return call(base, '/auth/verify', { wallet, nonce, signature: bs58.encode(sign(null, Buffer.from(message), privateKey)) });
}

const alice = await signIn(a);
const bob = await signIn(b);
const socket = new WebSocket(`${b.replace(/^http/, 'ws')}/ws`, { headers: { authorization: `Bearer ${bob.token}` } });
const received = new Promise<string>((resolve) =>
  socket.on('message', (data) => {
    const frame = JSON.parse(String(data));
    if (frame.type === 'new_message') resolve(`Bob on ${b} received #${frame.message.seq}: ${frame.message.content}`);
  }),
);
await new Promise((resolve) => socket.once('open', resolve));
await call(a, '/messages', { recipient_id: bob.user.id, content: 'hello across instances' }, alice.token);
console.log(await received);
socket.close();
