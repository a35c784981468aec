import uWS from 'uWebSockets.js';

export { uWS };
export type { HttpRequest, HttpResponse, TemplatedApp, us_listen_socket, WebSocket } from 'uWebSockets.js';

/**
 * The npm package silently falls back to a slow `ws` emulation when its native binary does not
 * load; the native App constructor is a C++ function, the emulation a JavaScript one.
 */
export const uwsIsNative: boolean = /\[native code\]/.test(Function.prototype.toString.call(uWS.App));
