// Integration tests: socket sends and their errors, idempotency, ordering under concurrent senders,
// msgpack, malformed and oversized frames, slow consumers, catch-up after a disconnect (docs/protocol.md).
import { randomUUID } from 'node:crypto';
import { Packr } from 'msgpackr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { signIn, startTestServer, type SignedInUser, type TestServer } from '../helpers/server.js';
import { openSocket, type TestSocket } from '../helpers/socket.js';

// ---------------------------------------------------------------- local helpers

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;
const SMALL_LIMIT = 1024; // MAX_MESSAGE_BYTES of `small`, so its WS_MAX_FRAME_BYTES is 4096
const SMALL_FRAME_LIMIT = 4 * SMALL_LIMIT;
const SLOW_BUFFER = 65536; // WS_MAX_BUFFERED_BYTES of `slow`
const packr = new Packr({ useRecords: false });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let srv: TestServer;
let small: TestServer;
let slow: TestServer;
const sockets: TestSocket[] = [];

beforeAll(async () => {
  [srv, small, slow] = await Promise.all([
    startTestServer(),
    startTestServer({ env: { MAX_MESSAGE_BYTES: String(SMALL_LIMIT) } }),
    startTestServer({ env: { WS_MAX_BUFFERED_BYTES: String(SLOW_BUFFER) } }),
  ]);
});

afterAll(async () => {
  await Promise.all(sockets.map((s) => s.close().catch(() => {})));
  await Promise.all([srv?.close(), small?.close(), slow?.close()]);
});

const users = (n: number, s: TestServer = srv) => Promise.all(Array.from({ length: n }, () => signIn(s.baseUrl)));

async function connect(u: SignedInUser, options: Parameters<typeof openSocket>[2] = {}, s: TestServer = srv): Promise<TestSocket> {
  const sock = await openSocket(s.baseUrl, u.token, options);
  sockets.push(sock);
  return sock;
}

async function group(owner: SignedInUser, members: SignedInUser[]): Promise<string> {
  const res = await owner.api.post('/api/v1/conversations', { type: 'group', title: 'g', member_ids: members.map((m) => m.user.id) });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.conversation.id;
}

async function send(u: SignedInUser, conversationId: string, content: string, extra: Record<string, unknown> = {}): Promise<any> {
  const res = await u.api.post('/api/v1/messages', { conversation_id: conversationId, content, ...extra });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.message;
}

const newMessage = (id: string) => (f: any) => f.type === 'new_message' && f.message?.id === id;
const replyTo = (requestId: string) => (f: any) => (f.type === 'ack' || f.type === 'error') && f.request_id === requestId;

/** Sends a frame and waits for its ack or error (matched by request_id). */
async function request(sock: TestSocket, frame: Record<string, unknown>, timeoutMs = 5000): Promise<any> {
  const requestId = randomUUID();
  sock.send({ ...frame, request_id: requestId });
  return sock.next(replyTo(requestId), timeoutMs);
}

async function expectAlive(sock: TestSocket): Promise<void> {
  const requestId = randomUUID();
  sock.send({ type: 'ping', request_id: requestId });
  await sock.next((f) => f.type === 'pong' && f.request_id === requestId);
  expect(sock.ws.readyState).toBe(WebSocket.OPEN);
}

