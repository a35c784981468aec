// Integration tests: HTTP-level error handling — bodies, media types, limits, unknown routes, request ids, fuzzing (docs/protocol.md).
import http from 'node:http';
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signIn, startTestServer, type SignedInUser, type TestServer } from '../helpers/server.js';
import { newWallet } from '../helpers/wallet.js';

// ---------------------------------------------------------------- local helpers

interface RawResponse {
  status: number; // 0 when no answer arrived (timeout or connection error)
  headers: http.IncomingHttpHeaders;
  text: string;
  body: any;
  failure?: string;
}

/**
 * One request on a fresh connection with exactly the headers given (node adds only Host and, for a
 * body, Content-Length unless `chunked`). Never throws: a timeout or socket error is status 0.
 */
function rawHttp(
  baseUrl: string,
  method: string,
  path: string,
  options: { headers?: Record<string, string>; body?: string | Buffer; chunked?: boolean; timeoutMs?: number } = {},
): Promise<RawResponse> {
  const url = new URL(baseUrl);
  return new Promise((resolve) => {
    let settled = false;
    const finish = (r: RawResponse) => {
      if (!settled) {
        settled = true;
        resolve(r);
      }
    };
    const headers: Record<string, string> = { ...options.headers };
    const body = options.body === undefined ? undefined : Buffer.isBuffer(options.body) ? options.body : Buffer.from(options.body, 'utf8');
    if (body && !options.chunked) headers['content-length'] = String(body.length);
    if (body && options.chunked) headers['transfer-encoding'] = 'chunked';
    // node refuses raw non-ASCII in a request target: percent-encode those characters only
    const target = path.replace(/[^\x21-\x7e]/gu, (ch) => encodeURIComponent(ch));
    const req = http.request({ host: url.hostname, port: url.port, method, path: target, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', () => {});
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: any = text;
        try {
          parsed = text === '' ? undefined : JSON.parse(text);
        } catch {
          // not JSON
        }
        finish({ status: res.statusCode ?? 0, headers: res.headers, text, body: parsed });
      });
    });
    req.setTimeout(options.timeoutMs ?? 8000, () => {
      finish({ status: 0, headers: {}, text: '', body: undefined, failure: 'timeout (no answer)' });
      req.destroy();
    });
    req.on('error', (err) => finish({ status: 0, headers: {}, text: '', body: undefined, failure: `socket error: ${err.message}` }));
    if (body && options.chunked) {
      // several chunks, as a streaming client would send them
      for (let i = 0; i < body.length; i += 64 * 1024) req.write(body.subarray(i, i + 64 * 1024));
      req.end();
    } else {
      req.end(body);
    }
  });
}

function expectErrorShape(res: RawResponse, status: number, code: string, field?: string | null): void {
  expect(res.status, `${res.failure ?? ''} ${res.text.slice(0, 300)}`).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/json/);
  expect(res.body?.error?.code, res.text.slice(0, 300)).toBe(code);
  expect(typeof res.body.error.message).toBe('string');
  expect(res.body.error.message.length).toBeGreaterThan(0);
  if (field === null) expect(res.body.error.field).toBeUndefined();
  else if (field !== undefined) expect(res.body.error.field).toBe(field);
}

/** The error shape of docs/protocol.md: {error: {code, message, field?}} with a known code matching the status. */
const CODE_OF_STATUS: Record<number, string> = {
  400: 'invalid_request', 401: 'unauthorized', 403: 'forbidden', 404: 'not_found', 409: 'conflict',
  413: 'payload_too_large', 415: 'unsupported_media_type', 429: 'rate_limited', 500: 'internal', 503: 'unavailable',
};
function errorShapeProblem(res: RawResponse): string | undefined {
  if (res.status < 400) return undefined;
  const e = res.body?.error;
  if (!e || typeof e !== 'object') return 'no {error} object';
  if (typeof e.code !== 'string' || typeof e.message !== 'string') return 'error.code / error.message missing';
  if (CODE_OF_STATUS[res.status] && CODE_OF_STATUS[res.status] !== e.code) return `code ${e.code} for status ${res.status}`;
  if ('field' in e && typeof e.field !== 'string') return 'error.field is not a string';
  return undefined;
}

let srv: TestServer;
let alice: SignedInUser;
let bob: SignedInUser;
let conversationId: string;
let messageId: string;
const SMALL_LIMIT = 1024;

