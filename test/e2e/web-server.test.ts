// What the server does for the web client: static files from web/ (safely), and the
// GET /api/v1/messages/{id}/at-rest endpoint that only SOTALK_AT_REST_PANEL=true enables.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { loadStaticFiles, serveStatic } from '../../src/http/static-files.js';
import { signIn, startTestServer, TEST_MASTER_KEY_B64, type SignedInUser, type TestServer } from '../helpers/server.js';

const NIL = '00000000-0000-0000-0000-000000000000';
const AT_REST_KEYS = [
  'algorithm', 'ciphertext_bytes', 'ciphertext_preview', 'conversation_id', 'deleted', 'key_version', 'master_key_fingerprint',
  'message_id', 'nonce', 'tag',
].sort();

/** A GET with the path sent exactly as given (fetch would normalise `..` away). */
function rawGet(port: number, path: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('static files (src/http/static-files.ts)', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'sotalk-web-'));
    writeFileSync(join(dir, 'index.html'), '<!doctype html><title>t</title>');
    writeFileSync(join(dir, 'app.js'), 'export {};');
    writeFileSync(join(dir, '.env'), 'SECRET=1');
    writeFileSync(join(dir, 'notes.md'), '# not served');
    mkdirSync(join(dir, 'img'));
    writeFileSync(join(dir, 'img', 'logo.svg'), '<svg/>');
    mkdirSync(join(dir, 'api'));
    writeFileSync(join(dir, 'api', 'x.json'), '{}');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('loads known types only, skips dot-files, and maps / to index.html', () => {
    const files = loadStaticFiles(dir);
    expect([...files.keys()].sort()).toEqual(['/api/x.json', '/app.js', '/img/logo.svg', '/index.html']);
    expect(serveStatic(files, '/')?.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(serveStatic(files, '/app.js')?.headers['content-type']).toBe('text/javascript; charset=utf-8');
    expect(serveStatic(files, '/img/logo.svg')?.headers['content-type']).toBe('image/svg+xml');
    for (const path of ['/.env', '/notes.md', '/../index.html', '/img/../app.js', '/img', '/APP.JS', '/api/x.json', '/healthz', '/metrics', '/ws'])
      expect(serveStatic(files, path), path).toBeUndefined();
    expect(loadStaticFiles(join(dir, 'missing')).size).toBe(0);
  });

  it('revalidates by ETag and sends the security headers', () => {
    const files = loadStaticFiles(dir);
    const first = serveStatic(files, '/index.html')!;
    expect(first.status).toBe(200);
    expect(first.headers['cache-control']).toBe('no-cache');
    expect(first.headers['x-content-type-options']).toBe('nosniff');
    expect(first.headers['content-security-policy']).toContain("script-src 'self'");
    expect(first.headers['content-security-policy']).toContain("frame-ancestors 'none'");
    const again = serveStatic(files, '/index.html', `"other", ${first.headers.etag}`)!;
    expect(again.status).toBe(304);
    expect(again.body).toBeUndefined();
    expect(serveStatic(files, '/index.html', '"other"')!.status).toBe(200);
  });
});

describe('the server with its defaults', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer();
  });
  afterAll(() => srv?.close());

  it('serves the web client at /', async () => {
    const page = await rawGet(srv.port, '/');
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.body).toContain('<script type="module" src="app.js"></script>');
    expect(page.headers['content-security-policy']).toContain("default-src 'none'");
    expect(page.headers['x-request-id']).toBeTruthy();
    expect((await rawGet(srv.port, '/', { 'if-none-match': String(page.headers.etag) })).status).toBe(304);
    for (const [path, type] of [['/app.js', 'text/javascript'], ['/style.css', 'text/css'], ['/favicon.svg', 'image/svg+xml'], ['/index.html?x=1', 'text/html']] as const) {
      const res = await rawGet(srv.port, path);
      expect(res.status, path).toBe(200);
      expect(res.headers['content-type'], path).toContain(type);
    }
    expect(readFileSync(new URL('../../web/index.html', import.meta.url), 'utf8')).toBe(page.body);
  });

  it('serves nothing outside web/ and leaves API 404s and other methods alone', async () => {
    for (const path of ['/../package.json', '/%2e%2e/package.json', '/..%2fpackage.json', '/web/index.html', '/src/main.ts', '/package.json', '/.gitignore', '/api/v1/nope', '/api/', '/ws/x']) {
      const res = await rawGet(srv.port, path);
      expect(res.status, path).toBe(404);
      expect(JSON.parse(res.body), path).toEqual({ error: { code: 'not_found', message: 'no such endpoint' } });
    }
    const post = await fetch(`${srv.baseUrl}/`, { method: 'POST' });
    expect(post.status).toBe(404);
    const metrics = await rawGet(srv.port, '/metrics');
    expect(metrics.headers['content-type']).toContain('text/plain');
    expect(metrics.body).toContain('sotalk_http_requests_total{route="static",method="GET",status="200"}');
  });

  it('has no at-rest endpoint unless the flag is set', async () => {
    const me = await signIn(srv.baseUrl);
    const res = await me.api.get(`/api/v1/messages/${NIL}/at-rest`);
    expect(res.status).toBe(404);
    expect(res.body.error.message).toBe('no such endpoint');
    expect(srv.server.routes.map((r) => r.path)).not.toContain('/api/v1/messages/{id}/at-rest');
  });
});

