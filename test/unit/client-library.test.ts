// The client library (client/) on its own: the endpoint table against docs/openapi.json, the
// generated types, wallet signatures, HTTP retries and token renewal against a scripted fetch,
// and the live stream's ordering, gap filling, backpressure and send retries against a scripted socket.
import { execFile } from 'node:child_process';
import { createPublicKey, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import bs58 from 'bs58';
import { describe, expect, it } from 'vitest';
import {
  ENDPOINTS,
  generateWallet,
  SoTalkClient,
  SoTalkError,
  walletFromSeed,
  type LiveConnection,
} from '../../client/index.js';
import type { Message, WebSocketLike } from '../../client/types.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const openapi = JSON.parse(readFileSync(`${ROOT}docs/openapi.json`, 'utf8'));

describe('endpoints and types', () => {
  it('the endpoint table names every operation of docs/openapi.json with its method, path and authentication', () => {
    const documented: Record<string, { method: string; path: string; auth: boolean }> = {};
    for (const [path, item] of Object.entries<any>(openapi.paths)) {
      for (const method of ['get', 'post', 'patch', 'delete', 'put']) {
        const op = item[method];
        if (!op) continue;
        const security = op.security ?? openapi.security ?? [];
        documented[op.operationId] = { method: method.toUpperCase(), path, auth: security.length > 0 };
      }
    }
    const table = Object.fromEntries(Object.entries(ENDPOINTS).map(([id, e]) => [id, { method: e.method, path: e.path, auth: e.auth }]));
    expect(table).toEqual(documented);
  });

  it('client/openapi.d.ts is what openapi-typescript makes of docs/openapi.json today (npm run client:types)', async () => {
    const run = promisify(execFile)(process.execPath, [`${ROOT}node_modules/openapi-typescript/bin/cli.js`, 'docs/openapi.json', '-o', 'client/openapi.d.ts', '--check'], { cwd: ROOT });
    await expect(run).resolves.toBeDefined();
  });

  it('calls are typed from the document (checked by npm run typecheck)', () => {
    const client = new SoTalkClient({ baseUrl: 'http://127.0.0.1:1', session: { token: 't', expiresAt: Date.now() + 60_000, user: {} as never } });
    const typed = async () => {
      const page = await client.messages('id', { after_seq: 3 });
      const seq: number = page.messages[0]!.seq;
      // @ts-expect-error conversation_id is a string
      await client.sendMessage({ conversation_id: 1, content: 'x' });
      // @ts-expect-error getUser needs its path parameter
      await client.call('getUser', {});
      const { features } = await client.call('getFeatures');
      const search: boolean = features.search;
      return [seq, search];
    };
    expect(typeof typed).toBe('function');
    client.close();
  });
});

describe('wallet', () => {
  it('signs with ed25519: node:crypto verifies the signature against the address', async () => {
    const wallet = await generateWallet();
    const raw = bs58.decode(wallet.address);
    expect(raw).toHaveLength(32);
    const key = createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), raw]), format: 'der', type: 'spki' });
    const text = 'Sign in to SoTalk\nnonce: abc';
    expect(verify(null, Buffer.from(text), key, bs58.decode(await wallet.sign(text)))).toBe(true);
    expect(verify(null, Buffer.from(text + '!'), key, bs58.decode(await wallet.sign(text)))).toBe(false);
  });

  it('a seed gives always the same address (RFC 8032 test 1)', async () => {
    const seed = Buffer.from('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60', 'hex');
    const wallet = await walletFromSeed(seed);
    expect(Buffer.from(bs58.decode(wallet.address)).toString('hex')).toBe('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a');
    expect(Buffer.from(bs58.decode(await wallet.sign(''))).toString('hex')).toBe(
      'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
    );
    await expect(walletFromSeed(new Uint8Array(31))).rejects.toThrow(/32 bytes/);
  });
});

// ---------------------------------------------------------------------------------------------
// A scripted server: each request goes to `handle`, which answers [status, body, headers].

type Answer = [number, unknown, Record<string, string>?];
interface Seen {
  method: string;
  path: string;
  body: any;
  token: string | undefined;
}