async function waitUntil(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

async function metric(s: TestServer, name: string): Promise<number | undefined> {
  const text = await (await fetch(`${s.baseUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(name + ' ') || l.startsWith(name + '{'));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

function expectSocketError(reply: any, code: string, field?: string | null): void {
  expect(reply.type, JSON.stringify(reply)).toBe('error');
  expect(reply.error?.code, JSON.stringify(reply)).toBe(code);
  expect(typeof reply.error.message).toBe('string');
  if (field === null) expect(reply.error.field).toBeUndefined();
  else if (field !== undefined) expect(reply.error.field, JSON.stringify(reply)).toBe(field);
}

// ---------------------------------------------------------------- socket sends

describe('socket send', () => {
  it('answers ack {request_id, message} with the plaintext echoed and status sent', async () => {
    const [a, b] = await users(2);
    const conv = await group(a!, [b!]);
    const sa = await connect(a!);
    sa.send({ type: 'send', request_id: 42, conversation_id: conv, content: 'numbered request', content_type: 'markdown' });
    const ack = await sa.next((f) => f.type === 'ack' && f.request_id === 42);
    expect(Object.keys(ack).sort()).toEqual(['message', 'request_id', 'type']);
    expect(ack.message).toMatchObject({ conversation_id: conv, sender_id: a!.user.id, seq: 1, content: 'numbered request', content_type: 'markdown', status: 'sent', deleted: false });
    expect(ack.message.created_at).toMatch(ISO_UTC);
    // the message is durable: the history has it
    const history = await b!.api.get(`/api/v1/conversations/${conv}/messages`);
    expect(history.body.messages.map((m: any) => m.id)).toEqual([ack.message.id]);
  });

  it('validation errors come back as error {request_id, error:{code, field}} and the socket stays open', async () => {
    const [a, b] = await users(2, small);
    const conv = await group(a!, [b!]);
    const sa = await connect(a!, {}, small);
    const cases: [Record<string, unknown>, string, string | undefined][] = [
      [{ type: 'send', conversation_id: conv }, 'invalid_request', 'content'],
      [{ type: 'send', conversation_id: conv, content: '' }, 'invalid_request', 'content'],
      [{ type: 'send', conversation_id: conv, content: 42 }, 'invalid_request', 'content'],
      [{ type: 'send', conversation_id: 'not-a-uuid', content: 'x' }, 'invalid_request', 'conversation_id'],
      [{ type: 'send', recipient_id: 'nope', content: 'x' }, 'invalid_request', 'recipient_id'],
      [{ type: 'send', content: 'x' }, 'invalid_request', undefined],
      [{ type: 'send', conversation_id: conv, recipient_id: b!.user.id, content: 'x' }, 'invalid_request', undefined],
      [{ type: 'send', conversation_id: conv, content: 'x', content_type: 'gif' }, 'invalid_request', 'content_type'],
      [{ type: 'send', conversation_id: conv, content: 'x', reply_to_id: 'zzz' }, 'invalid_request', 'reply_to_id'],
      [{ type: 'send', conversation_id: conv, content: 'x', signature: 's'.repeat(257) }, 'invalid_request', 'signature'],
      [{ type: 'send', conversation_id: conv, content: 'x', client_message_id: 'c'.repeat(129) }, 'invalid_request', 'client_message_id'],
      [{ type: 'send', conversation_id: conv, content: 'x', reply_to_id: randomUUID() }, 'invalid_request', 'reply_to_id'],
      [{ type: 'send', conversation_id: conv, content: 'é'.repeat(SMALL_LIMIT / 2 + 1) }, 'payload_too_large', 'content'],
      [{ type: 'read', conversation_id: conv }, 'invalid_request', 'seq'],
      [{ type: 'read', conversation_id: conv, seq: -1 }, 'invalid_request', 'seq'],
      [{ type: 'read', conversation_id: conv, seq: 1.5 }, 'invalid_request', 'seq'],
      [{ type: 'received', conversation_id: 'x', seq: 0 }, 'invalid_request', 'conversation_id'],
      [{ type: 'typing' }, 'invalid_request', 'conversation_id'],
      [{ type: 'shout', conversation_id: conv }, 'invalid_request', undefined],
    ];
    for (const [frame, code, field] of cases) {
      const reply = await request(sa, frame);
      expectSocketError(reply, code, field);
      expect(sa.ws.readyState, JSON.stringify(frame)).toBe(WebSocket.OPEN);
    }
    await expectAlive(sa);
    // nothing was stored, and a valid send still works
    const ok = await request(sa, { type: 'send', conversation_id: conv, content: 'finally' });
    expect(ok.type, JSON.stringify(ok)).toBe('ack');
    expect(ok.message.seq).toBe(1);
  });

  it('a content of exactly MAX_MESSAGE_BYTES is accepted over the socket', async () => {
    const [a, b] = await users(2, small);
    const conv = await group(a!, [b!]);
    const sa = await connect(a!, {}, small);
    const content = 'é'.repeat(SMALL_LIMIT / 2);
    const ack = await request(sa, { type: 'send', conversation_id: conv, content });
    expect(ack.type, JSON.stringify(ack).slice(0, 300)).toBe('ack');
    expect(ack.message.content).toBe(content);
  });

  it('is idempotent on client_message_id: one message, the same answer each time, one new_message event', async () => {
    const [a, b] = await users(2);
    const conv = await group(a!, [b!]);
    const [sa, sb] = await Promise.all([connect(a!), connect(b!)]);
    const cmid = `cm-${randomUUID()}`;
    const first = await request(sa, { type: 'send', conversation_id: conv, content: 'once', client_message_id: cmid });
    expect(first.type, JSON.stringify(first)).toBe('ack');
    const again = await request(sa, { type: 'send', conversation_id: conv, content: 'once', client_message_id: cmid });
    expect(again.type, JSON.stringify(again)).toBe('ack');
    expect(again.message).toMatchObject({ id: first.message.id, seq: first.message.seq, content: 'once', client_message_id: cmid });
    // the same id over HTTP replays too (200)
    const viaHttp = await a!.api.post('/api/v1/messages', { conversation_id: conv, content: 'once', client_message_id: cmid });
    expect(viaHttp.status, JSON.stringify(viaHttp.body)).toBe(200);
    expect(viaHttp.body.message.id).toBe(first.message.id);
    // two duplicates racing on the socket
    const cmid2 = `cm-${randomUUID()}`;
    const [r1, r2] = await Promise.all([
      request(sa, { type: 'send', conversation_id: conv, content: 'race', client_message_id: cmid2 }),
      request(sa, { type: 'send', conversation_id: conv, content: 'race', client_message_id: cmid2 }),
    ]);
    expect(r1.type, JSON.stringify(r1)).toBe('ack');
    expect(r2.type, JSON.stringify(r2)).toBe('ack');
    expect(r2.message.id).toBe(r1.message.id);
    // exactly two messages exist, and b saw exactly one event for each
    const marker = await send(a!, conv, 'marker');
    await sb.next(newMessage(marker.id));
    const events = sb.frames.filter((f) => f.type === 'new_message');
    expect(events.map((f) => f.message.id)).toEqual([first.message.id, r1.message.id, marker.id]);
    const history = await b!.api.get(`/api/v1/conversations/${conv}/messages`);
    expect(history.body.messages.map((m: any) => m.seq)).toEqual([1, 2, 3]);
  });

  it('a send to a conversation the user is not in is not_found (also an unknown recipient)', async () => {
    const [a, b, outsider] = await users(3);
    const conv = await group(a!, [b!]);
    const [so, sb] = await Promise.all([connect(outsider!), connect(b!)]);
    expectSocketError(await request(so, { type: 'send', conversation_id: conv, content: 'sneak' }), 'not_found');
    expectSocketError(await request(so, { type: 'send', conversation_id: randomUUID(), content: 'nowhere' }), 'not_found');
    expectSocketError(await request(so, { type: 'send', recipient_id: randomUUID(), content: 'nobody' }), 'not_found');
    expectSocketError(await request(so, { type: 'read', conversation_id: conv, seq: 0 }), 'not_found');
    expectSocketError(await request(so, { type: 'received', conversation_id: conv, seq: 0 }), 'not_found');
    await expectAlive(so);
    const marker = await send(a!, conv, 'marker');
    await sb.next(newMessage(marker.id));
    expect(sb.frames.filter((f) => f.type === 'new_message').map((f) => f.message.content)).toEqual(['marker']);
  });

  it('read / received above last_seq is invalid_request and moves nothing', async () => {
    const [a, b] = await users(2);
    const conv = await group(a!, [b!]);
    const sb = await connect(b!);
    await send(a!, conv, 'one');
    expectSocketError(await request(sb, { type: 'read', conversation_id: conv, seq: 2 }), 'invalid_request', 'seq');
    expectSocketError(await request(sb, { type: 'received', conversation_id: conv, seq: 5 }), 'invalid_request', 'seq');
    await expectAlive(sb);
    const conversation = await b!.api.get(`/api/v1/conversations/${conv}`);
    const member = conversation.body.conversation.members.find((m: any) => m.user_id === b!.user.id);
    expect(member).toMatchObject({ delivered_seq: 0, read_seq: 0 });
    expect(sb.frames.filter((f) => f.type === 'receipt')).toEqual([]);
    // at last_seq it is fine
    sb.send({ type: 'read', conversation_id: conv, seq: 1 });
    await sb.next((f) => f.type === 'receipt' && f.read_seq === 1 && f.delivered_seq === 1);
  });
});

// ---------------------------------------------------------------- ordering

describe('ordering under concurrent senders', () => {
  it('5 users × 20 concurrent sends (socket and HTTP): every member socket gets seq 1..100 in order, no gaps', async () => {
    const SENDERS = 5;
    const PER_SENDER = 20;
    const TOTAL = SENDERS * PER_SENDER;
    const members = await users(SENDERS);
    const [observer] = await users(1);
    const conv = await group(members[0]!, [...members.slice(1), observer!]);
    const socks = await Promise.all(members.map((m) => connect(m)));
    const observerSocks = await Promise.all([connect(observer!), connect(observer!, { msgpack: true })]);

    const sends = members.flatMap((m, i) =>
      Array.from({ length: PER_SENDER }, async (_, j) => {
        const content = `u${i} #${j}`;
        // every sender alternates between its socket and HTTP
        if ((i + j) % 2 === 0) {
          const reply = await request(socks[i]!, { type: 'send', conversation_id: conv, content }, 20_000);
          expect(reply.type, JSON.stringify(reply)).toBe('ack');
          return reply.message;
        }
        return send(m, conv, content);
      }),
    );
    const sent = await Promise.all(sends);
    expect(sent.map((m) => m.seq).sort((x, y) => x - y)).toEqual(Array.from({ length: TOTAL }, (_, k) => k + 1));

    for (const s of [...socks, ...observerSocks]) {
      await waitUntil(() => s.frames.filter((f) => f.type === 'new_message' && f.message.conversation_id === conv).length >= TOTAL, 20_000, 'all new_message events');
    }
    const bySeq = new Map(sent.map((m) => [m.seq, m]));
    for (const [k, s] of [...socks, ...observerSocks].entries()) {
      const events = s.frames.filter((f) => f.type === 'new_message' && f.message.conversation_id === conv);
      const seqs = events.map((f) => f.message.seq);
      expect(seqs, `socket ${k}`).toEqual(Array.from({ length: TOTAL }, (_, n) => n + 1));
      for (const e of events) expect(e.message.content).toBe(bySeq.get(e.message.seq)!.content);
    }
  });

  it('the very first messages of fresh conversations, sent concurrently, also arrive in seq order', async () => {
    const ROUNDS = 12;
    const PER_ROUND = 6;
    const [a, b] = await users(2);
    const [sa, sb] = await Promise.all([connect(a!), connect(b!)]);
    const convs = await Promise.all(Array.from({ length: ROUNDS }, () => group(a!, [b!])));
    await Promise.all(
      convs.flatMap((conv) =>
        Array.from({ length: PER_ROUND }, async (_, j) => {
          if (j % 2 === 0) {
            const reply = await request(sa, { type: 'send', conversation_id: conv, content: `a${j}` }, 20_000);
            expect(reply.type, JSON.stringify(reply)).toBe('ack');
          } else await send(b!, conv, `b${j}`);
        }),
      ),
    );
    for (const s of [sa, sb]) {
      await waitUntil(() => s.frames.filter((f) => f.type === 'new_message').length >= ROUNDS * PER_ROUND, 20_000, 'all new_message events');
      const problems: string[] = [];
      for (const conv of convs) {
        const seqs = s.frames.filter((f) => f.type === 'new_message' && f.message.conversation_id === conv).map((f) => f.message.seq);
        if (seqs.join(',') !== Array.from({ length: PER_ROUND }, (_, n) => n + 1).join(',')) problems.push(`${conv}: ${seqs.join(',')}`);
      }
      expect(problems, s === sa ? 'sender socket' : 'recipient socket').toEqual([]);
    }
  });
});

