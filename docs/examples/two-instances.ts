// Alice sends through instance A; Bob's live connection on instance B receives it through Redis.
// Run: npx tsx docs/examples/two-instances.ts http://localhost:8081 http://localhost:8082
import { fail, signIn, TIMEOUT_MS } from './lib.js';

const [a = 'http://localhost:8081', b = 'http://localhost:8082'] = process.argv.slice(2);

const alice = await signIn(a);
const bob = await signIn(b);
const live = bob.live();
await live.start(); // subscribed: every message from now on reaches it
// only an event counts here (the live connection would also find the message in history later)
const received = new Promise<string>((resolve) =>
  live.on('event', (event) => {
    const message = event.message as { seq: number; content: string } | undefined;
    if (event.type === 'new_message' && message) resolve(`Bob on ${b} received #${message.seq}: ${message.content}`);
  }),
);
await alice.sendMessage({ recipient_id: bob.user!.id, content: 'hello across instances' });
const timeout = setTimeout(
  () => fail(`Bob's socket on ${b} got no new_message within ${TIMEOUT_MS} ms: do both instances use the same DATABASE_URL and REDIS_URL?`),
  TIMEOUT_MS,
);
console.log(await received);
clearTimeout(timeout);
live.close();
alice.close();
bob.close();
