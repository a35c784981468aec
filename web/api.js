// The HTTP API (/api/v1): JSON in, JSON out, errors as ApiError with the server's code and text.

export class ApiError extends Error {
  constructor(status, code, message, field, retryAfterS) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.field = field;
    this.retryAfterS = retryAfterS;
  }
}

/**
 * @param {{ token(): string | undefined, onUnauthorized(err: ApiError): void }} session
 */
export function createApi(session) {
  async function request(method, path, body) {
    const headers = {};
    const token = session.token();
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res;
    try {
      res = await fetch('/api/v1' + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch {
      throw new ApiError(0, 'network', 'Cannot reach the SoTalk server. Is it still running?');
    }
    const text = await res.text();
    let json;
    try {
      json = text === '' ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (!res.ok) {
      const e = json?.error;
      const retry = Number(res.headers.get('retry-after'));
      const err = new ApiError(
        res.status,
        e?.code ?? `http_${res.status}`,
        e?.message ?? `The server answered ${res.status} ${res.statusText}`.trim(),
        e?.field,
        Number.isFinite(retry) && retry > 0 ? retry : undefined,
      );
      if (res.status === 401 && token) session.onUnauthorized(err);
      throw err;
    }
    return json;
  }
  return {
    get: (path) => request('GET', path),
    post: (path, body = {}) => request('POST', path, body),
    patch: (path, body) => request('PATCH', path, body),
    delete: (path) => request('DELETE', path),
  };
}

/** One sentence for a person: what failed, the server's reason, and which field when it named one. */
export function describeError(action, err) {
  let text = `${action}: ${err?.message ?? String(err)}`;
  if (err instanceof ApiError && err.field && !err.message.includes(err.field)) text += ` (field "${err.field}")`;
  if (!/[.!?]$/.test(text)) text += '.';
  if (err instanceof ApiError && err.code === 'rate_limited' && err.retryAfterS) text += ` Try again in ${err.retryAfterS} s.`;
  return text;
}