// ---------------------------------------------------------------- msgpack

describe('msgpack (sotalk.msgpack.v1)', () => {
  it('negotiates the subprotocol and sends hello as a binary msgpack frame', async () => {
    const [a] = await users(1);
    const ws = new WebSocket(srv.baseUrl.replace(/^http/, 'ws') + '/ws', ['sotalk.msgpack.v1'], { headers: { authorization: `Bearer ${a!.token}` } });
    try {
      const [data, isBinary] = await new Promise<[Buffer, boolean]>((resolve, reject) => {
        ws.once('message', (d, b) => resolve([d as Buffer, b]));
        ws.once('error', reject);
      });
      expect(ws.protocol).toBe('sotalk.msgpack.v1');
      expect(isBinary).toBe(true);
      expect(packr.unpack(data)).toEqual({ type: 'hello', user_id: a!.user.id });
    } finally {
      ws.terminate();
    }
  });

  it('a socket not offering it gets JSON text frames and no subprotocol', async () => {
    const [a] = await users(1);
    const s = await connect(a!);
    expect(s.ws.protocol).toBe('');
  });

  it('carries the same objects as JSON (times as ISO strings), both directions', async () => {
    const [a, b] = await users(2);
    const conv = await group(a!, [b!]);
    const mp = await connect(a!, { msgpack: true });
    const js = await connect(b!);
    const kinds: boolean[] = [];
    mp.ws.on('message', (_d, isBinary) => kinds.push(isBinary));

    // msgpack in, msgpack out
    const ack = await request(mp, { type: 'send', conversation_id: conv, content: 'packed ✓', content_type: 'text' });
    expect(ack.type, JSON.stringify(ack)).toBe('ack');
    expect(ack.message.created_at).toMatch(ISO_UTC);
    expect(typeof ack.message.created_at).toBe('string');
    expect(typeof ack.message.seq).toBe('number');
    const onJs = await js.next(newMessage(ack.message.id));
    const onMp = await mp.next(newMessage(ack.message.id));
    expect(onMp).toEqual(onJs);
    expect(onMp.message).toEqual(ack.message);

    // an event from elsewhere, and receipts, typing, pong
    const fromB = await send(b!, conv, 'json side');
    expect((await mp.next(newMessage(fromB.id))).message).toEqual(fromB);
    js.send({ type: 'typing', conversation_id: conv });
    expect(await mp.next((f) => f.type === 'typing')).toEqual({ type: 'typing', conversation_id: conv, user_id: b!.user.id });
    mp.send({ type: 'read', conversation_id: conv, seq: 2 });
    const receipt = await js.next((f) => f.type === 'receipt' && f.user_id === a!.user.id);
    expect(await mp.next((f) => f.type === 'receipt' && f.user_id === a!.user.id)).toEqual(receipt);
    await expectAlive(mp);
    expect(kinds.length).toBeGreaterThan(0);
    expect(kinds.every((k) => k)).toBe(true);
  });

  it('a text frame on a msgpack socket is an error (in msgpack); the socket stays open', async () => {
    const [a, b] = await users(2);
    const conv = await group(a!, [b!]);
    const mp = await connect(a!, { msgpack: true });
    mp.ws.send(JSON.stringify({ type: 'send', request_id: 'txt', conversation_id: conv, content: 'as text' }));
    const err = await mp.next((f) => f.type === 'error');
    expectSocketError(err, 'invalid_request');
    // garbage binary
    mp.ws.send(Buffer.from([0xc1, 0xc1, 0xc1]));
    await waitUntil(() => mp.frames.filter((f) => f.type === 'error').length >= 2, 5000, 'second error');
    // a msgpack frame that is not an object
    mp.ws.send(packr.pack(['send']));
    await waitUntil(() => mp.frames.filter((f) => f.type === 'error').length >= 3, 5000, 'third error');
    await expectAlive(mp);
    const history = await a!.api.get(`/api/v1/conversations/${conv}/messages`);
    expect(history.body.messages).toEqual([]);
  });
});