describe('SOTALK_AT_REST_PANEL', () => {
  let srv: TestServer;
  let alice: SignedInUser;
  let bob: SignedInUser;
  let carol: SignedInUser;
  let conversationId: string;

  beforeAll(async () => {
    srv = await startTestServer({ env: { SOTALK_AT_REST_PANEL: 'true' } });
    [alice, bob, carol] = await Promise.all([signIn(srv.baseUrl), signIn(srv.baseUrl), signIn(srv.baseUrl)]);
    const res = await alice.api.post('/api/v1/conversations', { type: 'group', title: 'at rest', member_ids: [bob.user.id] });
    conversationId = res.body.conversation.id;
  });
  afterAll(() => srv?.close());

  const send = async (content: string) => (await alice.api.post('/api/v1/messages', { conversation_id: conversationId, content })).body.message;
  const stored = async (id: string) =>
    (
      await srv.pool.query(
        `SELECT encode(e.nonce, 'hex') AS nonce, encode(e.tag, 'hex') AS tag, e.key_version, k.master_key_fingerprint,
                octet_length(m.content) AS bytes, encode(substring(m.content FROM 1 FOR 32), 'hex') AS head
         FROM messages m JOIN message_encryption_metadata e ON e.message_id = m.id
         JOIN conversation_keys k ON k.conversation_id = m.conversation_id AND k.version = e.key_version WHERE m.id = $1`,
        [id],
      )
    ).rows[0];

  it('shows every member the stored form of a message, and never its plaintext', async () => {
    const content = 'the quick brown fox jumps over the lazy dog, twice: the quick brown fox';
    const message = await send(content);
    const row = await stored(message.id);
    for (const who of [alice, bob]) {
      const res = await who.api.get(`/api/v1/messages/${message.id}/at-rest`);
      expect(res.status).toBe(200);
      expect(Object.keys(res.body).sort()).toEqual(AT_REST_KEYS);
      expect(res.body).toEqual({
        message_id: message.id,
        conversation_id: conversationId,
        deleted: false,
        key_version: 1,
        master_key_fingerprint: row.master_key_fingerprint,
        algorithm: 'AES-256-GCM',
        nonce: row.nonce,
        tag: row.tag,
        ciphertext_bytes: Buffer.byteLength(content),
        ciphertext_preview: row.head,
      });
      expect(res.body.nonce).toMatch(/^[0-9a-f]{24}$/);
      expect(res.body.ciphertext_preview).toHaveLength(64);
      const text = JSON.stringify(res.body);
      expect(text).not.toContain('quick');
      expect(text).not.toContain(Buffer.from(content).subarray(0, 8).toString('hex'));
    }
  });

  it('shows a new nonce after an edit, and a tombstone after a delete', async () => {
    const message = await send('before');
    const before = (await bob.api.get(`/api/v1/messages/${message.id}/at-rest`)).body;
    expect((await alice.api.patch(`/api/v1/messages/${message.id}`, { content: 'after the edit' })).status).toBe(200);
    const after = (await bob.api.get(`/api/v1/messages/${message.id}/at-rest`)).body;
    expect(after.nonce).not.toBe(before.nonce);
    expect(after.ciphertext_bytes).toBe('after the edit'.length);
    expect((await alice.api.delete(`/api/v1/messages/${message.id}`)).status).toBe(200);
    const gone = await bob.api.get(`/api/v1/messages/${message.id}/at-rest`);
    expect(gone.status).toBe(200);
    expect(gone.body).toMatchObject({ deleted: true, key_version: null, nonce: null, tag: null, algorithm: null, ciphertext_bytes: 0, ciphertext_preview: null });
  });

  it('is 404 for outsiders and removed members, 400 for a bad id, 401 without a token', async () => {
    const message = await send('members only');
    const path = `/api/v1/messages/${message.id}/at-rest`;
    const outsider = await carol.api.get(path);
    expect(outsider.status).toBe(404);
    expect(outsider.body.error).toEqual({ code: 'not_found', message: 'message not found' });
    expect((await alice.api.get(`/api/v1/messages/${NIL}/at-rest`)).body.error.message).toBe('message not found');
    const bad = await alice.api.get('/api/v1/messages/not-a-uuid/at-rest');
    expect(bad.status).toBe(400);
    expect(bad.body.error.field).toBe('id');
    expect((await fetch(srv.baseUrl + path)).status).toBe(401);
    expect((await bob.api.delete(`/api/v1/conversations/${conversationId}/members/${bob.user.id}`)).status).toBe(204);
    expect((await bob.api.get(path)).status).toBe(404);
  });

  it('is documented in docs/openapi.json, marked with its flag', () => {
    const doc = JSON.parse(readFileSync(new URL('../../docs/openapi.json', import.meta.url), 'utf8'));
    const op = doc.paths['/api/v1/messages/{id}/at-rest']?.get;
    expect(op?.['x-sotalk-enabled-by']).toBe('SOTALK_AT_REST_PANEL');
    expect(srv.server.routes).toContainEqual({ method: 'GET', path: '/api/v1/messages/{id}/at-rest' });
  });

  it('is off by default and refused in production', () => {
    const base = { ENCRYPTION_MASTER_KEY: TEST_MASTER_KEY_B64, SOTALK_DATA_DIR: tmpdir(), LOG_LEVEL: 'silent' };
    expect(loadConfig({ ...base })).toMatchObject({ atRestPanel: false });
    expect(loadConfig({ ...base, SOTALK_AT_REST_PANEL: 'true' })).toMatchObject({ atRestPanel: true });
    expect(loadConfig({ ...base, NODE_ENV: 'production' })).toMatchObject({ atRestPanel: false });
    expect(() => loadConfig({ ...base, NODE_ENV: 'production', SOTALK_AT_REST_PANEL: 'true' })).toThrow(/SOTALK_AT_REST_PANEL/);
    expect(() => loadConfig({ ...base, SOTALK_AT_REST_PANEL: 'maybe' })).toThrow(/SOTALK_AT_REST_PANEL: must be true or false/);
  });
});
