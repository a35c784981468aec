import { randomUUID } from 'node:crypto';
import { ApiError, invalid } from '../errors.js';
import type { Logger } from '../log.js';
import type { InFlight } from './in-flight.js';
import { serveStatic, writeStaticReply, type StaticFiles } from './static-files.js';
import type { HttpRequest, HttpResponse, TemplatedApp } from './uws.js';

export type Method = 'get' | 'post' | 'patch' | 'delete';

export interface AuthUser {
  id: string;
  wallet: string;
  /** When the token presented expires (ms since the epoch, service clock). */
  expiresAtMs?: number;
}

export interface RequestContext {
  method: Method;
  /** Route pattern, e.g. /api/v1/users/:id (the metrics label). */
  route: string;
  params: Record<string, string>;
  query: URLSearchParams;
  /** Parsed JSON object body; {} when the request had none. */
  body: Record<string, unknown>;
  requestId: string;
  user: AuthUser;
  /** The client's address: the peer's, or with TRUST_PROXY_HOPS the one the outermost trusted proxy saw. */
  clientAddress: string;
}

export interface Reply {
  status: number;
  /** Serialised as JSON… */
  body?: unknown;
  /** …or sent as is (e.g. Prometheus text). */
  text?: { contentType: string; payload: string };
  headers?: Record<string, string>;
}

export interface Route {
  method: Method;
  path: string;
  /** false for sign-in and operations endpoints; everything else needs a bearer token. */
  auth: boolean;
  handle(ctx: RequestContext): Promise<Reply> | Reply;
}

export interface RouterOptions {
  maxBodyBytes: number;
  authenticate(authorization: string): AuthUser;
  /** Reverse proxies whose X-Forwarded-For entries are believed (0: the peer address, headers ignored). */
  trustProxyHops?: number;
  logger: Logger;
  /** Called once per answered request (metrics). */
  observe?(route: string, method: string, status: number, seconds: number, requestId: string): void;
  inFlight?: InFlight;
  onUnavailable?: () => void;
}

const STATUS_TEXT: Record<number, string> = {
  200: '200 OK', 201: '201 Created', 204: '204 No Content', 400: '400 Bad Request', 401: '401 Unauthorized',
  403: '403 Forbidden', 404: '404 Not Found', 409: '409 Conflict', 413: '413 Payload Too Large',
  415: '415 Unsupported Media Type', 429: '429 Too Many Requests', 500: '500 Internal Server Error',
  503: '503 Service Unavailable',
};

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const utf8 = new TextDecoder('utf-8', { fatal: true });

interface Incoming {
  aborted: boolean;
  /** Set while a body is being read: a client that goes away mid-body ends the read. */
  onAbort?: () => void;
  started: number;
  requestId: string;
  route: string;
  method: Method;
}

function write(res: HttpResponse, state: Incoming, reply: Reply, options: RouterOptions): void {
  if (state.aborted) return;
  state.aborted = true;
  const payload = reply.text ? reply.text.payload : reply.body === undefined ? undefined : JSON.stringify(reply.body);
  res.cork(() => {
    res.writeStatus(STATUS_TEXT[reply.status] ?? String(reply.status));
    res.writeHeader('x-request-id', state.requestId);
    if (payload !== undefined) res.writeHeader('content-type', reply.text ? reply.text.contentType : 'application/json');
    for (const [name, value] of Object.entries(reply.headers ?? {})) res.writeHeader(name, value);
    res.end(payload);
  });
  options.observe?.(state.route, state.method.toUpperCase(), reply.status, (performance.now() - state.started) / 1000, state.requestId);
}

/** Maps any error to an answer; `onUnavailable` counts answers given because Postgres was unreachable. */
export function errorReply(err: unknown, logger: Logger, requestId: string, onUnavailable?: () => void): Reply {
  if (err instanceof ApiError) {
    const headers = err.retryAfterS !== undefined ? { 'retry-after': String(err.retryAfterS) } : undefined;
    return { status: err.status, body: { error: err.toJSON() }, ...(headers ? { headers } : {}) };
  }
  const code = (err as { code?: string })?.code;
  // Text Postgres cannot store (NUL bytes, invalid encodings) is the client's input: 400.
  if (code === '22021' || code === '22P05') {
    return { status: 400, body: { error: { code: 'invalid_request', message: 'a text field contains characters that cannot be stored (e.g. NUL)' } } };
  }
  // Connection-level failures of Postgres or Redis: the dependency is down, not our bug.
  const message = (err as Error)?.message ?? '';
  // pg's own connection errors carry no code, only a message.
  const connectionLost = /Connection terminated|connection error|timeout exceeded when trying to connect|Connection ended/i.test(message);
  if (connectionLost || (typeof code === 'string' && /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|57P0[123]|08\d{3}|53300)$/.test(code))) {
    logger.warn({ requestId, code }, 'dependency unavailable');
    onUnavailable?.();
    return { status: 503, body: { error: { code: 'unavailable', message: 'a backing service is unavailable, retry later' } }, headers: { 'retry-after': '1' } };
  }
  logger.error({ requestId, err: { message: (err as Error)?.message, code, stack: (err as Error)?.stack } }, 'unhandled error');
  return { status: 500, body: { error: { code: 'internal', message: 'internal error' } } };
}