// ---------------------------------------------------------------- malformed and oversized frames

describe('malformed and oversized frames', () => {
  it('a malformed JSON frame gets error invalid_request without field; the socket stays open', async () => {
    const [a] = await users(1);
    const s = await connect(a!);
    for (const raw of ['{not json', '', '42', 'null', '[]', '"send"', '{}', '{"type":42}']) {
      const before = s.frames.filter((f) => f.type === 'error').length;
      s.ws.send(raw);
      await waitUntil(() => s.frames.filter((f) => f.type === 'error').length > before, 5000, `error for ${JSON.stringify(raw)}`);
      const err = s.frames.filter((f) => f.type === 'error').pop();
      expectSocketError(err, 'invalid_request', raw === '{not json' || raw === '' ? null : undefined);
      expect(s.ws.readyState).toBe(WebSocket.OPEN);
    }
    // a binary frame on a JSON socket is malformed too
    const before = s.frames.filter((f) => f.type === 'error').length;
    s.ws.send(Buffer.from(JSON.stringify({ type: 'ping' })), { binary: true });
    await waitUntil(() => s.frames.filter((f) => f.type === 'error').length > before, 5000, 'error for a binary frame');
    expectSocketError(s.frames.filter((f) => f.type === 'error').pop(), 'invalid_request');
    await expectAlive(s);
  });

  it('an error for a frame with a request_id echoes it', async () => {
    const [a] = await users(1);
    const s = await connect(a!);
    s.send({ type: 'nope', request_id: 'echo-me' });
    expect((await s.next((f) => f.type === 'error')).request_id).toBe('echo-me');
  });

  it(`a frame over WS_MAX_FRAME_BYTES (${SMALL_FRAME_LIMIT}) closes that socket with 1009; the user's other socket keeps working`, async () => {
    const [a, b] = await users(2, small);
    const conv = await group(a!, [b!]);
    const [victim, survivor] = await Promise.all([connect(a!, {}, small), connect(a!, {}, small)]);
    // just under the frame limit: an ordinary (size) error, not a close
    const under = JSON.stringify({ type: 'send', request_id: 'under', conversation_id: conv, content: 'x'.repeat(SMALL_FRAME_LIMIT - 200) });
    expect(Buffer.byteLength(under)).toBeLessThanOrEqual(SMALL_FRAME_LIMIT);
    victim.ws.send(under);
    expectSocketError(await victim.next((f) => f.type === 'error' && f.request_id === 'under'), 'payload_too_large', 'content');
    // over it
    victim.ws.send(JSON.stringify({ type: 'send', request_id: 'over', conversation_id: conv, content: 'x'.repeat(SMALL_FRAME_LIMIT + 100) }));
    const closed = await victim.closed;
    expect(closed.code).toBe(1009);
    expect(victim.frames.some((f) => f.request_id === 'over')).toBe(false);
    await expectAlive(survivor);
    const sent = await send(b!, conv, 'still flowing');
    expect((await survivor.next(newMessage(sent.id))).message.content).toBe('still flowing');
    const history = await a!.api.get(`/api/v1/conversations/${conv}/messages`);
    expect(history.body.messages.map((m: any) => m.content)).toEqual(['still flowing']);
  });

  it('a far larger frame (1 MiB) also closes only that socket, with 1009', async () => {
    const [a, b] = await users(2, small);
    const conv = await group(a!, [b!]);
    const [victim, survivor] = await Promise.all([connect(a!, {}, small), connect(a!, {}, small)]);
    victim.ws.send(JSON.stringify({ type: 'send', request_id: 'huge', conversation_id: conv, content: 'x'.repeat(1024 * 1024) }));
    const closed = await victim.closed;
    await expectAlive(survivor);
    const sent = await send(b!, conv, 'after the big one');
    expect((await survivor.next(newMessage(sent.id))).message.content).toBe('after the big one');
    expect(closed.code).toBe(1009);
  });

  it('an oversized binary frame on a msgpack socket closes it with 1009 too', async () => {
    const [a] = await users(1, small);
    const [victim, survivor] = await Promise.all([connect(a!, { msgpack: true }, small), connect(a!, { msgpack: true }, small)]);
    victim.ws.send(Buffer.alloc(SMALL_FRAME_LIMIT + 1, 0x90));
    expect((await victim.closed).code).toBe(1009);
    await expectAlive(survivor);
  });
});

