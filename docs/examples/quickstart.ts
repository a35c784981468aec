// Sign in two wallets, open a direct conversation, send a message, read it back.
// Run against a server: npx tsx docs/examples/quickstart.ts [http://localhost:8080]
import { call, signIn } from './lib.js';

const base = process.argv[2] ?? 'http://localhost:8080';

const alice = await signIn(base);
const bob = await signIn(base);
const { conversation } = await call(base, '/conversations', { type: 'direct', member_ids: [bob.user.id] }, alice.token);
await call(base, '/messages', { conversation_id: conversation.id, content: 'gm, Bob' }, alice.token);
const { messages } = await call(base, `/conversations/${conversation.id}/messages`, undefined, bob.token);
console.log(messages.map((m: { seq: number; content: string }) => `#${m.seq}: ${m.content}`).join('\n'));
