export interface ApiResponse<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

export interface ApiClient {
  get<T = any>(path: string): Promise<ApiResponse<T>>;
  post<T = any>(path: string, body?: unknown): Promise<ApiResponse<T>>;
  patch<T = any>(path: string, body?: unknown): Promise<ApiResponse<T>>;
  delete<T = any>(path: string): Promise<ApiResponse<T>>;
  /** Any request with a raw body and headers of your choosing. */
  raw<T = any>(method: string, path: string, init?: { body?: string | Uint8Array; headers?: Record<string, string> }): Promise<ApiResponse<T>>;
}

/** A tiny JSON client: paths are relative to baseUrl (e.g. '/api/v1/users/me'). */
export function apiClient(baseUrl: string, token?: string): ApiClient {
  const raw = async (method: string, path: string, init: { body?: string | Uint8Array; headers?: Record<string, string> } = {}) => {
    const headers: Record<string, string> = { ...(token ? { authorization: `Bearer ${token}` } : {}), ...init.headers };
    const res = await fetch(baseUrl + path, { method, headers, body: init.body as RequestInit['body'] });
    const text = await res.text();
    let body: unknown = text;
    try {
      body = text === '' ? undefined : JSON.parse(text);
    } catch {
      // not JSON: leave the text
    }
    return { status: res.status, body: body as any, headers: res.headers };
  };
  const json = (method: string) => (path: string, body?: unknown) =>
    raw(method, path, body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  return { get: (p) => raw('GET', p), post: json('POST'), patch: json('PATCH'), delete: (p) => raw('DELETE', p), raw };
}
