import { randomUUID } from 'node:crypto';
import { ApiError } from '../errors.js';
import type { Logger } from '../log.js';
import { errorReply } from '../http/router.js';
import type { InFlight } from '../http/in-flight.js';
import type { TemplatedApp, WebSocket } from '../http/uws.js';
import type { AuthService } from '../services/auth.js';
import type { ConversationService } from '../services/conversations.js';
import type { MessageService } from '../services/messages.js';
import type { RateLimits } from '../services/rate-limiter.js';
import { parseInput } from '../http/validation.js';
import { toSendInput } from '../http/messages-routes.js';
import type { EventBus } from './fanout.js';
import type { SocketHub } from './hub.js';
import { MSGPACK_PROTOCOL, clientFrame, decodeFrame, packr, requestIdOf, type ClientFrame } from './protocol.js';

interface SocketData {
  id: string;
  userId: string;
  msgpack: boolean;
  closed: boolean;
  /** When the token the socket was opened with expires (ms, service clock). */
  expiresAtMs: number | undefined;
  expiry?: NodeJS.Timeout;
}

export interface SocketServerOptions {
  auth: AuthService;
  messages: MessageService;
  conversations: ConversationService;
  bus: EventBus;
  hub: SocketHub;
  logger: Logger;
  maxFrameBytes: number;
  maxBufferedBytes: number;
  idleTimeoutS?: number;
  /** `typing`, per user (sends, receipts: counted by the services). */
  limits: RateLimits;
  inFlight?: InFlight;
  onUnavailable?: () => void;
  onConnections?: (delta: number) => void;
  onFrames?: (direction: 'in' | 'out', count: number) => void;
}

/** The /ws endpoint (docs/protocol.md): auth before upgrade, JSON or msgpack frames, sends, receipts, typing. */
export class SocketServer {
  readonly #o: SocketServerOptions;
  readonly #sockets = new Set<WebSocket<SocketData>>();

  constructor(options: SocketServerOptions) {
    this.#o = options;
  }

  get connections(): number {
    return this.#sockets.size;
  }