/** Reads the body with the bound enforced while it streams in; rejects with 413 beyond it. */
function readBody(res: HttpResponse, limit: number, declared: number, state: Incoming): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (declared > limit) {
      reject(new ApiError('payload_too_large', `request body exceeds ${limit} bytes`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    // uWS calls no more onData once the client is gone: without this the request would stay
    // in flight for ever (and every later shutdown would wait its whole drain timeout)
    state.onAbort = () => {
      if (done) return;
      done = true;
      reject(new ApiError('invalid_request', 'the client went away before sending the whole body'));
    };
    res.onData((chunk, isLast) => {
      if (done) return;
      size += chunk.byteLength;
      if (size > limit) {
        done = true;
        reject(new ApiError('payload_too_large', `request body exceeds ${limit} bytes`));
        return;
      }
      // uWS reuses the chunk's memory after this callback returns: copy it.
      chunks.push(Buffer.from(chunk.slice(0)));
      if (isLast) {
        done = true;
        resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
      }
    });
  });
}

function parseJsonObject(raw: Buffer): Record<string, unknown> {
  if (raw.length === 0) return {};
  let text: string;
  try {
    text = utf8.decode(raw);
  } catch {
    throw invalid(undefined, 'request body is not valid UTF-8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalid(undefined, 'request body is not valid JSON');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw invalid(undefined, 'request body must be a JSON object');
  }
  return value as Record<string, unknown>;
}

const ANONYMOUS: AuthUser = Object.freeze({ id: '', wallet: '' });

/** Registers routes on a uWS app; everything a handler sees is already read and validated. */
export function mountRoutes(app: TemplatedApp, routes: Route[], options: RouterOptions): void {
  for (const route of routes) {
    const paramNames = [...route.path.matchAll(/:([a-z_]+)/g)].map((m) => m[1]!);
    const hasBody = route.method === 'post' || route.method === 'patch';
    const register = { get: app.get, post: app.post, patch: app.patch, delete: app.del }[route.method].bind(app);
    register(route.path, (res: HttpResponse, req: HttpRequest) => {
      const state: Incoming = { aborted: false, started: performance.now(), requestId: '', route: route.path, method: route.method };
      res.onAborted(() => {
        state.aborted = true;
        state.onAbort?.();
      });
      // The request object is only valid until the first await: read everything now.
      const givenId = req.getHeader('x-request-id');
      state.requestId = REQUEST_ID.test(givenId) ? givenId : randomUUID();
      const authorization = req.getHeader('authorization');
      const contentType = req.getHeader('content-type');
      const contentLength = Number(req.getHeader('content-length') || 0);
      const params: Record<string, string> = {};
      paramNames.forEach((name, i) => {
        // A malformed escape stays as given: the handler's validation answers 400 for it.
        const raw = req.getParameter(i) ?? '';
        try {
          params[name] = decodeURIComponent(raw);
        } catch {
          params[name] = raw;
        }
      });
      const query = new URLSearchParams(req.getQuery() ?? '');
      const clientAddress = clientAddressOf(res, req, options.trustProxyHops ?? 0);
      const body = hasBody ? readBody(res, options.maxBodyBytes, contentLength, state) : Promise.resolve(Buffer.alloc(0));
      // A rejected body is answered below; keep it from surfacing as an unhandled rejection meanwhile.
      body.catch(() => {});

      const inFlight = options.inFlight;
      if (inFlight?.draining) {
        write(res, state, { status: 503, body: { error: { code: 'unavailable', message: 'server is shutting down' } }, headers: { connection: 'close', 'retry-after': '1' } }, options);
        return;
      }
      inFlight?.start();
      void (async () => {
        try {
          const user = route.auth ? authenticateHeader(authorization, options) : ANONYMOUS;
          const raw = await body;
          if (raw.length > 0 && contentType !== '' && !/^application\/json\s*(;|$)/i.test(contentType)) {
            throw new ApiError('unsupported_media_type', 'Content-Type must be application/json');
          }
          const ctx: RequestContext = {
            method: route.method, route: route.path, params, query, body: parseJsonObject(raw), requestId: state.requestId, user, clientAddress,
          };
          write(res, state, await route.handle(ctx), options);
        } catch (err) {
          write(res, state, errorReply(err, options.logger, state.requestId, options.onUnavailable), options);
        } finally {
          inFlight?.end();
        }
      })();
    });
  }
}

/**
 * With N trusted proxies, the N-th X-Forwarded-For entry from the right is the address the
 * outermost of them saw (entries further left are the client's own claims, never believed).
 */
export function clientAddressOf(res: HttpResponse, req: HttpRequest, trustProxyHops: number): string {
  const peer = Buffer.from(res.getRemoteAddressAsText()).toString();
  if (trustProxyHops === 0) return peer;
  const forwarded = req.getHeader('x-forwarded-for').split(',').map((s) => s.trim()).filter((s) => s !== '');
  return forwarded[Math.max(0, forwarded.length - trustProxyHops)] ?? peer;
}

function authenticateHeader(header: string, options: RouterOptions): AuthUser {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!match) throw new ApiError('unauthorized', 'missing bearer token');
  return options.authenticate(match[1]!);
}

/** Any path no route claims: a file of the web client for a GET, else 404 in the API's error shape. */
export function mountNotFound(app: TemplatedApp, options: RouterOptions, webFiles?: StaticFiles): void {
  app.any('/*', (res, req) => {
    const givenId = req.getHeader('x-request-id');
    const requestId = REQUEST_ID.test(givenId) ? givenId : randomUUID();
    if (webFiles && req.getMethod() === 'get') {
      const started = performance.now();
      const file = serveStatic(webFiles, req.getUrl(), req.getHeader('if-none-match'));
      if (file) {
        writeStaticReply(res, file, requestId);
        options.observe?.('static', 'GET', file.status, (performance.now() - started) / 1000, requestId);
        return;
      }
    }
    const state: Incoming = { aborted: false, started: performance.now(), requestId, route: 'unmatched', method: 'get' };
    res.onAborted(() => {
      state.aborted = true;
    });
    write(res, state, { status: 404, body: { error: { code: 'not_found', message: 'no such endpoint' } } }, options);
  });
}