// ---------------------------------------------------------------- slow consumer

describe('slow consumer', () => {
  it(`a socket that stops reading is disconnected (WS_MAX_BUFFERED_BYTES=${SLOW_BUFFER}); a fast member socket gets everything`, async () => {
    const [sender, lazy, fast] = await users(3, slow);
    const conv = await group(sender!, [lazy!, fast!]);
    const fastSock = await connect(fast!, {}, slow);
    const lazySock = await connect(lazy!, { paused: true }, slow);
    expect(await metric(slow, 'sotalk_ws_connections')).toBe(2);

    const content = 'z'.repeat(32 * 1024);
    let sent = 0;
    // Bounded: at most 60 batches of 5 × 32 KiB (~9.6 MiB), far beyond kernel buffers + 64 KiB.
    for (let batch = 0; batch < 60; batch++) {
      await Promise.all(Array.from({ length: 5 }, (_, i) => send(sender!, conv, `${batch}-${i} ${content}`)));
      sent += 5;
      if ((await metric(slow, 'sotalk_ws_connections')) === 1) break;
    }
    await waitUntil(async () => (await metric(slow, 'sotalk_ws_connections')) === 1, 10_000, 'the paused socket to be dropped');
    // a few more after the drop
    for (let i = 0; i < 3; i++) await send(sender!, conv, `after drop ${i}`);
    sent += 3;

    await waitUntil(() => fastSock.frames.filter((f) => f.type === 'new_message').length >= sent, 30_000, 'the fast socket to get everything');
    const seqs = fastSock.frames.filter((f) => f.type === 'new_message').map((f) => f.message.seq);
    expect(seqs).toEqual(Array.from({ length: sent }, (_, k) => k + 1));
    await expectAlive(fastSock);

    // the lazy client, reading again, finds its connection closed and got only part of the stream
    lazySock.ws.resume();
    const closed = await Promise.race([lazySock.closed, sleep(15_000).then(() => undefined)]);
    expect(closed, 'the dropped socket closes on the client side').toBeDefined();
    expect(lazySock.frames.filter((f) => f.type === 'new_message').length).toBeLessThan(sent);
    // and can reconnect
    const again = await connect(lazy!, {}, slow);
    const last = await send(sender!, conv, 'welcome back');
    await again.next(newMessage(last.id));
  }, 90_000);
});

