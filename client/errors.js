// Every failure the library reports: the server's error code and field, or a transport code.

/**
 * A failed call. `code` is the server's error code (docs/protocol.md, Errors) or one of the
 * library's own: `network` (the server could not be reached), `timeout` (no answer in time),
 * `closed` (the live connection was closed by the caller), `consumer_lagging` (see LiveConnection).
 */
export class SoTalkError extends Error {
  /**
   * @param {import('./types.js').ErrorCode} code
   * @param {string} message
   * @param {{ status?: number, field?: string, retryAfterS?: number, requestId?: string, cause?: unknown }} [details]
   */
  constructor(code, message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'SoTalkError';
    this.code = code;
    /** HTTP status; 0 when there was no HTTP answer (network, timeout, socket). */
    this.status = details.status ?? 0;
    /** The input at fault, when the server named one. */
    this.field = details.field;
    /** Seconds the server asked to wait (Retry-After), when it did. */
    this.retryAfterS = details.retryAfterS;
    /** The answer's X-Request-Id, for finding it in the server's logs. */
    this.requestId = details.requestId;
  }
}

/**
 * Whether a failure says nothing was (or may not have been) done and trying again can help:
 * the server was unreachable, too slow, overloaded, shutting down or rate limiting.
 * @param {unknown} err
 */
export function isTransient(err) {
  if (!(err instanceof SoTalkError)) return false;
  return ['network', 'timeout', 'unavailable', 'rate_limited'].includes(err.code) || err.status === 502 || err.status === 504;
}
