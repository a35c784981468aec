/** Error codes (docs/protocol.md, Errors) and the HTTP status each maps to. */
export const ERROR_STATUS = {
  invalid_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  rate_limited: 429,
  internal: 500,
  unavailable: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/** An expected failure with a code; raised once, mapped to HTTP and socket answers in one place. */
export class ApiError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly field?: string,
    readonly retryAfterS?: number,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  get status(): number {
    return ERROR_STATUS[this.code];
  }

  toJSON(): { code: ErrorCode; message: string; field?: string } {
    return this.field === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, field: this.field };
  }
}

export const invalid = (field: string | undefined, message: string) => new ApiError('invalid_request', message, field);
export const notFound = (what: string, field?: string) => new ApiError('not_found', `${what} not found`, field);
export const forbidden = (message: string) => new ApiError('forbidden', message);
export const unauthorized = (message = 'missing or invalid credentials') => new ApiError('unauthorized', message);
