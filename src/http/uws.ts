import uWS from 'uWebSockets.js';

export { uWS };
export type { HttpRequest, HttpResponse, TemplatedApp, us_listen_socket, WebSocket } from 'uWebSockets.js';

/**
 * The npm package silently falls back to a slow `ws` emulation when its native binary does not
 * load; the native App constructor is a C++ function, the emulation a JavaScript one.
 */
export const uwsIsNative: boolean = /\[native code\]/.test(Function.prototype.toString.call(uWS.App));

/** LIBUS_LISTEN_EXCLUSIVE_PORT of uSockets: no SO_REUSEPORT, a second listener on the port fails. */
const LISTEN_EXCLUSIVE_PORT = 1;
const LISTEN_DEFAULT = 0;

/**
 * `app.listen(host, port, options, cb)`: the native binding accepts options with a host, its
 * typings only without one. `shared`: SO_REUSEPORT (uWS's own default), for processes that
 * share the port on purpose; otherwise the port is ours alone.
 */
export function listen(app: uWS.TemplatedApp, host: string, port: number, shared: boolean, cb: (socket: uWS.us_listen_socket | false) => void): void {
  (app.listen as unknown as (h: string, p: number, o: number, c: typeof cb) => void).call(app, host, port, shared ? LISTEN_DEFAULT : LISTEN_EXCLUSIVE_PORT, cb);
}
