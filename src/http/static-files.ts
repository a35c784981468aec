import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join, relative, sep } from 'node:path';
import type { HttpResponse } from './uws.js';

/** One file of the web client, read once at start. */
export interface StaticFile {
  body: Buffer;
  type: string;
  etag: string;
}

/** URL path (`/app.js`) → file. */
export type StaticFiles = Map<string, StaticFile>;

export interface StaticReply {
  status: 200 | 304;
  headers: Record<string, string>;
  body: Buffer | undefined;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.webmanifest': 'application/manifest+json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
};

/** Paths the API and operations own: never answered from the web folder, even if a file matched. */
const RESERVED = /^\/(api(\/|$)|ws(\/|$)|healthz$|readyz$|metrics$)/;

const MAX_FILES = 200;
const MAX_TOTAL_BYTES = 16 * 1024 * 1024;

/**
 * The page may talk to its own origin only (HTTP and its WebSocket); no inline script, no
 * framing. `'self'` covers same-origin ws:/wss: in current browsers.
 */
const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
    "manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

/**
 * Reads every servable file under `dir` into memory (the web client is small), served under
 * `prefix` (e.g. `/client`). Only files with a known type are taken; dot-files and folders are
 * skipped. A missing folder gives an empty map; `files` is added to when given.
 */
export function loadStaticFiles(dir: string, prefix = '', files: StaticFiles = new Map()): StaticFiles {
  if (!existsSync(dir)) return files;
  let total = 0;
  const walk = (folder: string) => {
    for (const entry of readdirSync(folder, { withFileTypes: true })) {
      if (entry.name.startsWith('.')) continue;
      const full = join(folder, entry.name);
      if (entry.isDirectory()) {
        walk(full);
        continue;
      }
      const type = TYPES[extname(entry.name).toLowerCase()];
      if (!entry.isFile() || !type) continue;
      total += statSync(full).size;
      if (files.size >= MAX_FILES || total > MAX_TOTAL_BYTES) {
        throw new Error(`web client folder ${dir} is too large to serve from memory`);
      }
      const body = readFileSync(full);
      const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`;
      files.set(prefix + '/' + relative(dir, full).split(sep).join('/'), { body, type, etag });
    }
  };
  walk(dir);
  return files;
}

/**
 * The answer for a GET of `url` (the path, without the query string), or undefined when no file
 * serves it. Lookup is by exact key in the loaded map, so no path can reach outside the folder.
 * `/` and folder paths serve their `index.html`. Files are revalidated on every use (`no-cache`
 * plus a content ETag): they carry no hash in their names, and an upgrade must show at once.
 */
export function serveStatic(files: StaticFiles, url: string, ifNoneMatch = ''): StaticReply | undefined {
  if (RESERVED.test(url)) return undefined;
  const file = files.get(url.endsWith('/') ? url + 'index.html' : url);
  if (!file) return undefined;
  const headers: Record<string, string> = { etag: file.etag, 'cache-control': 'no-cache', ...SECURITY_HEADERS };
  if (ifNoneMatch.split(',').some((tag) => tag.trim() === file.etag || tag.trim() === '*')) {
    return { status: 304, headers, body: undefined };
  }
  return { status: 200, headers: { ...headers, 'content-type': file.type }, body: file.body };
}

const STATUS_LINE = { 200: '200 OK', 304: '304 Not Modified' } as const;

/** Writes a static answer synchronously (call it from the request handler, before any await). */
export function writeStaticReply(res: HttpResponse, reply: StaticReply, requestId: string): void {
  res.cork(() => {
    res.writeStatus(STATUS_LINE[reply.status]);
    res.writeHeader('x-request-id', requestId);
    for (const [name, value] of Object.entries(reply.headers)) res.writeHeader(name, value);
    if (reply.body) res.end(reply.body);
    else res.endWithoutBody();
  });
}