function scripted(handle: (req: Seen, n: number) => Answer | Promise<Answer> | 'network') {
  const seen: Seen[] = [];
  const fetchImpl = (async (url: string, init: RequestInit) => {
    const u = new URL(url);
    const req: Seen = {
      method: String(init.method),
      path: u.pathname + u.search,
      body: init.body ? JSON.parse(String(init.body)) : undefined,
      token: (init.headers as Record<string, string>).authorization?.slice(7),
    };
    seen.push(req);
    const answer = await handle(req, seen.length);
    if (answer === 'network') throw new TypeError('fetch failed', { cause: new Error('ECONNREFUSED') });
    const [status, body, headers = {}] = answer;
    return new Response(body === undefined ? null : JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
  }) as unknown as typeof fetch;
  return { seen, fetchImpl };
}

const USER = { id: '00000000-0000-4000-8000-000000000001', wallet: 'w', display_name: null, created_at: '2026-01-01T00:00:00.000Z' };
let tokens = 0;
/** Answers sign-in (challenge, verify) with tokens t1, t2, … living `ttlMs`. */
function signInAnswer(req: Seen, ttlMs = 3_600_000): Answer | undefined {
  if (req.path === '/api/v1/auth/challenge') return [200, { nonce: 'n', message: `sign ${req.body.wallet}`, expires_at: new Date(Date.now() + 300_000).toISOString() }];
  if (req.path === '/api/v1/auth/verify') return [200, { token: `t${++tokens}`, token_type: 'Bearer', expires_at: new Date(Date.now() + ttlMs).toISOString(), user: USER }];
  return undefined;
}
const fast = { retryDelayMs: 1, maxRetryDelayMs: 20 };
const errorBody = (code: string, message: string, field?: string) => ({ error: { code, message, ...(field ? { field } : {}) } });
const message = (conversation: string, seq: number, content = `m${seq}`): Message =>
  ({ id: `${conversation}-${seq}`, conversation_id: conversation, sender_id: USER.id, seq, content, content_type: 'text' }) as Message;

describe('HTTP calls', () => {
  it('signs in with the wallet and sends the token; a server error becomes a SoTalkError with code and field', async () => {
    const { seen, fetchImpl } = scripted((req) => signInAnswer(req) ?? [400, errorBody('invalid_request', 'limit must be between 1 and 200', 'limit'), { 'x-request-id': 'rq-1' }]);
    const wallet = await generateWallet();
    const client = new SoTalkClient({ baseUrl: 'http://host', wallet, fetch: fetchImpl, ...fast });
    const err = await client.listConversations({ limit: 500 }).catch((e) => e);
    expect(err).toBeInstanceOf(SoTalkError);
    expect(err).toMatchObject({ code: 'invalid_request', field: 'limit', status: 400, requestId: 'rq-1', message: 'limit must be between 1 and 200' });
    expect(seen.map((s) => s.path)).toEqual(['/api/v1/auth/challenge', '/api/v1/auth/verify', '/api/v1/conversations?limit=500']);
    expect(seen[1]!.body.signature).toBe(await wallet.sign(`sign ${wallet.address}`));
    expect(seen[2]!.token).toMatch(/^t\d+$/);
    expect(client.user).toEqual(USER);
    client.close();
  });

  it('retries a send after a lost answer with the same client_message_id; the answer is the stored message', async () => {
    const stored = message('c', 1, 'first');
    const { seen, fetchImpl } = scripted((req, n) => signInAnswer(req) ?? (n === 3 ? 'network' : n === 4 ? [503, errorBody('unavailable', 'down'), { 'retry-after': '0' }] : [200, { message: stored }]));
    const client = new SoTalkClient({ baseUrl: 'http://host', wallet: await generateWallet(), fetch: fetchImpl, ...fast });
    await expect(client.sendMessage({ conversation_id: 'c', content: 'retry' })).resolves.toEqual(stored);
    const sends = seen.filter((s) => s.path === '/api/v1/messages');
    expect(sends).toHaveLength(3);
    expect(new Set(sends.map((s) => s.body.client_message_id)).size).toBe(1);
    expect(sends[0]!.body.client_message_id).toMatch(/^[0-9a-f-]{36}$/);
    // a second send gets a new id
    await client.sendMessage({ conversation_id: 'c', content: 'next' });
    expect(seen.at(-1)!.body.client_message_id).not.toBe(sends[0]!.body.client_message_id);
    client.close();
  });

  it('does not repeat a request that is not safe to repeat after a server failure, and gives up after `retries`', async () => {
    const { seen, fetchImpl } = scripted((req) => signInAnswer(req) ?? [503, errorBody('unavailable', 'database unreachable'), { 'retry-after': '0' }]);
    const client = new SoTalkClient({ baseUrl: 'http://host', wallet: await generateWallet(), fetch: fetchImpl, retries: 2, ...fast });
    await expect(client.createConversation({ type: 'group', title: 'g', member_ids: [] })).rejects.toMatchObject({ code: 'unavailable', status: 503 });
    expect(seen.filter((s) => s.path === '/api/v1/conversations')).toHaveLength(1);
    await expect(client.getConversation('x')).rejects.toMatchObject({ code: 'unavailable' });
    expect(seen.filter((s) => s.path === '/api/v1/conversations/x')).toHaveLength(3);
    // but a 429 refused it before anything happened: that one is retried
    let limited = 0;
    const second = scripted((req) => signInAnswer(req) ?? (limited++ === 0 ? [429, errorBody('rate_limited', 'slow down'), { 'retry-after': '0' }] : [201, { conversation: { id: 'g' } }]));
    const other = new SoTalkClient({ baseUrl: 'http://host', wallet: await generateWallet(), fetch: second.fetchImpl, ...fast });
    await expect(other.createConversation({ type: 'group', title: 'g', member_ids: [] })).resolves.toEqual({ id: 'g' });
    client.close();
    other.close();
  });

  it('a refused token is renewed by signing in again, once, and the call goes through', async () => {
    const { seen, fetchImpl } = scripted((req) => signInAnswer(req) ?? (req.token === 't_old' || req.token === undefined ? [401, errorBody('unauthorized', 'expired')] : [200, { user: USER }]));
    const client = new SoTalkClient({
      baseUrl: 'http://host',
      wallet: await generateWallet(),
      session: { token: 't_old', expiresAt: Date.now() + 3_600_000, user: USER },
      fetch: fetchImpl,
      ...fast,
    });
    await expect(client.me()).resolves.toEqual(USER);
    expect(seen.map((s) => `${s.path} ${s.token ?? '-'}`)).toEqual([
      '/api/v1/users/me t_old',
      '/api/v1/auth/challenge -',
      '/api/v1/auth/verify -',
      expect.stringMatching(/^\/api\/v1\/users\/me t\d+$/),
    ]);
    client.close();
  });

  it('renews the token before it expires, by itself', async () => {
    const { seen, fetchImpl } = scripted((req) => signInAnswer(req, 2_400) ?? [404, errorBody('not_found', 'no')]);
    const client = new SoTalkClient({ baseUrl: 'http://host', wallet: await generateWallet(), fetch: fetchImpl, renewBeforeMs: 1_000 });
    const first = await client.signIn();
    const renewed = new Promise((resolve) => client.onSession(resolve));
    const second = (await renewed) as { token: string; expiresAt: number };
    expect(second.token).not.toBe(first.token);
    expect(second.expiresAt).toBeGreaterThan(first.expiresAt);
    expect(seen.filter((s) => s.path === '/api/v1/auth/verify')).toHaveLength(2);
    client.close();
  });
});

// ---------------------------------------------------------------------------------------------
// A scripted socket: the test plays the server.

class FakeSocket implements WebSocketLike {
  readyState = 0;
  binaryType = 'blob';
  onopen: ((e: any) => void) | null = null;
  onmessage: ((e: { data: any }) => void) | null = null;
  onclose: ((e: { code: number; reason: string }) => void) | null = null;
  onerror: ((e: any) => void) | null = null;
  sent: any[] = [];
  constructor(readonly token: string) {}
  send(data: string | Uint8Array) {
    this.sent.push(JSON.parse(String(data)));
  }
  close(code = 1000) {
    this.drop(code);
  }
  /** The server side. */
  open() {
    this.readyState = 1;
    this.push({ type: 'hello', user_id: USER.id });
  }
  push(frame: unknown) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  drop(code = 1006) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason: '' });
  }
}

