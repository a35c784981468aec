// Alice sends through instance A; Bob's socket on instance B receives it through Redis.
// Run: npx tsx docs/examples/two-instances.ts http://localhost:8081 http://localhost:8082
import WebSocket from 'ws';
import { call, fail, signIn, TIMEOUT_MS } from './lib.js';

const [a = 'http://localhost:8081', b = 'http://localhost:8082'] = process.argv.slice(2);

const alice = await signIn(a);
const bob = await signIn(b);
const socket = new WebSocket(`${b.replace(/^http/, 'ws')}/ws`, { headers: { authorization: `Bearer ${bob.token}` } });
socket.on('error', (err) => fail(`${b}/ws: ${err.message}`));
const received = new Promise<string>((resolve) =>
  socket.on('message', (data) => {
    const frame = JSON.parse(String(data));
    if (frame.type === 'new_message') resolve(`Bob on ${b} received #${frame.message.seq}: ${frame.message.content}`);
  }),
);
// `hello` comes once the socket is subscribed to Bob's conversations
await new Promise((resolve) => socket.on('message', (data) => JSON.parse(String(data)).type === 'hello' && resolve(undefined)));
await call(a, '/messages', { recipient_id: bob.user.id, content: 'hello across instances' }, alice.token);
const timeout = setTimeout(
  () => fail(`Bob's socket on ${b} got no new_message within ${TIMEOUT_MS} ms: do both instances use the same DATABASE_URL and REDIS_URL?`),
  TIMEOUT_MS,
);
console.log(await received);
clearTimeout(timeout);
socket.close();
