// Integration test: the frames a running server really sends match docs/asyncapi.yaml. Every kind
// of server frame is provoked (on JSON and msgpack sockets), captured, and validated against the
// JSON schema the AsyncAPI parser gives for its message; every documented server frame must turn up.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { frameProblems, loadAsyncApi, type LoadedAsyncApi } from '../helpers/asyncapi.js';
import { signIn, startTestServer, type TestServer } from '../helpers/server.js';
import { openSocket, type TestSocket } from '../helpers/socket.js';

let srv: TestServer;
let api: LoadedAsyncApi;
const sockets: TestSocket[] = [];

beforeAll(async () => {
  [srv, api] = await Promise.all([startTestServer(), loadAsyncApi()]);
});

afterAll(async () => {
  await Promise.all(sockets.map((s) => s.close().catch(() => {})));
  await srv?.close();
});

async function connect(token: string, msgpack: boolean): Promise<TestSocket> {
  const s = await openSocket(srv.baseUrl, token, { msgpack });
  sockets.push(s);
  return s;
}

describe('frames from a running server match docs/asyncapi.yaml', () => {
  it('every server frame, JSON and msgpack, validates; every documented server frame is sent', async () => {
    const [alice, bob, carol] = await Promise.all([signIn(srv.baseUrl), signIn(srv.baseUrl), signIn(srv.baseUrl)]);
    const [aliceJson, aliceMsgpack, bobJson, bobMsgpack] = await Promise.all([
      connect(alice.token, false),
      connect(alice.token, true),
      connect(bob.token, false),
      connect(bob.token, true),
    ]);
    const bobs = [bobJson, bobMsgpack];
    const both = [aliceJson, aliceMsgpack, ...bobs];

    const created = await alice.api.post('/api/v1/conversations', { type: 'group', title: 'frames', member_ids: [bob.user.id] });
    expect(created.status).toBe(201);
    const conv: string = created.body.conversation.id;
    await Promise.all(both.map((s) => s.next((f) => f.type === 'member_added' && f.conversation_id === conv && f.user_id === bob.user.id)));

    // requests and their answers, on each encoding
    for (const [i, s] of [aliceJson, aliceMsgpack].entries()) {
      s.send({ type: 'send', request_id: `send-${i}`, conversation_id: conv, content: `hello ${i}`, client_message_id: `cm-${i}` });
      const ack = await s.next((f) => f.type === 'ack' && f.request_id === `send-${i}`);
      await Promise.all(both.map((o) => o.next((f) => f.type === 'new_message' && f.message.id === ack.message.id)));
      s.send({ type: 'ping', request_id: i });
      await s.next((f) => f.type === 'pong' && f.request_id === i);
      s.send({ type: 'ping' });
      await s.next((f) => f.type === 'pong' && f.request_id === undefined);
      s.send({ type: 'send', request_id: `bad-${i}`, conversation_id: conv, content: '' });
      await s.next((f) => f.type === 'error' && f.request_id === `bad-${i}`);
      s.send({ type: 'shout' });
      await s.next((f) => f.type === 'error' && f.request_id === null);
    }
    // an idempotent replay answers the stored message
    aliceJson.send({ type: 'send', request_id: 'replay', conversation_id: conv, content: 'again', client_message_id: 'cm-0' });
    const replay = await aliceJson.next((f) => f.type === 'ack' && f.request_id === 'replay');
    expect(replay.message.content).toBe('hello 0');

    // events provoked by the other party and over HTTP
    bobJson.send({ type: 'typing', conversation_id: conv });
    await Promise.all([aliceJson, aliceMsgpack].map((s) => s.next((f) => f.type === 'typing' && f.user_id === bob.user.id)));
    bobMsgpack.send({ type: 'read', conversation_id: conv, seq: 1 });
    await Promise.all(both.map((s) => s.next((f) => f.type === 'receipt' && f.user_id === bob.user.id && f.read_seq === 1)));
    bobJson.send({ type: 'received', conversation_id: conv, seq: 2 });
    await Promise.all(both.map((s) => s.next((f) => f.type === 'receipt' && f.user_id === bob.user.id && f.delivered_seq === 2)));

    const first = aliceJson.frames.find((f) => f.type === 'ack')!.message;
    expect((await alice.api.patch(`/api/v1/messages/${first.id}`, { content: 'edited' })).status).toBe(200);
    await Promise.all(both.map((s) => s.next((f) => f.type === 'message_updated' && f.message.id === first.id)));
    expect((await alice.api.delete(`/api/v1/messages/${first.id}`)).status).toBe(200);
    await Promise.all(both.map((s) => s.next((f) => f.type === 'message_deleted' && f.id === first.id)));
    expect((await bob.api.post(`/api/v1/conversations/${conv}/rotate-key`, {})).status).toBe(200);
    await Promise.all(both.map((s) => s.next((f) => f.type === 'key_rotated' && f.conversation_id === conv)));
    expect((await alice.api.post(`/api/v1/conversations/${conv}/members`, { user_id: carol.user.id })).status).toBe(200);
    await Promise.all(both.map((s) => s.next((f) => f.type === 'member_added' && f.user_id === carol.user.id)));
    expect((await alice.api.delete(`/api/v1/conversations/${conv}/members/${carol.user.id}`)).status).toBe(204);
    await Promise.all(both.map((s) => s.next((f) => f.type === 'member_removed' && f.user_id === carol.user.id)));

    // every frame every socket received is a documented server frame, and valid
    const problems: string[] = [];
    const seen = new Set<string>();
    for (const s of both) {
      for (const frame of s.frames) {
        seen.add(frame.type);
        const problem = frameProblems(api.validators.serverFrames, frame);
        if (problem) problems.push(`${JSON.stringify(frame)}: ${problem}`);
      }
    }
    expect(problems).toEqual([]);
    expect([...seen].sort()).toEqual([...api.validators.serverFrames.keys()].sort());
    // the msgpack sockets received every kind too (the same objects, in the other encoding)
    const msgpackSeen = new Set([...aliceMsgpack.frames, ...bobMsgpack.frames].map((f) => f.type));
    expect([...msgpackSeen].sort()).toEqual([...seen].sort());
  });

  it('the client frames the document gives as examples are accepted by the server', async () => {
    const [alice, bob] = await Promise.all([signIn(srv.baseUrl), signIn(srv.baseUrl)]);
    const created = await alice.api.post('/api/v1/conversations', { type: 'direct', member_ids: [bob.user.id] });
    const conv: string = created.body.conversation.id;
    const s = await connect(alice.token, false);
    // the documented examples, with the ids of this run (and receipts within its one message)…
    const ours: Record<string, unknown> = { conversation_id: conv, recipient_id: bob.user.id, seq: 1 };
    const examples = api.messages
      .filter((m) => m.direction === 'client')
      .flatMap((m) => m.message.examples().all().map((e) => e.payload() as Record<string, unknown>))
      .map((frame) => Object.fromEntries(Object.entries(frame).map(([k, v]) => [k, k in ours ? ours[k] : v])));
    expect(examples.map((f) => f.type).sort()).toEqual(['ping', 'read', 'received', 'send', 'send', 'typing']);
    for (const frame of examples) expect(frameProblems(api.validators.clientFrames, frame), JSON.stringify(frame)).toBe('');
    // …are done as documented: sends acknowledged, ping answered, the others draw no error
    const sends = examples.filter((f) => f.type === 'send');
    for (const frame of sends) {
      s.send(frame);
      await s.next((f) => f.type === 'ack' && f.request_id === frame.request_id);
    }
    for (const frame of examples.filter((f) => f.type !== 'send')) s.send(frame);
    await s.next((f) => f.type === 'pong' && f.request_id === 7);
    s.send({ type: 'ping', request_id: 'last' });
    await s.next((f) => f.type === 'pong' && f.request_id === 'last');
    expect(s.frames.filter((f) => f.type === 'error')).toEqual([]);
  });
});