interface Harness {
  live: LiveConnection;
  sockets: FakeSocket[];
  history: Map<string, Message[]>;
  seen: Seen[];
  socket(): Promise<FakeSocket>;
  take(n: number): Promise<Message[]>;
}

/** A live connection on a scripted server whose history is `history` (conversation → messages). */
async function harness(history: Map<string, Message[]>, options: Record<string, unknown> = {}): Promise<Harness> {
  const sockets: FakeSocket[] = [];
  let waiting: ((s: FakeSocket) => void) | undefined;
  const { seen, fetchImpl } = scripted((req) => {
    const signedIn = signInAnswer(req);
    if (signedIn) return signedIn;
    const url = new URL(req.path, 'http://host');
    if (url.pathname === '/api/v1/conversations') {
      return [200, { conversations: [...history].map(([id, list]) => ({ id, last_seq: list.length })), next_cursor: null }];
    }
    const m = /^\/api\/v1\/conversations\/([^/]+)\/messages$/.exec(url.pathname);
    if (m) {
      const after = Number(url.searchParams.get('after_seq'));
      const limit = Number(url.searchParams.get('limit'));
      const rest = (history.get(m[1]!) ?? []).filter((x) => x.seq > after);
      return [200, { messages: rest.slice(0, limit), has_more: rest.length > limit }];
    }
    return [404, errorBody('not_found', 'no')];
  });
  const client = new SoTalkClient({ baseUrl: 'http://host', wallet: await generateWallet(), fetch: fetchImpl, ...fast });
  const live = client.live({
    webSocket: (_url, _protocols, token) => {
      const s = new FakeSocket(token);
      sockets.push(s);
      queueMicrotask(() => waiting?.(s));
      return s;
    },
    reconnectDelayMs: 1,
    maxReconnectDelayMs: 5,
    gapWaitMs: 5,
    pageSize: 3,
    ...options,
  });
  const h: Harness = {
    live,
    sockets,
    history,
    seen,
    socket: () => new Promise((resolve) => (waiting = (s) => ((waiting = undefined), resolve(s)))),
    async take(n) {
      const out: Message[] = [];
      while (out.length < n) out.push((await live.next()).value as Message);
      return out;
    },
  };
  return h;
}

