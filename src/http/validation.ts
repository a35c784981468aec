import { z } from 'zod';
import { invalid } from '../errors.js';

export const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Postgres text columns cannot hold NUL: such input is a 400, not a database error. */
// eslint-disable-next-line no-control-regex -- matching NUL is the point
export const NO_NUL = /^[^\u0000]*$/;
export const NO_NUL_MESSAGE = 'must not contain NUL characters';
/** A lone surrogate cannot be stored as UTF-8: it would come back as U+FFFD (two ids would collide). */
export const wellFormed = (s: string) => s.isWellFormed();
export const WELL_FORMED_MESSAGE = 'must be well-formed Unicode (no lone surrogates)';

/** A UUID in any case, normalised to the lowercase canonical form. */
export const uuid = z.string().regex(UUID_PATTERN, 'must be a UUID').transform((s) => s.toLowerCase());

export function uuidParam(params: Record<string, string>, name: string): string {
  const value = params[name] ?? '';
  if (!UUID_PATTERN.test(value)) throw invalid(name, `${name} must be a UUID`);
  return value.toLowerCase();
}

/** Validates a body (or any input) against a schema; the first problem becomes a 400 naming its field. */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const field = issue.path.length > 0 ? String(issue.path[0]) : undefined;
  throw invalid(field, field ? `${field}: ${issue.message}` : issue.message);
}

export interface IntQueryOptions {
  min: number;
  max: number;
  fallback?: number;
}

/** An integer query parameter in range, or the fallback when absent; 400 naming it otherwise. */
export function intQuery(query: URLSearchParams, name: string, options: IntQueryOptions): number | undefined {
  const raw = query.get(name);
  if (raw === null || raw === '') return options.fallback;
  if (!/^-?\d+$/.test(raw)) throw invalid(name, `${name} must be an integer`);
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < options.min || value > options.max) {
    throw invalid(name, `${name} must be between ${options.min} and ${options.max}`);
  }
  return value;
}

export function uuidQuery(query: URLSearchParams, name: string): string | undefined {
  const raw = query.get(name);
  if (raw === null) return undefined;
  if (!UUID_PATTERN.test(raw)) throw invalid(name, `${name} must be a UUID`);
  return raw.toLowerCase();
}
