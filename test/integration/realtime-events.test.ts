// Integration tests: /ws handshake and auth, every server → client event end to end, multi-device (docs/protocol.md).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { signIn, startTestServer, type SignedInUser, type TestServer } from '../helpers/server.js';
import { openSocket, type TestSocket } from '../helpers/socket.js';

// ---------------------------------------------------------------- local helpers

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let srv: TestServer;
const sockets: TestSocket[] = [];

beforeAll(async () => {
  srv = await startTestServer();
});

afterAll(async () => {
  await Promise.all(sockets.map((s) => s.close().catch(() => {})));
  await srv?.close();
});

const users = (n: number) => Promise.all(Array.from({ length: n }, () => signIn(srv.baseUrl)));

/** Opens a socket that is closed after the file. */
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

async function direct(a: SignedInUser, b: SignedInUser): Promise<string> {
  const res = await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] });
  expect([200, 201]).toContain(res.status);
  return res.body.conversation.id;
}

async function send(u: SignedInUser, conversationId: string, content: string): Promise<any> {
  const res = await u.api.post('/api/v1/messages', { conversation_id: conversationId, content });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.message;
}

const newMessage = (id: string) => (f: any) => f.type === 'new_message' && f.message?.id === id;
const ofType = (type: string, conversationId: string) => (f: any) =>
  f.type === type && (f.conversation_id ?? f.message?.conversation_id) === conversationId;

/**
 * Proves a socket has seen everything published to it before now: `sender` sends a marker into
 * `conversationId` (which the socket's user is in) and we wait for it on every socket given.
 */
async function barrier(sender: SignedInUser, conversationId: string, socks: TestSocket[]): Promise<void> {
  const marker = await send(sender, conversationId, `marker ${Math.random()}`);
  await Promise.all(socks.map((s) => s.next(newMessage(marker.id))));
}

/** The HTTP status of a refused upgrade (or 101 when it is accepted). */
function rawUpgradeStatus(url: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.once('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      res.resume();
      ws.terminate();
    });
    ws.once('open', () => {
      resolve(101);
      ws.terminate();
    });
    ws.once('error', (err) => reject(err));
  });
}

// ---------------------------------------------------------------- handshake and auth

