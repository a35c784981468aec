// HTTP/1.1 keep-alive clients for the load generator. Never rejects: a failed request comes back
// with status 0 and an error kind ("timeout", "net:ECONNRESET"), so callers just tally it.
//   undici  — used when the `undici` package is installed (fastest; not a dependency of sotalk)
//   http    — node:http with a keep-alive agent (the default otherwise)
//   fetch   — Node's global fetch (slowest; for comparison)
import http from 'node:http';

export interface HttpResult {
  status: number;
  body: Buffer;
  /** Set when status is 0: why no answer came. */
  error?: string;
}

export interface HttpClient {
  readonly kind: 'undici' | 'http' | 'fetch';
  request(method: string, path: string, body?: string, token?: string): Promise<HttpResult>;
  close(): Promise<void>;
}

const EMPTY = Buffer.alloc(0);

const errorKind = (err: unknown) => {
  const e = err as { code?: string; name?: string; message?: string; cause?: { code?: string } };
  if (e?.code === 'TIMEOUT' || e?.name === 'TimeoutError' || e?.code === 'UND_ERR_HEADERS_TIMEOUT' || e?.code === 'UND_ERR_BODY_TIMEOUT') return 'timeout';
  return `net:${e?.code ?? e?.cause?.code ?? e?.name ?? 'error'}`;
};

function headersFor(body: Buffer | undefined, token: string | undefined): Record<string, string> {
  const h: Record<string, string> = {};
  if (token) h.authorization = `Bearer ${token}`;
  if (body) {
    h['content-type'] = 'application/json';
    h['content-length'] = String(body.length);
  }
  return h;
}

class NodeHttpClient implements HttpClient {
  readonly kind = 'http' as const;
  readonly #agent: http.Agent;
  readonly #host: string;
  readonly #port: number;
  readonly #timeoutMs: number;

  constructor(base: URL, connections: number, timeoutMs: number) {
    this.#agent = new http.Agent({ keepAlive: true, maxSockets: connections, maxFreeSockets: connections });
    this.#host = base.hostname;
    this.#port = Number(base.port || 80);
    this.#timeoutMs = timeoutMs;
  }

  request(method: string, path: string, body?: string, token?: string): Promise<HttpResult> {
    return new Promise((resolve) => {
      let done = false;
      const finish = (r: HttpResult) => {
        if (!done) {
          done = true;
          resolve(r);
        }
      };
      const payload = body === undefined ? undefined : Buffer.from(body);
      const req = http.request(
        { agent: this.#agent, host: this.#host, port: this.#port, method, path, headers: headersFor(payload, token) },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => finish({ status: res.statusCode ?? 0, body: chunks.length === 1 ? chunks[0]! : chunks.length === 0 ? EMPTY : Buffer.concat(chunks) }));
          res.on('error', (err) => finish({ status: 0, body: EMPTY, error: errorKind(err) }));
        },
      );
      req.setTimeout(this.#timeoutMs, () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
      req.on('error', (err) => finish({ status: 0, body: EMPTY, error: errorKind(err) }));
      req.end(payload);
    });
  }

  async close(): Promise<void> {
    this.#agent.destroy();
  }
}

class FetchClient implements HttpClient {
  readonly kind = 'fetch' as const;
  constructor(
    readonly base: string,
    readonly timeoutMs: number,
  ) {}

  async request(method: string, path: string, body?: string, token?: string): Promise<HttpResult> {
    const payload = body === undefined ? undefined : Buffer.from(body);
    try {
      const res = await fetch(this.base + path, { method, headers: headersFor(payload, token), body: payload, signal: AbortSignal.timeout(this.timeoutMs) });
      return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
    } catch (err) {
      return { status: 0, body: EMPTY, error: errorKind(err) };
    }
  }

  async close(): Promise<void> {}
}

class UndiciClient implements HttpClient {
  readonly kind = 'undici' as const;
  constructor(
    readonly pool: any,
    readonly timeoutMs: number,
  ) {}

  async request(method: string, path: string, body?: string, token?: string): Promise<HttpResult> {
    const payload = body === undefined ? undefined : Buffer.from(body);
    try {
      const res = await this.pool.request({ method, path, headers: headersFor(payload, token), body: payload, headersTimeout: this.timeoutMs, bodyTimeout: this.timeoutMs });
      return { status: res.statusCode as number, body: Buffer.from(await res.body.arrayBuffer()) };
    } catch (err) {
      return { status: 0, body: EMPTY, error: errorKind(err) };
    }
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}

/** `kind` 'auto' picks undici when it can be imported, else node:http. */
export async function createHttpClient(baseUrl: string, kind: string, connections: number, timeoutMs: number): Promise<HttpClient> {
  const base = new URL(baseUrl);
  if (kind === 'auto' || kind === 'undici') {
    try {
      const name = 'undici'; // not a dependency: resolved at run time only
      const undici: any = await import(name);
      return new UndiciClient(new undici.Pool(base.origin, { connections, pipelining: 1 }), timeoutMs);
    } catch {
      if (kind === 'undici') console.error('warning: --client undici: the undici package is not installed (npm i -D undici); using node:http');
    }
  }
  if (kind === 'fetch') return new FetchClient(base.origin, timeoutMs);
  return new NodeHttpClient(base, connections, timeoutMs);
}
