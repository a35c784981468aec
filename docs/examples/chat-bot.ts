// A chat bot on the client library: it answers every message sent to it, in order, once, even
// across reconnects and server restarts (the live connection catches up from history).
// Run: npx tsx docs/examples/chat-bot.ts [http://localhost:8080]   (stop it with Ctrl-C)
import { signIn } from './lib.js';

const bot = await signIn(process.argv[2] ?? 'http://localhost:8080');
const live = bot.live();
await live.start();
console.log(`chat-bot ready: send a message to ${bot.user!.wallet} (user ${bot.user!.id})`);
process.once('SIGINT', () => live.close());
process.once('SIGTERM', () => live.close());

const counts = new Map<string, number>(); // messages seen per conversation
for await (const message of live) {
  if (message.sender_id === bot.user!.id || message.content === null) continue;
  const n = (counts.get(message.conversation_id) ?? 0) + 1;
  counts.set(message.conversation_id, n);
  const words = message.content.split(/\s+/).filter(Boolean).length;
  await live.send({ conversation_id: message.conversation_id, content: `#${n}: "${message.content}" has ${words} word${words === 1 ? '' : 's'}`, reply_to_id: message.id });
  live.receipt('read', message.conversation_id, message.seq);
}
bot.close();
