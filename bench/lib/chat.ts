// SoTalk as a client sees it: wallet sign-in, conversations, sends, sockets (docs/protocol.md), plus the
// time stamp every benchmark message carries so a receiver can compute end-to-end latency.
import { Packr } from 'msgpackr';
import WebSocket from 'ws';
import { generateWallet, SoTalkClient } from '../../client/index.js';
import { mapLimit, now } from './common.js';
import type { HttpClient, HttpResult } from './http-client.js';

export interface User {
  id: string;
  token: string;
}

export const MSGPACK_PROTOCOL = 'sotalk.msgpack.v1';
const packr = new Packr({ useRecords: false, moreTypes: false });

function json(r: HttpResult): Record<string, unknown> {
  try {
    return JSON.parse(r.body.toString('utf8')) as Record<string, unknown>;
  } catch {
    return {};
  }
}

async function call(http: HttpClient, method: string, path: string, body: unknown, token?: string, expect: number[] = [200, 201]): Promise<Record<string, unknown>> {
  const r = await http.request(method, path, body === undefined ? undefined : JSON.stringify(body), token);
  if (!expect.includes(r.status)) throw new Error(`${method} ${path}: ${r.status || r.error} ${r.body.toString('utf8').slice(0, 300)}`);
  return json(r);
}

/** The client library's `fetch`, answered by the bench's own HTTP client (its pool and timeouts). */
export function fetchThrough(http: HttpClient): typeof fetch {
  return (async (url: string, init: RequestInit = {}) => {
    const u = new URL(url);
    const token = (init.headers as Record<string, string> | undefined)?.authorization?.slice('Bearer '.length);
    const r = await http.request(init.method ?? 'GET', u.pathname + u.search, init.body === undefined ? undefined : String(init.body), token);
    if (r.status === 0) throw new TypeError(r.error ?? 'no answer');
    return new Response(r.status === 204 ? null : new Uint8Array(r.body), { status: r.status });
  }) as unknown as typeof fetch;
}

/** One new wallet signed in by the client library (WebCrypto ed25519, challenge and verify). */
export async function signIn(http: HttpClient): Promise<User> {
  // the origin is a placeholder: fetchThrough sends every request to the bench's target
  const client = new SoTalkClient({ baseUrl: 'http://host', wallet: await generateWallet(), fetch: fetchThrough(http) });
  try {
    const { token, user } = await client.signIn();
    return { id: user.id, token };
  } finally {
    client.close();
  }
}

/** Signs `n` new users in, `concurrency` at a time, printing progress for big counts. */
export async function signInMany(http: HttpClient, n: number, concurrency = 32): Promise<User[]> {
  const started = now();
  let done = 0;
  const timer = n >= 2000 ? setInterval(() => console.log(`  … ${done}/${n} users signed in`), 5000) : undefined;
  try {
    return await mapLimit(n, concurrency, async () => {
      const u = await signIn(http);
      done++;
      return u;
    });
  } finally {
    if (timer) clearInterval(timer);
    if (n >= 200) console.log(`  signed in ${n} users in ${((now() - started) / 1000).toFixed(1)} s`);
  }
}

export async function createDirect(http: HttpClient, a: User, b: User): Promise<string> {
  const r = await call(http, 'POST', '/api/v1/conversations', { type: 'direct', member_ids: [b.id] }, a.token);
  return (r.conversation as { id: string }).id;
}

export async function createGroup(http: HttpClient, owner: User, members: User[], title = 'bench'): Promise<string> {
  const r = await call(http, 'POST', '/api/v1/conversations', { type: 'group', title, member_ids: members.map((m) => m.id) }, owner.token);
  return (r.conversation as { id: string }).id;
}

export async function pageOk(http: HttpClient, user: User, conversationId: string, query: string): Promise<Record<string, unknown>> {
  return call(http, 'GET', `/api/v1/conversations/${conversationId}/messages?${query}`, undefined, user.token, [200]);
}

// ---------------------------------------------------------------------------------------------
// Message content: "@@T<performance.now() at issue>@@" then padding to the requested UTF-8 size.
// Sender and receivers live in this process, so the stamp is a shared monotonic clock.

const STAMP = Buffer.from('@@T');
const NEW_MESSAGE = Buffer.from('new_message');
const AT = 0x40;

