// Integration tests of the event pipeline's cost and safety (issue "Send and fan-out pipeline"):
// one PUBLISH per event whatever the member count, one per group creation, none for a receipt
// that changes nothing; pub/sub payloads are sealed (no plaintext in Redis) and a forged or
// garbage message is dropped and counted. On a throwaway redis-server so commands can be counted.
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Packr } from 'msgpackr';
import { startRedis, type ThrowawayRedis } from '../helpers/redis-server.js';
import { signIn, startTestServer, type SignedInUser, type TestServer } from '../helpers/server.js';
import { openSocket, type TestSocket } from '../helpers/socket.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const CANARY = 'canary-7f3a9e-fanout-plaintext';
const MEMBERS = 24;

describe('fan-out pipeline on one Redis, two instances', () => {
  let redis: ThrowawayRedis;
  let raw: Redis;
  let tap: Redis;
  const tapped: { channel: string; payload: Buffer }[] = [];
  let A: TestServer;
  let B: TestServer;
  let users: SignedInUser[];
  const sockets: TestSocket[] = [];

  /** PUBLISH commands Redis has executed so far. */
  async function publishes(): Promise<number> {
    const info = await raw.info('commandstats');
    return Number(/cmdstat_publish:calls=(\d+)/.exec(info)?.[1] ?? 0);
  }

  /** Waits until PUBLISH has been quiet for a moment, then returns the count. */
  async function settledPublishes(): Promise<number> {
    let last = await publishes();
    for (;;) {
      await sleep(150);
      const now = await publishes();
      if (now === last) return now;
      last = now;
    }
  }

  async function metric(s: TestServer, name: string, labels = ''): Promise<number> {
    const text = await (await fetch(`${s.baseUrl}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
    return line ? Number(line.split(' ').pop()) : 0;
  }

  beforeAll(async () => {
    redis = await startRedis();
    raw = new Redis(redis.url);
    tap = new Redis(redis.url);
    await tap.psubscribe('sotalk:*');
    tap.on('pmessageBuffer', (_p: Buffer, channel: Buffer, payload: Buffer) => tapped.push({ channel: channel.toString(), payload }));
    A = await startTestServer({ env: { REDIS_URL: redis.url, RATE_LIMIT_SEND_PER_MIN: '0' } });
    B = await startTestServer({ env: { REDIS_URL: redis.url, RATE_LIMIT_SEND_PER_MIN: '0' }, database: A.database });
    users = await Promise.all(Array.from({ length: MEMBERS }, () => signIn(A.baseUrl)));
    // Half the members listen on A, half on B.
    for (const [i, u] of users.entries()) sockets.push(await openSocket((i % 2 ? B : A).baseUrl, u.token));
  }, 60_000);

  afterAll(async () => {
    await Promise.all(sockets.map((s) => s.close().catch(() => {})));
    await B?.close();
    await A?.close();
    tap?.disconnect();
    raw?.disconnect();
    await redis?.stop();
  });

  async function createGroup(owner: SignedInUser, members: SignedInUser[]): Promise<string> {
    const res = await owner.api.post('/api/v1/conversations', { type: 'group', title: 'g', member_ids: members.map((m) => m.user.id) });
    expect(res.status).toBe(201);
    return res.body.conversation.id;
  }

  it(`creating a group of ${MEMBERS} costs one PUBLISH, and every member on both instances hears of every member`, async () => {
    const before = await settledPublishes();
    const id = await createGroup(users[0]!, users.slice(1));
    for (const s of sockets) {
      await s.next((f) => f.type === 'member_added' && f.conversation_id === id && f.user_id === users[MEMBERS - 1]!.user.id);
    }
    expect((await settledPublishes()) - before).toBe(1);
  });

  it('a message to the group is one PUBLISH, reaches every member on both instances once, and Redis never sees its plaintext', async () => {
    const id = await createGroup(users[0]!, users.slice(1));
    await Promise.all(sockets.map((s) => s.next((f) => f.type === 'member_added' && f.conversation_id === id && f.user_id === users[MEMBERS - 1]!.user.id)));
    await sleep(200); // subscriptions follow the membership change
    const before = await settledPublishes();
    const publishedBefore = await metric(A, 'sotalk_redis_publishes_total', 'channel="conversation"');
    const tappedBefore = tapped.length;
    const res = await users[1]!.api.post('/api/v1/messages', { conversation_id: id, content: `hello ${CANARY}` });
    expect(res.status).toBe(201);
    for (const s of sockets) {
      const frame = await s.next((f) => f.type === 'new_message' && f.message.id === res.body.message.id);
      expect(frame.message.content).toBe(`hello ${CANARY}`);
    }
    expect((await settledPublishes()) - before).toBe(1);
    expect((await metric(A, 'sotalk_redis_publishes_total', 'channel="conversation"')) - publishedBefore).toBe(1);
    for (const s of sockets) expect(s.frames.filter((f) => f.type === 'new_message' && f.message.id === res.body.message.id)).toHaveLength(1);
    const fresh = tapped.slice(tappedBefore);
    expect(fresh.length).toBe(1);
    for (const { payload } of tapped) {
      expect(payload.includes(Buffer.from(CANARY))).toBe(false);
      expect(payload.includes(Buffer.from('hello'))).toBe(false);
    }
  });

  it('a receipt that changes nothing publishes nothing and sends no frame', async () => {
    const id = await createGroup(users[0]!, [users[1]!]);
    const sent = await users[0]!.api.post('/api/v1/messages', { conversation_id: id, content: 'read me' });
    expect(sent.status).toBe(201);
    const first = await users[1]!.api.post(`/api/v1/conversations/${id}/read`, { seq: 1 });
    expect(first.status).toBe(200);
    await sockets[0]!.next((f) => f.type === 'receipt' && f.conversation_id === id && f.read_seq === 1);
    const before = await settledPublishes();
    const receiptsBefore = sockets[0]!.frames.filter((f) => f.type === 'receipt' && f.conversation_id === id).length;
    for (let i = 0; i < 20; i++) expect((await users[1]!.api.post(`/api/v1/conversations/${id}/read`, { seq: 1 })).status).toBe(200);
    expect((await settledPublishes()) - before).toBe(0);
    expect(sockets[0]!.frames.filter((f) => f.type === 'receipt' && f.conversation_id === id).length).toBe(receiptsBefore);
  });

  it('forged, garbage and replayed pub/sub messages are dropped and counted; the instance keeps delivering', async () => {
    const id = await createGroup(users[0]!, [users[1]!]);
    await sockets[1]!.next((f) => f.type === 'member_added' && f.conversation_id === id && f.user_id === users[1]!.user.id);
    await sleep(200);
    const droppedBefore = await metric(B, 'sotalk_pubsub_received_total', 'outcome="dropped"');
    const channel = `sotalk:c:{${id}}`;
    const fake = { type: 'new_message', message: { id: '00000000-0000-4000-8000-000000000000', conversation_id: id, seq: 99, content: 'forged' } };
    // An unsealed event (what the server published before payloads were sealed), garbage, and a
    // real sealed payload moved to another channel (its AAD binds it to the original one).
    await raw.publish(channel, new Packr({ useRecords: false }).pack({ o: 'someone', e: fake }));
    await raw.publish(channel, Buffer.from([1, 2, 3, 4, 5]));
    await raw.publish(channel, Buffer.alloc(200, 1));
    const sealed = tapped.find((t) => t.channel.startsWith('sotalk:c:') && t.channel !== channel);
    expect(sealed).toBeDefined();
    await raw.publish(channel, sealed!.payload);
    await sleep(300);
    expect((await metric(B, 'sotalk_pubsub_received_total', 'outcome="dropped"')) - droppedBefore).toBeGreaterThanOrEqual(4);
    expect(sockets[1]!.frames.some((f) => f.type === 'new_message' && f.message.content === 'forged')).toBe(false);
    const ok = await users[0]!.api.post('/api/v1/messages', { conversation_id: id, content: 'still delivered' });
    await sockets[1]!.next((f) => f.type === 'new_message' && f.message.id === ok.body.message.id);
  });

  it('a member added through A while online only on B starts receiving at once; a removed one stops', async () => {
    const id = await createGroup(users[0]!, []);
    const joiner = users[3]!; // socket on B
    expect((await users[0]!.api.post(`/api/v1/conversations/${id}/members`, { user_id: joiner.user.id })).status).toBe(200);
    await sockets[3]!.next((f) => f.type === 'member_added' && f.conversation_id === id && f.user_id === joiner.user.id);
    await sleep(200);
    const m1 = await users[0]!.api.post('/api/v1/messages', { conversation_id: id, content: 'welcome' });
    await sockets[3]!.next((f) => f.type === 'new_message' && f.message.id === m1.body.message.id);
    expect((await users[0]!.api.delete(`/api/v1/conversations/${id}/members/${joiner.user.id}`)).status).toBe(204);
    await sockets[3]!.next((f) => f.type === 'member_removed' && f.conversation_id === id && f.user_id === joiner.user.id);
    await sleep(200);
    const m2 = await users[0]!.api.post('/api/v1/messages', { conversation_id: id, content: 'after removal' });
    await sockets[0]!.next((f) => f.type === 'new_message' && f.message.id === m2.body.message.id);
    await sleep(300);
    expect(sockets[3]!.frames.some((f) => f.type === 'new_message' && f.message.id === m2.body.message.id)).toBe(false);
  });
});