describe('/ws handshake', () => {
  it('refuses a missing token with 401 before the upgrade', async () => {
    const err = await openSocket(srv.baseUrl, '', { tokenInQuery: true }).then(
      () => undefined,
      (e) => e,
    );
    expect(err?.status).toBe(401);
    // with no Authorization header and no query at all
    expect(await rawUpgradeStatus(`${srv.baseUrl.replace(/^http/, 'ws')}/ws`)).toBe(401);
    // a header that is not a Bearer token
    expect(await rawUpgradeStatus(`${srv.baseUrl.replace(/^http/, 'ws')}/ws`, { authorization: 'Basic dXNlcjpwYXNz' })).toBe(401);
  });

  it('refuses a garbage token with 401 (header and query)', async () => {
    for (const tokenInQuery of [false, true]) {
      for (const token of ['garbage', 'a.b.c', 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.AAAA']) {
        const err = await openSocket(srv.baseUrl, token, { tokenInQuery }).then(
          () => undefined,
          (e) => e,
        );
        expect(err?.status, `${token} in ${tokenInQuery ? 'query' : 'header'}`).toBe(401);
      }
    }
  });

  it('refuses a token signed by another server (other secret) with 401', async () => {
    const other = await startTestServer({ env: { AUTH_TOKEN_SECRET: 'x'.repeat(40) } });
    try {
      const u = await signIn(other.baseUrl);
      const err = await openSocket(srv.baseUrl, u.token).then(
        () => undefined,
        (e) => e,
      );
      expect(err?.status).toBe(401);
    } finally {
      await other.close();
    }
  });

  it('refuses an expired token with 401 (service clock moved past AUTH_TOKEN_TTL_S)', async () => {
    let offsetMs = 0;
    const timed = await startTestServer({ env: { AUTH_TOKEN_TTL_S: '60' }, deps: { clock: () => new Date(Date.now() + offsetMs) } });
    try {
      const u = await signIn(timed.baseUrl);
      const ok = await openSocket(timed.baseUrl, u.token);
      await ok.close();
      offsetMs = 61_000;
      for (const tokenInQuery of [false, true]) {
        const err = await openSocket(timed.baseUrl, u.token, { tokenInQuery }).then(
          () => undefined,
          (e) => e,
        );
        expect(err?.status, tokenInQuery ? 'query' : 'header').toBe(401);
      }
    } finally {
      await timed.close();
    }
  });

  it('accepts the token in the Authorization header and in ?token=; the first frame is hello {user_id}', async () => {
    const [a] = await users(1);
    const viaHeader = await connect(a!);
    const viaQuery = await connect(a!, { tokenInQuery: true });
    for (const s of [viaHeader, viaQuery]) {
      expect(s.frames[0]).toEqual({ type: 'hello', user_id: a!.user.id });
    }
  });

  it('answers ping with pong', async () => {
    const [a] = await users(1);
    const s = await connect(a!);
    s.send({ type: 'ping' });
    await s.next((f) => f.type === 'pong');
  });
});

// ---------------------------------------------------------------- event types

describe('conversation events end to end', () => {
  it('new_message carries the decrypted message (same object as the HTTP answer) to every member', async () => {
    const [a, b, c] = await users(3);
    const conv = await group(a!, [b!, c!]);
    const [sa, sb, sc] = await Promise.all([connect(a!), connect(b!), connect(c!)]);
    const sent = await send(a!, conv, 'hello, wörld 👋');
    for (const s of [sa, sb, sc]) {
      const ev = await s.next(newMessage(sent.id));
      expect(ev).toEqual({ type: 'new_message', message: sent });
      expect(ev.message.content).toBe('hello, wörld 👋');
      expect(ev.message.seq).toBe(1);
      expect(ev.message.created_at).toMatch(ISO_UTC);
    }
  });

  it('message_updated after PATCH carries the new content, same id and seq, edited_at set', async () => {
    const [a, b] = await users(2);
    const conv = await group(a!, [b!]);
    const [sa, sb] = await Promise.all([connect(a!), connect(b!)]);
    const sent = await send(a!, conv, 'before');
    const res = await a!.api.patch(`/api/v1/messages/${sent.id}`, { content: 'after' });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    for (const s of [sa, sb]) {
      const ev = await s.next((f) => f.type === 'message_updated' && f.message?.id === sent.id);
      expect(ev.message).toMatchObject({ id: sent.id, seq: sent.seq, conversation_id: conv, content: 'after', deleted: false });
      expect(ev.message.edited_at).toMatch(ISO_UTC);
      expect(ev.message).toEqual(res.body.message);
    }
  });

  it('message_deleted is exactly {type, conversation_id, id, seq}', async () => {
    const [a, b] = await users(2);
    const conv = await group(a!, [b!]);
    const [sa, sb] = await Promise.all([connect(a!), connect(b!)]);
    await send(a!, conv, 'first');
    const second = await send(a!, conv, 'second');
    const res = await a!.api.delete(`/api/v1/messages/${second.id}`);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    for (const s of [sa, sb]) {
      const ev = await s.next(ofType('message_deleted', conv));
      expect(ev).toEqual({ type: 'message_deleted', conversation_id: conv, id: second.id, seq: 2 });
    }
  });

  it('receipt after HTTP /read goes to every member; reading implies delivery', async () => {
    const [a, b] = await users(2);
    const conv = await group(a!, [b!]);
    const [sa, sb] = await Promise.all([connect(a!), connect(b!)]);
    await send(a!, conv, 'one');
    await send(a!, conv, 'two');
    const res = await b!.api.post(`/api/v1/conversations/${conv}/read`, { seq: 2 });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const expected = { type: 'receipt', conversation_id: conv, user_id: b!.user.id, delivered_seq: 2, read_seq: 2 };
    for (const s of [sa, sb]) expect(await s.next(ofType('receipt', conv))).toEqual(expected);
  });

  it('receipt after socket `received` and `read`; never backwards; reading implies delivery', async () => {
    const [a, b] = await users(2);
    const conv = await group(a!, [b!]);
    const [sa, sb] = await Promise.all([connect(a!), connect(b!)]);
    for (const text of ['one', 'two', 'three']) await send(a!, conv, text);
    const receiptOf = (d: number, r: number) => (f: any) =>
      f.type === 'receipt' && f.conversation_id === conv && f.user_id === b!.user.id && f.delivered_seq === d && f.read_seq === r;

    sb.send({ type: 'received', conversation_id: conv, seq: 1 });
    for (const s of [sa, sb]) {
      expect(await s.next(receiptOf(1, 0))).toEqual({ type: 'receipt', conversation_id: conv, user_id: b!.user.id, delivered_seq: 1, read_seq: 0 });
    }
    sb.send({ type: 'read', conversation_id: conv, seq: 2 });
    for (const s of [sa, sb]) await s.next(receiptOf(2, 2));
    sb.send({ type: 'received', conversation_id: conv, seq: 3 });
    for (const s of [sa, sb]) await s.next(receiptOf(3, 2));
    // a lower seq moves nothing
    sb.send({ type: 'read', conversation_id: conv, seq: 1 });
    sb.send({ type: 'ping', request_id: 'after-read' });
    await sb.next((f) => f.type === 'pong' && f.request_id === 'after-read');
    await sleep(100);
    expect(sb.frames.filter((f) => f.type === 'error')).toEqual([]);
    const later = sb.frames.slice(sb.frames.findIndex(receiptOf(3, 2))).filter((f) => f.type === 'receipt');
    for (const r of later) expect(r).toMatchObject({ delivered_seq: 3, read_seq: 2 });

    const conversation = await a!.api.get(`/api/v1/conversations/${conv}`);
    const member = conversation.body.conversation.members.find((m: any) => m.user_id === b!.user.id);
    expect(member).toMatchObject({ delivered_seq: 3, read_seq: 2 });
  });

  it('typing reaches the other members but none of the typer’s own connections', async () => {
    const [a, b, c] = await users(3);
    const conv = await group(a!, [b!, c!]);
    const [a1, a2, sb, sc] = await Promise.all([connect(a!), connect(a!), connect(b!), connect(c!)]);
    a1.send({ type: 'typing', conversation_id: conv });
    for (const s of [sb, sc]) {
      expect(await s.next(ofType('typing', conv))).toEqual({ type: 'typing', conversation_id: conv, user_id: a!.user.id });
    }
    await barrier(b!, conv, [a1, a2]);
    expect(a1.frames.filter((f) => f.type === 'typing')).toEqual([]);
    expect(a2.frames.filter((f) => f.type === 'typing')).toEqual([]);
    expect(a1.frames.filter((f) => f.type === 'error')).toEqual([]);
  });

  it('typing into a conversation the user is not in is not_found and reaches nobody', async () => {
    const [a, b, outsider] = await users(3);
    const conv = await group(a!, [b!]);
    const [sb, so] = await Promise.all([connect(b!), connect(outsider!)]);
    so.send({ type: 'typing', request_id: 't1', conversation_id: conv });
    const err = await so.next((f) => f.type === 'error' && f.request_id === 't1');
    expect(err.error.code).toBe('not_found');
    await barrier(a!, conv, [sb]);
    expect(sb.frames.filter((f) => f.type === 'typing')).toEqual([]);
  });

  it('key_rotated after POST rotate-key', async () => {
    const [a, b] = await users(2);
    const conv = await group(a!, [b!]);
    const [sa, sb] = await Promise.all([connect(a!), connect(b!)]);
    const res = await b!.api.post(`/api/v1/conversations/${conv}/rotate-key`);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    for (const s of [sa, sb]) {
      expect(await s.next(ofType('key_rotated', conv))).toEqual({ type: 'key_rotated', conversation_id: conv, current_key_version: 2 });
    }
    // messages still flow, decrypted, under the new version
    const sent = await send(a!, conv, 'after rotation');
    expect((await sb.next(newMessage(sent.id))).message.content).toBe('after rotation');
  });

  it('member_added goes to all members, the new one included; the new member then gets messages', async () => {
    const [a, b, c] = await users(3);
    const conv = await group(a!, [b!]);
    const [sa, sb, sc] = await Promise.all([connect(a!), connect(b!), connect(c!)]);
    const res = await b!.api.post(`/api/v1/conversations/${conv}/members`, { user_id: c!.user.id });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    for (const s of [sa, sb, sc]) {
      expect(await s.next((f) => f.type === 'member_added' && f.conversation_id === conv && f.user_id === c!.user.id)).toEqual({
        type: 'member_added',
        conversation_id: conv,
        user_id: c!.user.id,
      });
    }
    const sent = await send(a!, conv, 'welcome');
    expect((await sc.next(newMessage(sent.id))).message.content).toBe('welcome');
  });

  it('creating a group tells every member (member_added for each member)', async () => {
    const [a, b] = await users(2);
    const [sa, sb] = await Promise.all([connect(a!), connect(b!)]);
    const conv = await group(a!, [b!]);
    for (const s of [sa, sb]) {
      for (const u of [a!, b!]) {
        await s.next((f) => f.type === 'member_added' && f.conversation_id === conv && f.user_id === u.user.id);
      }
    }
  });

  it('member_removed goes to the remaining members and the removed user, who then gets no new_message', async () => {
    const [a, b, c] = await users(3);
    const conv = await group(a!, [b!, c!]);
    const dm = await direct(a!, b!);
    const [sa, sb, sc] = await Promise.all([connect(a!), connect(b!), connect(c!)]);
    await barrier(a!, dm, [sb]); // warm the direct conversation
    const res = await a!.api.delete(`/api/v1/conversations/${conv}/members/${b!.user.id}`);
    expect(res.status, JSON.stringify(res.body)).toBe(204);
    for (const s of [sa, sb, sc]) {
      expect(await s.next((f) => f.type === 'member_removed' && f.conversation_id === conv)).toEqual({
        type: 'member_removed',
        conversation_id: conv,
        user_id: b!.user.id,
      });
    }
    const after = await send(a!, conv, 'not for b');
    await sc.next(newMessage(after.id));
    await sa.next(newMessage(after.id));
    // everything written to b's socket before the marker has arrived
    await barrier(a!, dm, [sb]);
    expect(sb.frames.filter((f) => f.type === 'new_message' && f.message.conversation_id === conv)).toEqual([]);
    // nor edits, deletes, typing or receipts of that conversation
    await a!.api.patch(`/api/v1/messages/${after.id}`, { content: 'still not for b' });
    sc.send({ type: 'typing', conversation_id: conv });
    sc.send({ type: 'read', conversation_id: conv, seq: 1 });
    await sa.next(ofType('message_updated', conv));
    await sa.next(ofType('typing', conv));
    await sa.next(ofType('receipt', conv));
    await barrier(a!, dm, [sb]);
    expect(sb.frames.filter((f) => (f.conversation_id ?? f.message?.conversation_id) === conv && f.type !== 'member_added' && f.type !== 'member_removed')).toEqual([]);
    // and a socket send into it is not_found
    sb.send({ type: 'send', request_id: 'r1', conversation_id: conv, content: 'let me in' });
    expect((await sb.next((f) => f.type === 'error' && f.request_id === 'r1')).error.code).toBe('not_found');
  });

  it('a member who leaves (removes themselves) gets member_removed too', async () => {
    const [a, b] = await users(2);
    const conv = await group(a!, [b!]);
    const [sa, sb] = await Promise.all([connect(a!), connect(b!)]);
    const res = await b!.api.delete(`/api/v1/conversations/${conv}/members/${b!.user.id}`);
    expect(res.status, JSON.stringify(res.body)).toBe(204);
    for (const s of [sa, sb]) {
      await s.next((f) => f.type === 'member_removed' && f.conversation_id === conv && f.user_id === b!.user.id);
    }
  });

  it('a direct conversation created by a socket send (recipient_id) reaches the recipient', async () => {
    const [a, b] = await users(2);
    const [sa, sb] = await Promise.all([connect(a!), connect(b!)]);
    sa.send({ type: 'send', request_id: 'd1', recipient_id: b!.user.id, content: 'hi b' });
    const ack = await sa.next((f) => f.type === 'ack' && f.request_id === 'd1');
    expect(ack.message.content).toBe('hi b');
    const ev = await sb.next(newMessage(ack.message.id));
    expect(ev.message).toEqual(ack.message);
  });
});

// ---------------------------------------------------------------- multi-device

describe('multi-device', () => {
  it('every socket of a user gets each event; the sender’s other sockets too; the sending socket gets ack first', async () => {
    const [u, v] = await users(2);
    const conv = await group(v!, [u!]);
    const [u1, u2, u3, sv] = await Promise.all([connect(u!), connect(u!, { tokenInQuery: true }), connect(u!), connect(v!)]);
    const mine = [u1, u2, u3];

    // another member sends: each of u's sockets gets it
    const fromV = await send(v!, conv, 'from v');
    for (const s of mine) expect((await s.next(newMessage(fromV.id))).message).toEqual(fromV);

    // u sends over u1: u1 gets ack {request_id, message} before its own new_message; u2, u3 and v get it
    u1.send({ type: 'send', request_id: 'm-1', conversation_id: conv, content: 'from u1' });
    const ack = await u1.next((f) => f.type === 'ack' && f.request_id === 'm-1');
    expect(ack).toEqual({ type: 'ack', request_id: 'm-1', message: expect.objectContaining({ content: 'from u1', sender_id: u!.user.id, seq: 2, status: 'sent' }) });
    for (const s of [...mine, sv]) expect((await s.next(newMessage(ack.message.id))).message).toEqual(ack.message);
    const ackIndex = u1.frames.indexOf(ack);
    const eventIndex = u1.frames.findIndex(newMessage(ack.message.id));
    expect(ackIndex).toBeGreaterThanOrEqual(0);
    expect(ackIndex).toBeLessThan(eventIndex);

    // the other event types reach all three as well
    expect((await v!.api.patch(`/api/v1/messages/${fromV.id}`, { content: 'edited' })).status).toBe(200);
    expect((await v!.api.delete(`/api/v1/messages/${fromV.id}`)).status).toBe(200);
    expect((await v!.api.post(`/api/v1/conversations/${conv}/read`, { seq: 2 })).status).toBe(200);
    expect((await v!.api.post(`/api/v1/conversations/${conv}/rotate-key`)).status).toBe(200);
    sv.send({ type: 'typing', conversation_id: conv });
    for (const s of mine) {
      await s.next((f) => f.type === 'message_updated' && f.message.id === fromV.id && f.message.content === 'edited');
      await s.next((f) => f.type === 'message_deleted' && f.id === fromV.id);
      await s.next((f) => f.type === 'receipt' && f.user_id === v!.user.id && f.read_seq === 2);
      await s.next(ofType('key_rotated', conv));
      await s.next((f) => f.type === 'typing' && f.user_id === v!.user.id);
    }
  });

  it('an ack comes before the sender socket’s new_message for each of many rapid sends', async () => {
    const [u, v] = await users(2);
    const conv = await group(u!, [v!]);
    const su = await connect(u!);
    for (let i = 0; i < 10; i++) su.send({ type: 'send', request_id: `r${i}`, conversation_id: conv, content: `n${i}` });
    const acks = await Promise.all(Array.from({ length: 10 }, (_, i) => su.next((f) => f.type === 'ack' && f.request_id === `r${i}`)));
    await Promise.all(acks.map((a) => su.next(newMessage(a.message.id))));
    for (const a of acks) {
      expect(su.frames.indexOf(a)).toBeLessThan(su.frames.findIndex(newMessage(a.message.id)));
    }
  });

  it('a closed socket does not stop the user’s other sockets from receiving', async () => {
    const [u, v] = await users(2);
    const conv = await group(v!, [u!]);
    const [u1, u2] = await Promise.all([connect(u!), connect(u!)]);
    await u1.close();
    const sent = await send(v!, conv, 'still here');
    expect((await u2.next(newMessage(sent.id))).message.content).toBe('still here');
  });
});
