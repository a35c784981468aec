import WebSocket from 'ws';
import { Packr } from 'msgpackr';

const packr = new Packr({ useRecords: false });

export interface TestSocket {
  ws: WebSocket;
  /** Every frame received so far, decoded. */
  frames: any[];
  send(frame: unknown): void;
  /** Resolves with the first received frame (past or future) matching `predicate`. */
  next(predicate: (f: any) => boolean, timeoutMs?: number): Promise<any>;
  closed: Promise<{ code: number; reason: string }>;
  close(): Promise<void>;
}

export interface SocketOptions {
  msgpack?: boolean;
  /** Put the token in ?token= instead of the Authorization header. */
  tokenInQuery?: boolean;
  /** Do not read from the socket (a slow consumer). */
  paused?: boolean;
}

/** Opens /ws as a real client and waits for `hello`. Rejects with the HTTP status on refusal. */
export function openSocket(baseUrl: string, token: string, options: SocketOptions = {}): Promise<TestSocket> {
  const url = baseUrl.replace(/^http/, 'ws') + '/ws' + (options.tokenInQuery ? `?token=${encodeURIComponent(token)}` : '');
  const ws = new WebSocket(url, options.msgpack ? ['sotalk.msgpack.v1'] : [], {
    headers: options.tokenInQuery ? {} : { authorization: `Bearer ${token}` },
    perMessageDeflate: false,
  });
  const frames: any[] = [];
  const waiters: { predicate: (f: any) => boolean; resolve: (f: any) => void }[] = [];
  ws.on('message', (data, isBinary) => {
    const frame = isBinary ? packr.unpack(data as Buffer) : JSON.parse(String(data));
    frames.push(frame);
    for (const w of [...waiters]) {
      if (w.predicate(frame)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(frame);
      }
    }
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })));
  const socket: TestSocket = {
    ws,
    frames,
    closed,
    send(frame) {
      ws.send(options.msgpack ? packr.pack(frame) : JSON.stringify(frame));
    },
    next(predicate, timeoutMs = 5000) {
      const found = frames.find(predicate);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching frame within ${timeoutMs} ms; got ${JSON.stringify(frames).slice(0, 2000)}`)), timeoutMs);
        waiters.push({ predicate, resolve: (f) => (clearTimeout(timer), resolve(f)) });
      });
    },
    async close() {
      if (ws.readyState === WebSocket.CLOSED) return;
      ws.close();
      await closed;
    },
  };
  return new Promise((resolve, reject) => {
    ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { status: res.statusCode })));
    ws.once('error', reject);
    socket.next((f) => f.type === 'hello').then(() => {
      if (options.paused) ws.pause();
      resolve(socket);
    }, reject);
  });
}
