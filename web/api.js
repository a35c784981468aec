// The HTTP API (/api/v1) through the client library's SoTalkClient: sign-in, token renewal and
// safe retries are the library's; errors are SoTalkError with the server's code and field.

import { SoTalkError } from '../client/index.js';

export { SoTalkError };

/**
 * Path-based calls on the signed-in client (the app builds its paths itself).
 * @param {() => import('../client/client.js').SoTalkClient} client
 */
export function createApi(client) {
  const request = (method, path, body) => client().request(method, '/api/v1' + path, body);
  return {
    get: (path) => request('GET', path),
    post: (path, body = {}) => request('POST', path, body),
    patch: (path, body) => request('PATCH', path, body),
    delete: (path) => request('DELETE', path),
  };
}

/** One sentence for a person: what failed, the server's reason, and which field when it named one. */
export function describeError(action, err) {
  const known = err instanceof SoTalkError;
  const reason = known && err.code === 'network' ? 'Cannot reach the SoTalk server. Is it still running?' : (err?.message ?? String(err));
  let text = `${action}: ${reason}`;
  if (known && err.field && !err.message.includes(err.field)) text += ` (field "${err.field}")`;
  if (!/[.!?]$/.test(text)) text += '.';
  if (known && err.code === 'rate_limited' && err.retryAfterS) text += ` Try again in ${err.retryAfterS} s.`;
  return text;
}