beforeAll(async () => {
  srv = await startTestServer({ env: { MAX_MESSAGE_BYTES: String(SMALL_LIMIT) } });
  alice = await signIn(srv.baseUrl);
  bob = await signIn(srv.baseUrl);
  const conv = await alice.api.post('/api/v1/conversations', { type: 'direct', member_ids: [bob.user.id] });
  conversationId = conv.body.conversation.id;
  const msg = await alice.api.post('/api/v1/messages', { conversation_id: conversationId, content: 'hello' });
  messageId = msg.body.message.id;
});

afterAll(async () => {
  await srv?.close();
});

const req = (method: string, path: string, options: Parameters<typeof rawHttp>[3] = {}) => rawHttp(srv.baseUrl, method, path, options);
const authed = (extra: Record<string, string> = {}) => ({ authorization: `Bearer ${alice.token}`, ...extra });
const JSON_CT = { 'content-type': 'application/json' };

async function expectHealthy(): Promise<void> {
  const h = await req('GET', '/healthz');
  expect(h.status, h.failure).toBe(200);
  const me = await req('GET', '/api/v1/users/me', { headers: authed() });
  expect(me.status, me.failure).toBe(200);
}

// ---------------------------------------------------------------- bodies

describe('request bodies', () => {
  it.each([
    ['truncated object', '{"content": "x"'],
    ['single quotes', "{'content': 'x'}"],
    ['trailing comma', '{"content": "x",}'],
    ['bare word', 'undefined'],
    ['missing value', '{"content":}'],
    ['two objects', '{}{}'],
  ])('malformed JSON (%s) → 400 invalid_request without field', async (_name, body) => {
    expectErrorShape(await req('POST', '/api/v1/messages', { headers: authed(JSON_CT), body }), 400, 'invalid_request', null);
    expectErrorShape(await req('PATCH', '/api/v1/users/me', { headers: authed(JSON_CT), body }), 400, 'invalid_request', null);
    expectErrorShape(await req('POST', '/api/v1/auth/challenge', { headers: JSON_CT, body }), 400, 'invalid_request', null);
  });

  it.each([
    ['an array', '[]'],
    ['an array of an object', `[{"conversation_id":"${randomUUID()}","content":"x"}]`],
    ['null', 'null'],
    ['a string', '"hello"'],
    ['a number', '42'],
    ['true', 'true'],
  ])('a JSON body that is not an object (%s) → 400 without field', async (_name, body) => {
    expectErrorShape(await req('POST', '/api/v1/messages', { headers: authed(JSON_CT), body }), 400, 'invalid_request', null);
    expectErrorShape(await req('POST', '/api/v1/auth/challenge', { headers: JSON_CT, body }), 400, 'invalid_request', null);
  });

  it('invalid UTF-8 → 400 without field, nothing stored', async () => {
    const before = await srv.pool.query('SELECT count(*)::int AS n FROM messages');
    for (const bad of [
      Buffer.concat([Buffer.from(`{"conversation_id":"${conversationId}","content":"`), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]),
      Buffer.concat([Buffer.from(`{"conversation_id":"${conversationId}","content":"`), Buffer.from([0xc3]), Buffer.from('"}')]),
      Buffer.concat([Buffer.from(`{"conversation_id":"${conversationId}","content":"`), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')]), // UTF-8 encoded surrogate
    ]) {
      expectErrorShape(await req('POST', '/api/v1/messages', { headers: authed(JSON_CT), body: bad }), 400, 'invalid_request', null);
    }
    const after = await srv.pool.query('SELECT count(*)::int AS n FROM messages');
    expect(after.rows[0].n).toBe(before.rows[0].n);
  });

  it('a declared non-JSON Content-Type with a body → 415', async () => {
    const body = JSON.stringify({ conversation_id: conversationId, content: 'typed wrong' });
    for (const type of ['text/plain', 'text/plain; charset=utf-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml']) {
      expectErrorShape(await req('POST', '/api/v1/messages', { headers: authed({ 'content-type': type }), body }), 415, 'unsupported_media_type');
    }
    expectErrorShape(
      await req('PATCH', '/api/v1/users/me', { headers: authed({ 'content-type': 'text/plain' }), body: '{"display_name":"x"}' }),
      415,
      'unsupported_media_type',
    );
    expectErrorShape(
      await req('POST', '/api/v1/auth/challenge', { headers: { 'content-type': 'text/plain' }, body: JSON.stringify({ wallet: newWallet().address }) }),
      415,
      'unsupported_media_type',
    );
    const { rows } = await srv.pool.query('SELECT count(*)::int AS n FROM messages WHERE conversation_id = $1', [conversationId]);
    expect(rows[0].n).toBe(1);
  });

  it('a body without any Content-Type is read as JSON', async () => {
    const res = await req('POST', '/api/v1/messages', { headers: authed(), body: JSON.stringify({ conversation_id: conversationId, content: 'no content-type' }) });
    expect(res.status, res.text).toBe(201);
    expect(res.body.message.content).toBe('no content-type');
    const patch = await req('PATCH', '/api/v1/users/me', { headers: authed(), body: '{"display_name":"Untyped"}' });
    expect(patch.status, patch.text).toBe(200);
    expect(patch.body.user.display_name).toBe('Untyped');
    const challenge = await req('POST', '/api/v1/auth/challenge', { body: JSON.stringify({ wallet: newWallet().address }) });
    expect(challenge.status, challenge.text).toBe(200);
  });

  it('application/json with parameters or in another case is JSON', async () => {
    for (const type of ['application/json; charset=utf-8', 'application/json;charset=UTF-8', 'Application/JSON']) {
      const res = await req('POST', '/api/v1/messages', { headers: authed({ 'content-type': type }), body: JSON.stringify({ conversation_id: conversationId, content: type }) });
      expect(res.status, `${type}: ${res.text}`).toBe(201);
    }
  });

  it('a body larger than the body limit → 413, and the server keeps answering', async () => {
    const huge = JSON.stringify({ conversation_id: conversationId, content: 'x'.repeat(4 * 1024 * 1024) });
    expectErrorShape(await req('POST', '/api/v1/messages', { headers: authed(JSON_CT), body: huge }), 413, 'payload_too_large');
    await expectHealthy();
    // streamed without a Content-Length
    expectErrorShape(await req('POST', '/api/v1/messages', { headers: authed(JSON_CT), body: huge, chunked: true }), 413, 'payload_too_large');
    await expectHealthy();
    // on an unauthenticated endpoint, and with garbage instead of JSON
    expectErrorShape(await req('POST', '/api/v1/auth/challenge', { headers: JSON_CT, body: randomBytes(2 * 1024 * 1024) }), 413, 'payload_too_large');
    await expectHealthy();
    const { rows } = await srv.pool.query('SELECT count(*)::int AS n FROM messages WHERE sender_id = $1 AND octet_length(content) > $2', [alice.user.id, SMALL_LIMIT]);
    expect(rows[0].n).toBe(0);
    // without credentials the answer is a refusal (401 or 413), never a hang
    const anon = await req('POST', '/api/v1/messages', { headers: JSON_CT, body: huge });
    expect([401, 413], anon.failure ?? anon.text).toContain(anon.status);
    expect(errorShapeProblem(anon)).toBeUndefined();
    await expectHealthy();
    // normal traffic still works
    const ok = await req('POST', '/api/v1/messages', { headers: authed(JSON_CT), body: JSON.stringify({ conversation_id: conversationId, content: 'after the flood' }) });
    expect(ok.status, ok.text).toBe(201);
  });

  it('text fields holding a NUL character never cause a 500 (400, or stored and returned as given)', async () => {
    const nul = 'a\u0000b';
    const cases: [string, string, string, unknown, (r: RawResponse) => unknown][] = [
      ['display_name', 'PATCH', '/api/v1/users/me', { display_name: nul }, (r) => r.body.user.display_name],
      ['title', 'POST', '/api/v1/conversations', { type: 'group', title: nul, member_ids: [] }, (r) => r.body.conversation.title],
      ['signature', 'POST', '/api/v1/messages', { conversation_id: conversationId, content: 'sig', signature: nul }, (r) => r.body.message.signature],
      ['client_message_id', 'POST', '/api/v1/messages', { conversation_id: conversationId, content: 'cmid', client_message_id: nul }, (r) => r.body.message.client_message_id],
      ['content', 'POST', '/api/v1/messages', { conversation_id: conversationId, content: nul }, (r) => r.body.message.content],
    ];
    const problems: string[] = [];
    for (const [field, method, path, body, pick] of cases) {
      const res = await req(method, path, { headers: authed(JSON_CT), body: JSON.stringify(body) });
      if (res.status === 0 || res.status >= 500) problems.push(`${field}: ${method} ${path} → ${res.status || res.failure} ${res.text}`);
      else if (res.status < 300 && pick(res) !== nul) problems.push(`${field}: accepted but returned ${JSON.stringify(pick(res))}`);
      else if (res.status >= 400 && (res.status !== 400 || res.body?.error?.field !== field)) problems.push(`${field}: ${res.status} ${res.text}`);
    }
    // unauthenticated sign-in inputs
    const w = newWallet();
    const ch = await req('POST', '/api/v1/auth/challenge', { headers: JSON_CT, body: JSON.stringify({ wallet: w.address }) });
    const verify = await req('POST', '/api/v1/auth/verify', {
      headers: JSON_CT,
      body: JSON.stringify({ wallet: w.address, nonce: `${ch.body.nonce}\u0000`, signature: w.sign(ch.body.message) }),
    });
    if (verify.status === 0 || verify.status >= 500) problems.push(`verify nonce: ${verify.status || verify.failure} ${verify.text}`);
    const wallet = await req('POST', '/api/v1/auth/challenge', { headers: JSON_CT, body: JSON.stringify({ wallet: `${w.address}\u0000` }) });
    if (wallet.status !== 400) problems.push(`challenge wallet: ${wallet.status} ${wallet.text}`);
    expect(problems).toEqual([]);
    await expectHealthy();
  });
});

// ---------------------------------------------------------------- path parameters

describe('path parameters', () => {
  it.each([
    ['GET', '/api/v1/users/%ZZ', 'id'],
    ['GET', '/api/v1/users/%E0%A4%A', 'id'],
    ['GET', '/api/v1/conversations/%/messages', 'id'],
    ['DELETE', '/api/v1/messages/%C3%28', 'id'],
    ['DELETE', `/api/v1/conversations/${randomUUID()}/members/%FF`, 'user_id'],
  ])('a malformed percent-escape (%s %s) is a bad UUID: 400 field %s, answered promptly', async (method, path, field) => {
    const res = await req(method, path, { headers: authed(), timeoutMs: 4000 });
    expectErrorShape(res, 400, 'invalid_request', field);
    await expectHealthy();
  });

  it('an uppercase UUID names the same resource', async () => {
    const upper = await req('GET', `/api/v1/conversations/${conversationId.toUpperCase()}`, { headers: authed() });
    expect(upper.status, upper.text).toBe(200);
    expect(upper.body.conversation.id).toBe(conversationId);
  });
});

// ---------------------------------------------------------------- routes, shapes, request ids

describe('unknown routes and error shapes', () => {
  it.each([
    // GET / is the web client (test/e2e/web-server.test.ts); other methods and unknown files are 404s.
    ['POST', '/'],
    ['GET', '/no-such-page.html'],
    ['GET', '/api/v1'],
    ['GET', '/api/v1/nope'],
    ['POST', '/api/v1/nope'],
    ['GET', '/api/v2/users/me'],
    ['GET', '/api/v1/users/me/extra'],
    ['DELETE', '/api/v1/nope/123'],
  ])('%s %s → 404 in the API error shape', async (method, path) => {
    expectErrorShape(await req(method, path, { headers: authed() }), 404, 'not_found', null);
    expectErrorShape(await req(method, path), 404, 'not_found');
  });

  it('a known path with a method it does not have → 404 or 405, in the error shape', async () => {
    for (const [method, path] of [['PUT', '/api/v1/users/me'], ['DELETE', '/api/v1/conversations'], ['PATCH', '/api/v1/auth/challenge']]) {
      const res = await req(method!, path!, { headers: authed() });
      expect([404, 405], `${method} ${path}`).toContain(res.status);
      expect(errorShapeProblem(res)).toBeUndefined();
    }
  });

  it('X-Request-Id is echoed on successes and on every kind of error', async () => {
    const cases: [string, string, Record<string, string>, string | undefined, number][] = [
      ['GET', '/healthz', {}, undefined, 200],
      ['GET', '/api/v1/users/me', authed(), undefined, 200],
      ['POST', '/api/v1/messages', authed(JSON_CT), JSON.stringify({ conversation_id: conversationId, content: 'rid' }), 201],
      ['POST', '/api/v1/messages', authed(JSON_CT), '{bad', 400],
      ['GET', '/api/v1/users/me', {}, undefined, 401],
      ['DELETE', `/api/v1/messages/${messageId}`, { authorization: `Bearer ${bob.token}` }, undefined, 403],
      ['GET', `/api/v1/conversations/${randomUUID()}`, authed(), undefined, 404],
      ['POST', '/api/v1/messages', authed({ 'content-type': 'text/plain' }), 'x', 415],
      ['GET', '/api/v1/definitely-not-a-route', authed(), undefined, 404],
    ];
    for (const [method, path, headers, body, status] of cases) {
      const id = `test-${randomUUID()}`;
      const res = await req(method, path, { headers: { ...headers, 'x-request-id': id }, ...(body === undefined ? {} : { body }) });
      expect(res.status, `${method} ${path}: ${res.text}`).toBe(status);
      expect(res.headers['x-request-id'], `${method} ${path} (${status})`).toBe(id);
    }
  });

  it('a response without a given X-Request-Id still carries one', async () => {
    const res = await req('GET', '/api/v1/users/me', { headers: authed() });
    expect(typeof res.headers['x-request-id']).toBe('string');
    expect((res.headers['x-request-id'] as string).length).toBeGreaterThan(0);
    const err = await req('GET', '/api/v1/nope');
    expect(typeof err.headers['x-request-id']).toBe('string');
  });

  it('validation errors name their field and use the shape', async () => {
    expectErrorShape(
      await req('POST', '/api/v1/messages', { headers: authed(JSON_CT), body: JSON.stringify({ conversation_id: conversationId, content: 5 }) }),
      400,
      'invalid_request',
      'content',
    );
    expectErrorShape(await req('GET', '/api/v1/conversations?limit=0', { headers: authed() }), 400, 'invalid_request', 'limit');
    expectErrorShape(await req('GET', '/api/v1/users/xyz', { headers: authed() }), 400, 'invalid_request', 'id');
  });
});

// ---------------------------------------------------------------- fuzz

/** mulberry32: a small seeded PRNG so a failing fuzz run can be replayed. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!,
    bytes: (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(next() * 256))),
  };
}

describe('fuzz', () => {
  it('~200 random malformed requests never yield a 500, a hang or a shapeless error; /healthz stays 200', async () => {
    const seed = Number(process.env.FUZZ_SEED ?? 20240607);
    const r = prng(seed);
    const endpoints: [string, string][] = [
      ['POST', '/api/v1/auth/challenge'],
      ['POST', '/api/v1/auth/verify'],
      ['GET', '/api/v1/users/me'],
      ['PATCH', '/api/v1/users/me'],
      ['GET', '/api/v1/users/{id}'],
      ['GET', '/api/v1/users'],
      ['POST', '/api/v1/conversations'],
      ['GET', '/api/v1/conversations'],
      ['GET', '/api/v1/conversations/{id}'],
      ['POST', '/api/v1/conversations/{id}/members'],
      ['DELETE', '/api/v1/conversations/{id}/members/{user_id}'],
      ['POST', '/api/v1/conversations/{id}/read'],
      ['POST', '/api/v1/conversations/{id}/rotate-key'],
      ['POST', '/api/v1/messages'],
      ['GET', '/api/v1/conversations/{id}/messages'],
      ['GET', '/api/v1/messages'],
      ['PATCH', '/api/v1/messages/{id}'],
      ['DELETE', '/api/v1/messages/{id}'],
    ];
    const idValues = () => [
      conversationId, messageId, alice.user.id, bob.user.id, randomUUID(), conversationId.toUpperCase(), '', 'abc', '0', '-1',
      'x'.repeat(300), '😀', '%20', '%00', '%ZZ', '%E0%A4%A', '..', `${conversationId}x`, 'null', '%F0%9F%98%80',
    ];
    const queries = [
      '', 'limit=0', 'limit=-5', 'limit=abc', 'limit=1e2', 'limit=99999999999999999999', 'limit=%ZZ', 'limit=', 'before=!!!',
      `before=${Buffer.from('1:x').toString('base64url')}`, 'before_seq=1&after_seq=2', 'after_seq=-1', 'before_seq=1e400',
      `conv_id=${conversationId}`, 'conv_id=zz', 'conv_id=', 'wallet=0OIl', `wallet=${newWallet().address}`, 'wallet=%00',
      'limit=5&limit=500', '%%%', '&&&=&=', 'a[b]=c',
    ];
    const scalarValues = (): unknown[] => [
      null, true, false, 0, -1, 1.5, 1e308, -0, 2 ** 53, '', 'x', '\u0000', '\ud800', 'a'.repeat(5000), '😀'.repeat(100),
      [], {}, [1, 2], { $gt: '' }, randomUUID(), conversationId, messageId, bob.user.id, 'direct', 'group', 'text', 'html',
      newWallet().address, '<script>', "'; DROP TABLE messages; --",
    ];
    const fields = [
      'wallet', 'nonce', 'signature', 'display_name', 'type', 'title', 'member_ids', 'user_id', 'seq', 'conversation_id',
      'recipient_id', 'content', 'content_type', 'reply_to_id', 'client_message_id', '__proto__', 'constructor',
    ];
    const bodyMakers: (() => string | Buffer | undefined)[] = [
      () => undefined,
      () => '',
      () => '{',
      () => '[]',
      () => 'null',
      () => '"x"',
      () => '12',
      () => r.bytes(1 + r.int(200)),
      () => Buffer.concat([Buffer.from('{"content":"'), Buffer.from([0xff, 0xc0, 0x80]), Buffer.from('"}')]),
      () => '['.repeat(3000) + ']'.repeat(3000),
      () => '{"a":'.repeat(2000) + '1' + '}'.repeat(2000),
      () => {
        const o: Record<string, unknown> = {};
        const n = 1 + r.int(5);
        for (let i = 0; i < n; i++) o[r.pick(fields)] = r.pick(scalarValues());
        return JSON.stringify(o);
      },
      () => {
        const o: Record<string, unknown> = {};
        const n = 1 + r.int(5);
        for (let i = 0; i < n; i++) o[r.pick(fields)] = r.pick(scalarValues());
        return JSON.stringify(o).slice(0, -1 - r.int(5));
      },
      () => JSON.stringify({ conversation_id: conversationId, content: r.pick(scalarValues()), content_type: r.pick(['text', 'json', 'x', 5]) }),
      () => JSON.stringify({ type: r.pick(['direct', 'group', 'x']), member_ids: r.pick([[randomUUID()], [bob.user.id, bob.user.id], 'x', [1], null]), title: r.pick(scalarValues()) }),
      () => JSON.stringify({ seq: r.pick([0, 1, 2, -1, 1e308, '1', null, 2 ** 53, 1.5]) }),
    ];
    const contentTypes = ['application/json', 'application/json', '', 'text/plain', 'application/json; charset=utf-8', 'application/JSON', 'multipart/form-data; boundary=x', 'application/json;;;', 'application/jsonx'];
    const auths = () => [`Bearer ${alice.token}`, `Bearer ${alice.token}`, `Bearer ${bob.token}`, '', 'Bearer junk', `Bearer ${alice.token}x`, 'Basic abc', `bearer  ${alice.token}`];

    const failures: string[] = [];
    const total = 200;
    const concurrency = 6;
    let index = 0;
    const worker = async () => {
      while (index < total) {
        const n = index++;
        const [method0, template] = r.pick(endpoints);
        const method = r.next() < 0.9 ? method0 : r.pick(['GET', 'POST', 'PATCH', 'DELETE', 'PUT']);
        const path = template.replace(/\{id\}|\{user_id\}/g, () => r.pick(idValues()));
        const query = r.pick(queries);
        const body = bodyMakers[r.int(bodyMakers.length)]!();
        const headers: Record<string, string> = {};
        const auth = r.pick(auths());
        if (auth) headers.authorization = auth;
        const ct = r.pick(contentTypes);
        if (ct && body !== undefined) headers['content-type'] = ct;
        if (r.next() < 0.3) headers['x-request-id'] = r.pick(['fuzz-1', 'bad id with spaces', 'x'.repeat(500), '']);
        const fullPath = query ? `${path}?${query}` : path;
        const res = await req(method, fullPath, { headers, ...(body === undefined ? {} : { body }), timeoutMs: 5000 });
        const what = `#${n} ${method} ${fullPath.slice(0, 120)} ct=${JSON.stringify(ct)} body=${JSON.stringify(body === undefined ? null : body.toString().slice(0, 80))}`;
        if (res.status === 0) failures.push(`${what} → ${res.failure}`);
        else if (res.status >= 500) failures.push(`${what} → ${res.status} ${res.text.slice(0, 200)}`);
        else {
          const problem = errorShapeProblem(res);
          if (problem) failures.push(`${what} → ${res.status}: ${problem} ${res.text.slice(0, 120)}`);
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    const health = await req('GET', '/healthz');
    expect(health.status).toBe(200);
    await expectHealthy();
    expect(failures, `seed ${seed}: ${failures.length} failures`).toEqual([]);
  }, 120_000);
});
