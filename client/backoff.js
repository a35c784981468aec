// Exponential backoff with jitter, shared by HTTP retries and socket reconnects.

/**
 * The delay before retry number `attempt` (0-based): `minMs · 2^attempt`, capped at `maxMs`,
 * times a random factor in [0.5, 1.5) so that many clients cut off together do not return together.
 * @param {number} attempt
 * @param {number} minMs
 * @param {number} maxMs
 */
export function backoffDelay(attempt, minMs, maxMs) {
  return Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30)) * (0.5 + Math.random());
}

/**
 * A timer that does not keep a Node process alive (browsers have no such notion): for
 * background chores only (token renewal, timers that matter only while a socket is open).
 * @param {() => void} fn
 * @param {number} ms
 */
export function quietTimeout(fn, ms) {
  const timer = setTimeout(fn, ms);
  /** @type {any} */ (timer).unref?.();
  return timer;
}

/** A pause that keeps a Node process alive: a call waiting to retry is work in progress. @param {number} ms */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
