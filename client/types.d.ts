// Types of the library that are not in the generated openapi.d.ts: derived request and answer
// types per operation, socket frames, options. Type-only: nothing here exists at run time.
import type { components, operations } from './openapi.js';

export type Schemas = components['schemas'];
export type Message = Schemas['Message'];
export type Conversation = Schemas['Conversation'];
export type ConversationListItem = Schemas['ConversationListItem'];
export type User = Schemas['User'];
export type SendMessageRequest = Schemas['SendMessageRequest'];
export type OperationId = keyof operations;

/** The server's error codes plus the library's own transport codes. */
export type ErrorCode = Schemas['ErrorCode'] | 'network' | 'timeout' | 'closed' | 'consumer_lagging';

export interface Endpoint {
  method: 'GET' | 'POST' | 'PATCH' | 'DELETE';
  path: string;
  auth: boolean;
  idempotent: boolean;
}

type Params<K extends OperationId> = operations[K]['parameters'];
type JsonBody<R> = R extends { content: { 'application/json': infer B } } ? B : never;

/** What a call of operation K takes: path and query parameters, and the JSON body. */
export type RequestOf<K extends OperationId> = (Params<K> extends { path: infer P } ? ([P] extends [undefined | never] ? { path?: never } : { path: P }) : { path?: never }) &
  (Params<K> extends { query?: infer Q } ? ([Q] extends [undefined | never] ? { query?: never } : { query?: Q }) : { query?: never }) &
  (operations[K] extends { requestBody: infer B } ? { body: JsonBody<B> } : operations[K] extends { requestBody?: infer B } ? ([B] extends [undefined | never] ? { body?: never } : { body?: JsonBody<B> }) : { body?: never });

type Responses<K extends OperationId> = operations[K]['responses'];
/** What a successful call of operation K answers (the JSON body; undefined for 204; text for /metrics). */
export type AnswerOf<K extends OperationId> = K extends 'metrics'
  ? string
  : Responses<K> extends { 200: infer R }
    ? JsonBody<R> | (Responses<K> extends { 201: infer C } ? JsonBody<C> : never)
    : Responses<K> extends { 201: infer R }
      ? JsonBody<R>
      : undefined;

/** Signs sign-in challenges: an ed25519 public key in base58 and its signer. */
export interface Wallet {
  address: string;
  /** base58 of the 64-byte ed25519 signature of `text` (UTF-8). */
  sign(text: string): Promise<string>;
}

export interface Session {
  token: string;
  /** Epoch milliseconds. */
  expiresAt: number;
  user: User;
}

export interface ClientOptions {
  /** The server, e.g. http://localhost:8080. */
  baseUrl: string;
  /** Signs in (and renews the token) with this wallet. Without it, pass `session`. */
  wallet?: Wallet;
  /** A token obtained elsewhere; without a wallet it cannot be renewed. */
  session?: Session;
  /** Renew the token this long before it expires (default 5 minutes, at most half its life). */
  renewBeforeMs?: number;
  /** Per-attempt timeout of an HTTP call (default 10 s). */
  timeoutMs?: number;
  /** Further attempts after a transient failure (default 4). */
  retries?: number;
  /** First retry delay; doubles per attempt, with jitter (default 200 ms). */
  retryDelayMs?: number;
  /** Longest retry delay (default 5 s), a Retry-After included. */
  maxRetryDelayMs?: number;
  /** fetch to use (default globalThis.fetch). */
  fetch?: typeof fetch;
}

export interface Codec {
  /** Subprotocol offered, or undefined for JSON. */
  protocol: string | undefined;
  encode(frame: unknown): string | Uint8Array;
  decode(data: string | ArrayBuffer | Uint8Array): any;
}

export interface WebSocketLike {
  readonly readyState: number;
  binaryType: string;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: any }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: any) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketFactory = (url: string, protocols: string[], token: string) => WebSocketLike;

export interface LiveOptions {
  /** `json` (default) or `msgpack` (sotalk.msgpack.v1). */
  encoding?: 'json' | 'msgpack';
  /** msgpack encoder/decoder; default msgpackr, imported on first use (Node). Browsers pass one. */
  msgpack?: { pack(value: unknown): Uint8Array; unpack(data: Uint8Array): any };
  /** Opens the socket; default: globalThis.WebSocket with ?token=, else the `ws` package with an Authorization header. */
  webSocket?: WebSocketFactory;
  /**
   * Where each conversation's stream starts: the last seq already seen, per conversation id
   * (e.g. saved from a previous run). Conversations not named start at their newest message
   * when the connection starts; conversations that appear later start at their first.
   */
  positions?: Record<string, number>;
  /** Messages waiting for the consumer above which it is told it is behind (default 10 000). */
  highWaterMark?: number;
  /** Messages waiting below which fetching resumes (default highWaterMark / 2). */
  lowWaterMark?: number;
  /** Reconnect delays: first, doubling with jitter up to max (default 250 ms, 10 s). */
  reconnectDelayMs?: number;
  maxReconnectDelayMs?: number;
  /** Application pings; no frame for twice this long means a dead connection (default 25 s). */
  pingIntervalMs?: number;
  /** How long an out-of-order message waits for its predecessor before history is read (default 200 ms). */
  gapWaitMs?: number;
  /** How long a connection may take to say hello before it is given up and retried (default 10 s). */
  connectTimeoutMs?: number;
  /** How long a send may take, reconnects included (default 30 s). */
  sendTimeoutMs?: number;
  /** Messages per history page while catching up (1–200, default 200). */
  pageSize?: number;
}

export type LiveState = 'connecting' | 'live' | 'offline' | 'closed';

/** A server event other than new_message (which the message stream carries). */
export type LiveEvent = { type: string; conversation_id?: string; [key: string]: unknown };

export interface LiveEvents {
  state: (state: LiveState) => void;
  /** Every server event, new_message included, as it arrives (best effort, not ordered). */
  event: (event: LiveEvent) => void;
  /** The consumer has `queued` messages waiting: the stream stops reading ahead until it drains. */
  lagging: (info: { queued: number }) => void;
  /** A problem the connection recovers from by itself (a failed catch-up, a refused socket). */
  error: (err: Error) => void;
}