// ---------------------------------------------------------------- catch-up

describe('catch-up after a disconnect', () => {
  it('a client that reconnects and pages with after_seq gets exactly what it missed', async () => {
    const [a, b] = await users(2);
    const conv = await group(a!, [b!]);
    const sa = await connect(a!);
    let sb = await connect(b!);
    const first = await send(a!, conv, 'seen live');
    const live = await sb.next(newMessage(first.id));
    const lastSeen = live.message.seq;
    await sb.close();

    const missed: any[] = [];
    for (let i = 0; i < 5; i++) {
      if (i % 2 === 0) missed.push(await send(a!, conv, `missed ${i}`));
      else {
        const ack = await request(sa, { type: 'send', conversation_id: conv, content: `missed ${i}` });
        missed.push(ack.message);
      }
    }
    // edited and deleted while away: history shows the current state
    await a!.api.patch(`/api/v1/messages/${missed[1].id}`, { content: 'missed 1 (edited)' });
    await a!.api.delete(`/api/v1/messages/${missed[2].id}`);

    sb = await connect(b!);
    expect(sb.frames.filter((f) => f.type === 'new_message')).toEqual([]);
    const got: any[] = [];
    let after = lastSeen;
    for (let pageNo = 0; pageNo < 10; pageNo++) {
      const res = await b!.api.get(`/api/v1/conversations/${conv}/messages?after_seq=${after}&limit=2`);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      got.push(...res.body.messages);
      if (!res.body.has_more) break;
      after = res.body.messages[res.body.messages.length - 1].seq;
    }
    expect(got.map((m) => m.id)).toEqual(missed.map((m) => m.id));
    expect(got.map((m) => m.seq)).toEqual([2, 3, 4, 5, 6]);
    expect(got.map((m) => m.content)).toEqual(['missed 0', 'missed 1 (edited)', null, 'missed 3', 'missed 4']);
    expect(got[2].deleted).toBe(true);

    // and live delivery resumes on the new socket
    const next = await send(a!, conv, 'live again');
    expect((await sb.next(newMessage(next.id))).message.seq).toBe(7);
  });
});
