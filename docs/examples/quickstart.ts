// Sign in two wallets, open a direct conversation, send a message, read it back.
// Run against a server: npx tsx docs/examples/quickstart.ts [http://localhost:8080]
import { signIn } from './lib.js';

const base = process.argv[2] ?? 'http://localhost:8080';

const alice = await signIn(base);
const bob = await signIn(base);
const conversation = await alice.directConversation(bob.user!.id);
await alice.sendMessage({ conversation_id: conversation.id, content: 'gm, Bob' });
const { messages } = await bob.messages(conversation.id);
console.log(messages.map((m) => `#${m.seq}: ${m.content}`).join('\n'));
alice.close();
bob.close();