const seqs = (list: Message[]) => list.map((m) => `${m.conversation_id}#${m.seq}`);

describe('live stream', () => {
  it('starts at each conversation’s newest message and delivers later ones once, in seq order, filling gaps from history', async () => {
    const history = new Map([['a', [message('a', 1), message('a', 2)]]]);
    const h = await harness(history);
    const socketReady = h.socket();
    const started = h.live.start();
    const ws = await socketReady;
    ws.open();
    await started;
    // a#3 to a#6 are stored; the events arrive out of order, with a duplicate and one lost (a#5)
    history.get('a')!.push(message('a', 3), message('a', 4), message('a', 5), message('a', 6));
    for (const seq of [4, 3, 4, 6]) ws.push({ type: 'new_message', message: message('a', seq) });
    expect(seqs(await h.take(4))).toEqual(['a#3', 'a#4', 'a#5', 'a#6']);
    expect(h.live.queued).toBe(0);
    expect(h.live.positions()).toEqual({ a: 6 });
    // a new conversation starts at its first message
    ws.push({ type: 'new_message', message: message('b', 1) });
    expect(seqs(await h.take(1))).toEqual(['b#1']);
    h.live.close();
    await expect(h.live.next()).resolves.toEqual({ done: true, value: undefined });
  });

  it('after a dropped connection it reconnects and catches up every conversation from history, without repeating a message', async () => {
    const history = new Map([
      ['a', [message('a', 1)]],
      ['b', [] as Message[]],
    ]);
    const h = await harness(history, { positions: { a: 0 } });
    let next = h.socket();
    const started = h.live.start();
    let ws = await next;
    ws.open();
    await started;
    expect(seqs(await h.take(1))).toEqual(['a#1']);
    ws.push({ type: 'new_message', message: message('b', 1) });
    history.get('b')!.push(message('b', 1));
    expect(seqs(await h.take(1))).toEqual(['b#1']);
    next = h.socket();
    ws.drop();
    expect(h.live.state).toBe('offline');
    // while it was away: 7 messages in a (more than two pages), 2 in b
    for (let seq = 2; seq <= 8; seq++) history.get('a')!.push(message('a', seq));
    history.get('b')!.push(message('b', 2), message('b', 3));
    ws = await next;
    expect(ws).not.toBe(h.sockets[0]);
    ws.open();
    ws.push({ type: 'new_message', message: message('a', 8) }); // also in history: once only
    const got = await h.take(9);
    expect(seqs(got.filter((m) => m.conversation_id === 'a'))).toEqual(['a#2', 'a#3', 'a#4', 'a#5', 'a#6', 'a#7', 'a#8']);
    expect(seqs(got.filter((m) => m.conversation_id === 'b'))).toEqual(['b#2', 'b#3']);
    await new Promise((r) => setTimeout(r, 50));
    expect(h.live.queued).toBe(0);
    h.live.close();
  });

  it('a consumer that falls behind is told, and is then fed from history: nothing is lost, nothing is buffered without bound', async () => {
    const history = new Map([['a', [] as Message[]]]);
    const h = await harness(history, { highWaterMark: 4, lowWaterMark: 1 });
    const lagging: number[] = [];
    h.live.on('lagging', ({ queued }) => lagging.push(queued));
    const next = h.socket();
    const started = h.live.start();
    const ws = await next;
    ws.open();
    await started;
    for (let seq = 1; seq <= 20; seq++) {
      history.get('a')!.push(message('a', seq));
      ws.push({ type: 'new_message', message: message('a', seq) });
    }
    expect(lagging).toEqual([4]);
    expect(h.live.queued).toBe(4);
    const got = await h.take(20);
    expect(seqs(got)).toEqual(Array.from({ length: 20 }, (_, i) => `a#${i + 1}`));
    expect(h.seen.some((s) => s.path.includes('after_seq=4'))).toBe(true);
    h.live.close();
  });

  it('a send cut off by a disconnect is sent again after reconnecting under the same client_message_id; errors carry code and field', async () => {
    const h = await harness(new Map());
    let next = h.socket();
    const started = h.live.start();
    let ws = await next;
    ws.open();
    await started;
    const sent = h.live.send({ conversation_id: 'a', content: 'hi' });
    const first = ws.sent.find((f) => f.type === 'send');
    expect(first).toMatchObject({ type: 'send', conversation_id: 'a', content: 'hi', client_message_id: expect.any(String) });
    next = h.socket();
    ws.drop();
    ws = await next;
    ws.open();
    const again = ws.sent.find((f) => f.type === 'send');
    expect(again.client_message_id).toBe(first.client_message_id);
    ws.push({ type: 'ack', request_id: again.request_id, message: message('a', 1, 'hi') });
    await expect(sent).resolves.toMatchObject({ seq: 1, content: 'hi' });
    expect(seqs(await h.take(1))).toEqual(['a#1']);

    const refused = h.live.send({ conversation_id: 'a', content: '' });
    const frame = ws.sent.at(-1);
    ws.push({ type: 'error', request_id: frame.request_id, error: { code: 'invalid_request', message: 'content must not be empty', field: 'content' } });
    await expect(refused).rejects.toMatchObject({ name: 'SoTalkError', code: 'invalid_request', field: 'content' });
    const pending = h.live.send({ conversation_id: 'a', content: 'late' });
    h.live.close();
    await expect(pending).rejects.toMatchObject({ code: 'closed' });
  });

  it('a socket closed because its token expired (4001) signs in again and reconnects with the new token', async () => {
    const h = await harness(new Map());
    let next = h.socket();
    const started = h.live.start();
    const ws = await next;
    ws.open();
    await started;
    next = h.socket();
    ws.drop(4001);
    const second = await next;
    expect(second.token).not.toBe(ws.token);
    second.open();
    expect(h.live.state).toBe('live');
    h.live.close();
  });
});