  mount(app: TemplatedApp): void {
    const o = this.#o;
    app.ws<SocketData>('/ws', {
      // uWS drops larger frames without a close frame; frames between the two limits get 1009.
      maxPayloadLength: Math.min(Math.max(2 * o.maxFrameBytes + 64 * 1024, 4 * 1024 * 1024), 512 * 1024 * 1024),
      maxBackpressure: o.maxBufferedBytes,
      closeOnBackpressureLimit: 1,
      idleTimeout: o.idleTimeoutS ?? 60,
      sendPingsAutomatically: true,
      upgrade: (res, req, context) => {
        const header = req.getHeader('authorization');
        const query = new URLSearchParams(req.getQuery() ?? '');
        const token = /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1] ?? query.get('token') ?? '';
        const offered = req.getHeader('sec-websocket-protocol').split(',').map((p) => p.trim()).filter(Boolean);
        const key = req.getHeader('sec-websocket-key');
        const extensions = req.getHeader('sec-websocket-extensions');
        let userId: string;
        let expiresAtMs: number | undefined;
        try {
          ({ id: userId, expiresAtMs } = o.auth.authenticate(token));
        } catch (err) {
          const message = err instanceof ApiError ? err.message : 'invalid token';
          res.cork(() => {
            res.writeStatus('401 Unauthorized').writeHeader('content-type', 'application/json').end(JSON.stringify({ error: { code: 'unauthorized', message } }));
          });
          return;
        }
        const msgpack = offered.includes(MSGPACK_PROTOCOL);
        res.upgrade<SocketData>({ id: randomUUID(), userId, msgpack, closed: false, expiresAtMs }, key, msgpack ? MSGPACK_PROTOCOL : '', extensions, context);
      },
      open: (ws) => {
        const data = ws.getUserData();
        this.#sockets.add(ws);
        o.onConnections?.(1);
        this.#watchExpiry(ws, data);
        // hello once the socket is subscribed to the user's conversations: every later event reaches it
        void o.hub.attach(ws, data.userId).then(() => this.#reply(ws, data, { type: 'hello', user_id: data.userId }));
      },
      message: (ws, message, isBinary) => {
        o.onFrames?.('in', 1);
        if (message.byteLength > o.maxFrameBytes) {
          ws.end(1009, 'frame too large');
          return;
        }
        const data = ws.getUserData();
        if (this.#expired(ws, data)) return;
        let raw: unknown;
        let frame: ClientFrame;
        try {
          raw = decodeFrame(message, isBinary, data.msgpack);
          frame = parseInput(clientFrame, raw);
        } catch (err) {
          this.#replyError(ws, data, requestIdOf(raw), err);
          return;
        }
        if (o.inFlight?.draining) {
          this.#replyError(ws, data, frame.request_id, new ApiError('unavailable', 'server is shutting down'));
          return;
        }
        o.inFlight?.start();
        void this.#handle(ws, data, frame)
          .catch((err: unknown) => this.#replyError(ws, data, frame.request_id, err))
          .finally(() => o.inFlight?.end());
      },
      close: (ws) => {
        const data = ws.getUserData();
        data.closed = true;
        if (data.expiry) clearTimeout(data.expiry);
        this.#sockets.delete(ws);
        o.hub.detach(ws, data.userId);
        o.onConnections?.(-1);
      },
    });
  }

  /** A socket lives as long as its token: at expiry an `error` frame, then close 4001. */
  #watchExpiry(ws: WebSocket<SocketData>, data: SocketData): void {
    if (data.expiresAtMs === undefined || data.closed) return;
    // setTimeout holds at most 2^31 - 1 ms (~24.8 days): longer tokens are checked again then
    const delay = Math.min(Math.max(0, data.expiresAtMs - this.#o.auth.now()), 2 ** 31 - 1);
    data.expiry = setTimeout(() => {
      if (!this.#expired(ws, data)) this.#watchExpiry(ws, data);
    }, delay);
    data.expiry.unref();
  }

  /** Closes the socket (after an `error` frame) when its token has expired; true when it did. */
  #expired(ws: WebSocket<SocketData>, data: SocketData): boolean {
    if (data.closed || data.expiresAtMs === undefined || this.#o.auth.now() < data.expiresAtMs) return false;
    this.#reply(ws, data, { type: 'error', request_id: null, error: { code: 'unauthorized', message: 'token expired; reconnect with a fresh token' } });
    ws.end(4001, 'token expired');
    return true;
  }

  async #handle(ws: WebSocket<SocketData>, data: SocketData, frame: ClientFrame): Promise<void> {
    const o = this.#o;
    switch (frame.type) {
      case 'ping':
        this.#reply(ws, data, frame.request_id === undefined ? { type: 'pong' } : { type: 'pong', request_id: frame.request_id });
        return;
      case 'send': {
        const { message } = await o.messages.send(data.userId, toSendInput(frame));
        this.#reply(ws, data, { type: 'ack', request_id: frame.request_id ?? null, message });
        return;
      }
      case 'received':
      case 'read':
        await o.conversations.markRead(frame.conversation_id, data.userId, frame.seq, frame.type === 'read' ? 'read' : 'delivered');
        return;
      case 'typing':
        await o.limits.take('typing', data.userId);
        await o.conversations.requireMember(frame.conversation_id, data.userId);
        o.bus.typing(frame.conversation_id, data.userId);
        return;
    }
  }

  /** `data` is the socket's own: after close, touching `ws` itself would throw. */
  #reply(ws: WebSocket<SocketData>, data: SocketData, body: object): void {
    if (data.closed) return;
    ws.cork(() => {
      ws.send(data.msgpack ? packr.pack(body) : JSON.stringify(body), data.msgpack);
    });
    this.#o.onFrames?.('out', 1);
  }

  #replyError(ws: WebSocket<SocketData>, data: SocketData, requestId: string | number | undefined, err: unknown): void {
    const reply = errorReply(err, this.#o.logger, String(requestId ?? ''), this.#o.onUnavailable);
    const error = (reply.body as { error: object }).error;
    // What HTTP says in Retry-After, the frame says in `retry_after` (seconds).
    const retryAfter = err instanceof ApiError ? err.retryAfterS : undefined;
    this.#reply(ws, data, { type: 'error', request_id: requestId ?? null, error: retryAfter === undefined ? error : { ...error, retry_after: retryAfter } });
  }

  /** Closes every socket with 1001 (going away), for shutdown. */
  closeAll(): void {
    for (const ws of [...this.#sockets]) {
      const data = ws.getUserData();
      if (!data.closed) ws.end(1001, 'server shutting down');
    }
  }
}
