// The live connection (/ws, JSON frames): reconnects with backoff and matches acks to requests.

import { ApiError } from './api.js';

const closedError = (message, code) => new ApiError(0, code, message);

export class LiveSocket {
  #token;
  #onFrame;
  #onState;
  #ws = null;
  #pending = new Map();
  #attempt = 0;
  #timer = 0;
  #stopped = false;
  #nextId = 1;
  #hadHello = false;
  state = 'offline';

  /**
   * @param {string} token
   * @param {(frame: any) => void} onFrame every server frame except acks and request errors
   * @param {(state: 'connecting' | 'live' | 'offline', reconnected: boolean) => void} onState
   */
  constructor(token, onFrame, onState) {
    this.#token = token;
    this.#onFrame = onFrame;
    this.#onState = onState;
  }

  connect() {
    this.#stopped = false;
    const url = new URL('/ws', location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    url.searchParams.set('token', this.#token);
    this.#setState('connecting', false);
    const ws = new WebSocket(url);
    this.#ws = ws;
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === 'hello') {
        const reconnected = this.#hadHello;
        this.#hadHello = true;
        this.#attempt = 0;
        this.#setState('live', reconnected);
      }
      const waiting = frame.request_id != null ? this.#pending.get(frame.request_id) : undefined;
      if (waiting && (frame.type === 'ack' || frame.type === 'error' || frame.type === 'pong')) {
        this.#pending.delete(frame.request_id);
        clearTimeout(waiting.timer);
        if (frame.type === 'error') waiting.reject(new ApiError(0, frame.error?.code ?? 'error', frame.error?.message ?? 'the server refused the request', frame.error?.field));
        else waiting.resolve(frame);
        return;
      }
      this.#onFrame(frame);
    };
    ws.onclose = () => {
      if (this.#ws !== ws) return;
      this.#ws = null;
      this.#failPending();
      this.#setState('offline', false);
      if (this.#stopped) return;
      const delay = Math.min(15_000, 500 * 2 ** this.#attempt) * (0.75 + Math.random() / 2);
      this.#attempt++;
      this.#timer = setTimeout(() => this.connect(), delay);
    };
  }

  /** Fire and forget (typing, receipts); false when there is no open connection. */
  send(frame) {
    if (this.#ws?.readyState !== WebSocket.OPEN || this.state !== 'live') return false;
    this.#ws.send(JSON.stringify(frame));
    return true;
  }

  /** Sends a frame with a request id and resolves with the server's ack (rejects on its error). */
  request(frame, timeoutMs = 10_000) {
    return new Promise((resolve, reject) => {
      const requestId = `r${this.#nextId++}`;
      if (!this.send({ ...frame, request_id: requestId })) {
        reject(closedError('not connected', 'network'));
        return;
      }
      const timer = setTimeout(() => {
        this.#pending.delete(requestId);
        reject(closedError('the server did not answer in time', 'timeout'));
      }, timeoutMs);
      this.#pending.set(requestId, { resolve, reject, timer });
    });
  }

  close() {
    this.#stopped = true;
    clearTimeout(this.#timer);
    const ws = this.#ws;
    this.#ws = null;
    ws?.close(1000);
    this.#failPending();
    this.#setState('offline', false);
  }

  #failPending() {
    for (const [id, waiting] of this.#pending) {
      clearTimeout(waiting.timer);
      waiting.reject(closedError('the live connection closed before the server answered', 'network'));
      this.#pending.delete(id);
    }
  }

  #setState(state, reconnected) {
    this.state = state;
    this.#onState(state, reconnected);
  }
}