// Chat-like filler: words of a small vocabulary in a pseudo-random order, so a message carries as
// many distinct words as real text of its size does (search indexing costs what it would).
const VOCABULARY = (
  'the be to of and a in that have it for not on with he as you do at this but his by from they we say her she or an will my one all ' +
  'would there their what so up out if about who get which go me when make can like time no just him know take people into year your ' +
  'good some could them see other than then now look only come its over think also back after use two how our work first well way even ' +
  'new want because any these give day most us meeting tomorrow deploy server message launch coffee weekend project review release ' +
  'budget design ticket update thanks please sorry great maybe later tonight office remote call team friday monday lunch'
).split(' ');
let fillerSeed = 1;

export function content(size: number, stamp: number): string {
  const head = `@@T${stamp.toFixed(3)}@@`;
  let text = head;
  while (text.length < size) {
    fillerSeed = (fillerSeed * 1103515245 + 12345) & 0x7fffffff;
    text += ' ' + VOCABULARY[(fillerSeed >>> 12) % VOCABULARY.length];
  }
  return text.length > size ? text.slice(0, Math.max(size, head.length)) : text;
}

/** The stamp of a message's content (-1 when it has none). */
export function stampOf(text: string | null): number {
  if (text === null || !text.startsWith('@@T')) return -1;
  const v = Number(text.slice(3, text.indexOf('@@', 3)));
  return Number.isFinite(v) ? v : -1;
}

/** A client-library client for a bench user signed in earlier (its token lives a day). */
export function libraryClient(baseUrl: string, user: User, timeoutMs: number, http?: HttpClient): SoTalkClient {
  return new SoTalkClient({
    baseUrl,
    ...(http ? { fetch: fetchThrough(http) } : {}),
    session: { token: user.token, expiresAt: Date.now() + 3_600_000, user: { id: user.id } as SoTalkClient['user'] & object },
    timeoutMs,
  });
}

/** For a `new_message` frame (JSON or msgpack) carrying a bench stamp: the stamp; otherwise -1. */
export function deliveryStamp(frame: Buffer): number {
  if (frame.indexOf(NEW_MESSAGE) === -1) return -1;
  const i = frame.indexOf(STAMP);
  if (i === -1) return -1;
  const j = frame.indexOf(AT, i + 3);
  if (j === -1) return -1;
  const v = Number(frame.toString('latin1', i + 3, j));
  return Number.isFinite(v) ? v : -1;
}

// ---------------------------------------------------------------------------------------------
// Sockets

export type Format = 'json' | 'msgpack';

export interface SocketOptions {
  format: Format;
  /** Source address of the TCP connection (127.0.0.x), to use more than one port range. */
  localAddress?: string;
  timeoutMs?: number;
  /** Every frame after `hello`. */
  onFrame?: (frame: Buffer, ws: WebSocket) => void;
  onClose?: (code: number) => void;
}

/** Opens /ws with a bearer token and resolves once the server's `hello` frame has arrived. */
export function openSocket(wsUrl: string, token: string, o: SocketOptions): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl, o.format === 'msgpack' ? [MSGPACK_PROTOCOL] : [], {
      headers: { authorization: `Bearer ${token}` },
      perMessageDeflate: false,
      skipUTF8Validation: true,
      handshakeTimeout: o.timeoutMs ?? 15_000,
      ...(o.localAddress ? { localAddress: o.localAddress } : {}),
    });
    let hello = false;
    const timer = setTimeout(() => {
      if (!hello) {
        ws.terminate();
        reject(new Error('no hello frame within the timeout'));
      }
    }, (o.timeoutMs ?? 15_000) + 1000);
    ws.on('message', (data: Buffer) => {
      if (hello) {
        o.onFrame?.(data, ws);
        return;
      }
      hello = true;
      clearTimeout(timer);
      const first = decodeFrame(data, o.format);
      if (first?.type !== 'hello') {
        ws.terminate();
        reject(new Error(`expected hello, got ${JSON.stringify(first).slice(0, 200)}`));
        return;
      }
      resolve(ws);
    });
    ws.on('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      reject(new Error(`upgrade refused: ${res.statusCode}`));
      ws.terminate();
    });
    ws.on('error', (err) => {
      clearTimeout(timer);
      if (!hello) reject(err);
    });
    ws.on('close', (code) => {
      clearTimeout(timer);
      if (!hello) reject(new Error(`closed before hello (${code})`));
      else o.onClose?.(code);
    });
  });
}

export function decodeFrame(data: Buffer, format: Format): Record<string, unknown> | undefined {
  try {
    return (format === 'msgpack' ? packr.unpack(data) : JSON.parse(data.toString('utf8'))) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

export function encodeFrame(frame: object, format: Format): string | Buffer {
  return format === 'msgpack' ? packr.pack(frame) : JSON.stringify(frame);
}
