import { describe, expect, it } from 'vitest';
import type { TemplatedApp } from '../../src/http/uws.js';
import { SocketHub, conversationTopic, type HubSocket } from '../../src/realtime/hub.js';

const C = '00000000-0000-4000-8000-00000000000c';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const turn = () => new Promise((r) => setImmediate(r));

/** A uWS app stand-in: topics with subscriber sockets, publishes recorded per socket. */
function fakeApp() {
  const topics = new Map<string, Set<FakeSocket>>();
  class FakeSocket implements HubSocket {
    frames: any[] = [];
    constructor(readonly data = { msgpack: false, closed: false }) {}
    subscribe(t: string) {
      if (!topics.has(t)) topics.set(t, new Set());
      topics.get(t)!.add(this);
      return true;
    }
    unsubscribe(t: string) {
      return topics.get(t)?.delete(this) ?? false;
    }
    getUserData() {
      return this.data;
    }
  }
  const app = {
    numSubscribers: (t: string) => topics.get(t)?.size ?? 0,
    publish: (t: string, msg: string) => {
      for (const s of topics.get(t) ?? []) s.frames.push(JSON.parse(msg));
      return true;
    },
  } as unknown as TemplatedApp;
  return { app, FakeSocket, topics };
}

const message = (seq: number) => ({ type: 'new_message' as const, message: { conversation_id: C, seq, created_at: new Date().toISOString() } as any });
const seqs = (s: { frames: any[] }) => s.frames.filter((f) => f.type === 'new_message').map((f) => f.message.seq);

async function setup(now: () => number = Date.now) {
  const { app, FakeSocket, topics } = fakeApp();
  const served: string[] = [];
  const hub = new SocketHub(app, { conversationsOf: async () => [C], onServe: (c) => served.push(c), reorderWindowMs: 100, clock: now });
  const ws = new FakeSocket();
  await hub.attach(ws, 'u1');
  return { hub, ws, served, topics, FakeSocket };
}

describe('SocketHub', () => {
  it('subscribes a socket to its conversations before attach resolves, and serves each conversation once', async () => {
    const { hub, ws, served, topics, FakeSocket } = await setup();
    expect(topics.get(conversationTopic(C, false))?.has(ws)).toBe(true);
    await hub.attach(new FakeSocket(), 'u1');
    expect(served).toEqual([C]);
  });

  it('events of one instance, already in order, go out at once (no reorder wait)', async () => {
    const { hub, ws } = await setup();
    const old = Date.now() - 10_000;
    hub.deliver(C, message(7), old);
    for (let s = 8; s <= 12; s++) hub.deliver(C, message(s), Date.now());
    await turn();
    expect(seqs(ws)).toEqual([7, 8, 9, 10, 11, 12]);
  });

  it('the first event of a conversation waits for a predecessor committed within the window, and no longer', async () => {
    const { hub, ws } = await setup();
    hub.deliver(C, message(5), Date.now()); // predecessor committed just now elsewhere
    await turn();
    expect(seqs(ws)).toEqual([]);
    hub.deliver(C, message(4), Date.now() - 20);
    await turn();
    expect(seqs(ws)).toEqual([]); // 4's own predecessor is recent too
    hub.deliver(C, message(3), Date.now() - 5_000);
    await turn();
    expect(seqs(ws)).toEqual([3, 4, 5]);
  });

  it('a gap is waited for at most the window, then the held events go out in order', async () => {
    const { hub, ws } = await setup();
    hub.deliver(C, message(1));
    hub.deliver(C, message(3), Date.now());
    hub.deliver(C, message(4), Date.now());
    await turn();
    expect(seqs(ws)).toEqual([1]);
    await sleep(150);
    expect(seqs(ws)).toEqual([1, 3, 4]);
    hub.deliver(C, message(2)); // late: sent rather than dropped
    await turn();
    expect(seqs(ws)).toEqual([1, 3, 4, 2]);
  });

  it('one event that fails to deliver does not drop the others queued with it', async () => {
    const errors: unknown[] = [];
    const { app, FakeSocket } = fakeApp();
    const hub = new SocketHub(app, { conversationsOf: async () => [C], onDeliveryError: (e) => errors.push(e) });
    const ws = new FakeSocket();
    await hub.attach(ws, 'u1');
    const bad: any = { type: 'receipt', conversation_id: C };
    bad.self = bad; // JSON.stringify throws
    hub.deliver(C, bad);
    hub.deliver(C, { type: 'key_rotated', conversation_id: C, current_key_version: 2 });
    await turn();
    expect(errors).toHaveLength(1);
    expect(ws.frames.map((f) => f.type)).toEqual(['key_rotated']);
  });

  it('member_removed reaches the removed user, who is unsubscribed after it', async () => {
    const { hub, ws, topics } = await setup();
    hub.memberRemoved(C, 'u1');
    await turn();
    expect(ws.frames.map((f) => f.type)).toEqual(['member_removed']);
    expect(topics.get(conversationTopic(C, false))?.has(ws)).toBe(false);
    hub.deliver(C, { type: 'key_rotated', conversation_id: C, current_key_version: 3 });
    await turn();
    expect(ws.frames).toHaveLength(1);
  });
});
