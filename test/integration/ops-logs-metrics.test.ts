// Operations and reliability (docs/operations.md: keys and plaintext never appear in logs, errors,
// metrics): a full flow at LOG_LEVEL=debug with a canary plaintext, then the captured logs and
// /metrics are searched for the canary, the bearer tokens and the master key.
import { randomBytes, randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { apiClient } from '../helpers/http.js';
import { signIn, startTestServer, type SignedInUser, type TestServer } from '../helpers/server.js';
import { openSocket, type TestSocket } from '../helpers/socket.js';
import { newWallet } from '../helpers/wallet.js';

const CANARY = `CANARY-${randomBytes(12).toString('hex')}`;
const MASTER = randomBytes(32);
const MASTER_B64 = MASTER.toString('base64');
const MASTER_HEX = MASTER.toString('hex');

/** Everything the server logged, one JSON record per line. */
const captured: string[] = [];
const sink = new Writable({
  write(chunk, _enc, done) {
    captured.push(String(chunk));
    done();
  },
});

let srv: TestServer;
let a: SignedInUser;
let b: SignedInUser;
let c: SignedInUser;
const sockets: TestSocket[] = [];
/** Request ids we sent as X-Request-Id, with the route they went to. */
const tagged: { requestId: string; status: number; what: string }[] = [];
/** Bodies of every error answer (HTTP) and error frame (socket). */
const errorAnswers: string[] = [];
let metricsText = '';
let integrityMessageId = '';

function secrets(): Record<string, string> {
  return {
    canary: CANARY,
    'token a': a.token,
    'token b': b.token,
    'token c': c.token,
    'master key (base64)': MASTER_B64,
    'master key (hex)': MASTER_HEX,
    // the base64 key is also searched without padding, and its url-safe spelling
    'master key (base64, unpadded)': MASTER_B64.replace(/=+$/, ''),
    'master key (base64url)': MASTER.toString('base64url'),
  };
}

async function tagged_(u: SignedInUser, method: string, path: string, body: unknown, what: string) {
  const requestId = `ops-canary-${randomUUID()}`;
  const res = await fetch(srv.baseUrl + path, {
    method,
    headers: { authorization: `Bearer ${u.token}`, 'content-type': 'application/json', 'x-request-id': requestId },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  expect(res.headers.get('x-request-id')).toBe(requestId);
  tagged.push({ requestId, status: res.status, what });
  if (res.status >= 400) errorAnswers.push(text);
  return { status: res.status, body: text ? JSON.parse(text) : undefined, headers: res.headers };
}

beforeAll(async () => {
  srv = await startTestServer({
    env: {
      ENCRYPTION_MASTER_KEY: MASTER_B64,
      LOG_LEVEL: 'debug',
      RATE_LIMIT_SEND_PER_MIN: '40',
      // every page is read from the database, so the corrupt row is seen
      HISTORY_CACHE_BYTES: '0',
    },
    deps: { logger: createLogger('debug', sink) },
  });
  [a, b, c] = await Promise.all([signIn(srv.baseUrl), signIn(srv.baseUrl), signIn(srv.baseUrl)]);

  // conversations
  const direct = await tagged_(a, 'POST', '/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] }, 'create direct');
  expect(direct.status).toBe(201);
  const d = direct.body.conversation.id as string;
  const group = await tagged_(a, 'POST', '/api/v1/conversations', { type: 'group', title: `title ${CANARY}`, member_ids: [b.user.id, c.user.id] }, 'create group');
  expect(group.status).toBe(201);
  const g = group.body.conversation.id as string;

  // sockets: one with the token in the query string (URLs are a classic leak), one msgpack
  const sa = await openSocket(srv.baseUrl, a.token, { tokenInQuery: true });
  const sb = await openSocket(srv.baseUrl, b.token, { msgpack: true });
  sockets.push(sa, sb);

  // HTTP sends, with the canary in content, signature and client_message_id
  const sent: any[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await tagged_(a, 'POST', '/api/v1/messages', { conversation_id: d, content: `${CANARY} http ${i}`, client_message_id: `${CANARY}-${i}`, signature: `${CANARY}-sig` }, 'send');
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    sent.push(r.body.message);
  }
  // idempotent replay
  expect((await tagged_(a, 'POST', '/api/v1/messages', { conversation_id: d, content: `${CANARY} http 0`, client_message_id: `${CANARY}-0` }, 'replay')).status).toBe(200);
  // send by recipient_id, into the group, and a reply
  expect((await tagged_(b, 'POST', '/api/v1/messages', { recipient_id: a.user.id, content: `${CANARY} via recipient` }, 'send')).status).toBe(201);
  const gm = await tagged_(c, 'POST', '/api/v1/messages', { conversation_id: g, content: `${CANARY} group`, content_type: 'markdown' }, 'send');
  expect(gm.status).toBe(201);
  expect((await tagged_(a, 'POST', '/api/v1/messages', { conversation_id: g, content: `${CANARY} reply`, reply_to_id: gm.body.message.id }, 'send')).status).toBe(201);

  // socket sends (JSON and msgpack), receipts, typing, ping
  sa.send({ type: 'send', request_id: 'r1', conversation_id: d, content: `${CANARY} socket json` });
  await sa.next((f) => f.type === 'ack' && f.request_id === 'r1');
  sb.send({ type: 'send', request_id: 'r2', conversation_id: d, content: `${CANARY} socket msgpack` });
  const ack2 = await sb.next((f) => f.type === 'ack' && f.request_id === 'r2');
  sb.send({ type: 'received', conversation_id: d, seq: ack2.message.seq });
  sb.send({ type: 'read', conversation_id: d, seq: ack2.message.seq });
  sa.send({ type: 'typing', conversation_id: d });
  sa.send({ type: 'ping', request_id: 'p1' });
  await sa.next((f) => f.type === 'pong');
  await sa.next((f) => f.type === 'receipt' && f.read_seq === ack2.message.seq);

  // edits (HTTP), read receipt (HTTP), history, list, delete
  expect((await tagged_(a, 'PATCH', `/api/v1/messages/${sent[1].id}`, { content: `${CANARY} edited` }, 'edit')).status).toBe(200);
  expect((await tagged_(b, 'POST', `/api/v1/conversations/${d}/read`, { seq: sent[2].seq }, 'read')).status).toBe(200);
  expect((await tagged_(b, 'GET', `/api/v1/conversations/${d}/messages?limit=50`, undefined, 'history')).status).toBe(200);
  expect((await tagged_(b, 'GET', '/api/v1/conversations', undefined, 'list')).status).toBe(200);
  expect((await tagged_(a, 'DELETE', `/api/v1/messages/${sent[2].id}`, undefined, 'delete')).status).toBe(200);
  expect((await tagged_(a, 'GET', `/api/v1/search?q=${encodeURIComponent(CANARY.toLowerCase())}`, undefined, 'search')).status).not.toBe(500);
  expect((await tagged_(a, 'POST', `/api/v1/conversations/${g}/rotate-key`, {}, 'rotate')).status).toBe(200);

  // an integrity failure: flip a ciphertext byte of a message of the group, then read the page
  const victim = await tagged_(c, 'POST', '/api/v1/messages', { conversation_id: g, content: `${CANARY} victim` }, 'send');
  integrityMessageId = victim.body.message.id;
  await srv.pool.query('UPDATE messages SET content = set_byte(content, 0, get_byte(content, 0) # 1) WHERE id = $1', [integrityMessageId]);
  const page = await tagged_(b, 'GET', `/api/v1/conversations/${g}/messages`, undefined, 'history with integrity error');
  expect(page.status).toBe(200);
  expect(page.body.messages.find((m: any) => m.id === integrityMessageId)).toMatchObject({ content: null, integrity_error: true });

  // 4xx errors with the canary in the request
  expect((await tagged_(a, 'POST', '/api/v1/messages', `{"conversation_id":"${d}","content":"${CANARY} broken json`, 'bad json')).status).toBe(400);
  expect((await tagged_(a, 'POST', '/api/v1/messages', { conversation_id: `${CANARY}`, content: CANARY }, 'bad uuid')).status).toBe(400);
  expect((await tagged_(a, 'POST', '/api/v1/messages', { conversation_id: randomUUID(), content: CANARY }, 'unknown conversation')).status).toBe(404);
  expect((await tagged_(c, 'PATCH', `/api/v1/messages/${sent[0].id}`, { content: CANARY }, 'not a member')).status).toBe(404);
  expect((await tagged_(b, 'PATCH', `/api/v1/messages/${sent[0].id}`, { content: CANARY }, 'not the sender')).status).toBe(403);
  expect((await tagged_(a, 'POST', '/api/v1/messages', { conversation_id: d, content: `${CANARY}`.repeat(10_000) }, 'too large')).status).toBe(413);
  const mangled = { ...a, token: `${a.token}x` };
  expect((await tagged_(mangled, 'GET', '/api/v1/users/me', undefined, 'bad token')).status).toBe(401);
  const raw415 = await apiClient(srv.baseUrl, a.token).raw('POST', '/api/v1/messages', { body: CANARY, headers: { 'content-type': 'text/plain' } });
  expect(raw415.status).toBe(415);
  // a failed sign-in: wrong signature
  const w = newWallet();
  const ch = await apiClient(srv.baseUrl).post('/api/v1/auth/challenge', { wallet: w.address });
  expect((await apiClient(srv.baseUrl).post('/api/v1/auth/verify', { wallet: w.address, nonce: ch.body.nonce, signature: newWallet().sign(ch.body.message) })).status).toBe(401);
  // a refused socket upgrade with a bad token in the query string
  await expect(openSocket(srv.baseUrl, `${a.token}x`, { tokenInQuery: true })).rejects.toMatchObject({ status: 401 });

  // malformed socket frames carrying the canary
  sa.ws.send(`{"type":"send","content":"${CANARY}`);
  sa.send({ type: 'send', request_id: 'bad1', conversation_id: CANARY, content: CANARY });
  sa.send({ type: 'send', request_id: 'bad2', conversation_id: randomUUID(), content: CANARY });
  await sa.next((f) => f.type === 'error' && f.request_id === 'bad2');

  // a rate-limited request: c sends until 429 (limit 40 per minute; a window boundary may add up to 40 more)
  let limited: Awaited<ReturnType<typeof tagged_>> | undefined;
  for (let i = 0; i < 90 && !limited; i++) {
    const r = await tagged_(c, 'POST', '/api/v1/messages', { conversation_id: g, content: `${CANARY} flood ${i}` }, 'flood');
    if (r.status === 429) limited = r;
    else expect(r.status).toBe(201);
  }
  expect(limited, 'a send was rate limited').toBeDefined();
  expect(limited!.body.error.code).toBe('rate_limited');
  // over the socket too
  const sc = await openSocket(srv.baseUrl, c.token);
  sockets.push(sc);
  sc.send({ type: 'send', request_id: 'rl', conversation_id: g, content: `${CANARY} flood socket` });
  expect((await sc.next((f) => f.request_id === 'rl')).error?.code).toBe('rate_limited');

  for (const sock of sockets) errorAnswers.push(...sock.frames.filter((f) => f.type === 'error').map((f) => JSON.stringify(f)));
  errorAnswers.push(JSON.stringify(raw415.body));
  metricsText = await (await fetch(`${srv.baseUrl}/metrics`)).text();
  await Promise.all(sockets.map((s) => s.close()));
  // let the audit flush and any deferred log line land
  await new Promise((r) => setTimeout(r, 200));
}, 60_000);

afterAll(async () => {
  await Promise.all(sockets.map((s) => s.close().catch(() => {})));
  await srv?.close();
});

describe('logs at level debug', () => {
  it('captured a meaningful amount of logging', () => {
    expect(captured.length).toBeGreaterThan(30);
  });

  it('never contain the canary plaintext, a bearer token or the master key', () => {
    const all = captured.join('');
    for (const [what, value] of Object.entries(secrets())) {
      const line = captured.find((l) => l.includes(value));
      expect(line, `${what} appears in a log line: ${line?.slice(0, 300)}`).toBeUndefined();
    }
    // not even a long piece of a token (e.g. the signature part)
    for (const t of [a.token, b.token, c.token]) {
      const sig = t.split('.').pop()!;
      expect(all.includes(sig), 'a token signature appears in the logs').toBe(false);
    }
  });

  it('every line is one JSON object with level, time, msg and service', () => {
    for (const chunk of captured) {
      for (const line of chunk.split('\n').filter(Boolean)) {
        let rec: any;
        expect(() => (rec = JSON.parse(line)), `not JSON: ${line.slice(0, 200)}`).not.toThrow();
        expect(typeof rec.level).toBe('number');
        expect(typeof rec.time).toBe('string');
        expect(typeof rec.msg).toBe('string');
        expect(rec.service).toBe('sotalk');
      }
    }
  });

  it('the integrity failure is logged with ids only', () => {
    const recs = captured.map((l) => JSON.parse(l));
    const rec = recs.find((r) => r.messageId === integrityMessageId);
    expect(rec, 'an integrity-failure log line names the message id').toBeDefined();
    expect(rec.level).toBeGreaterThanOrEqual(40);
    expect(rec.conversationId).toBeDefined();
  });

  it('request log lines carry the request id (X-Request-Id), so a response can be traced to its log line', () => {
    const recs = captured.map((l) => JSON.parse(l));
    const requestLines = recs.filter((r) => r.msg === 'request');
    expect(requestLines.length).toBeGreaterThan(0);
    const missing = tagged.filter((t) => !recs.some((r) => Object.values(r).includes(t.requestId)));
    const kinds = [...new Set(missing.map((m) => `${m.what} (${m.status})`))];
    expect(
      kinds,
      `${missing.length} of ${tagged.length} requests sent with X-Request-Id left no log line with that id; a request line looks like ${JSON.stringify(requestLines[0])}`,
    ).toEqual([]);
  });
});

describe('errors and audit rows', () => {
  it('error answers (HTTP and socket) never echo the canary or a token', () => {
    expect(errorAnswers.length).toBeGreaterThan(8);
    for (const [what, value] of Object.entries(secrets())) {
      const leak = errorAnswers.find((t) => t.includes(value));
      expect(leak, `${what} echoed in an error answer: ${leak?.slice(0, 300)}`).toBeUndefined();
    }
  });

  it('decryption_audit rows hold ids and counts only', async () => {
    const { rows } = await srv.pool.query('SELECT * FROM decryption_audit');
    expect(rows.length).toBeGreaterThan(0);
    const dump = JSON.stringify(rows);
    for (const [what, value] of Object.entries(secrets())) expect(dump.includes(value), `${what} in decryption_audit`).toBe(false);
  });
});

describe('/metrics', () => {
  it('never contains the canary, a token or the master key', () => {
    for (const [what, value] of Object.entries(secrets())) {
      expect(metricsText.includes(value), `${what} appears in /metrics`).toBe(false);
    }
    // labels are route patterns, never raw paths with ids
    expect(metricsText).not.toMatch(/route="[^"]*[0-9a-f]{8}-[0-9a-f]{4}-/);
  });

  const families: [string, string][] = [
    ['sotalk_http_requests_total', 'counter'],
    ['sotalk_http_request_duration_seconds', 'histogram'],
    ['sotalk_ws_connections', 'gauge'],
    ['sotalk_ws_frames_total', 'counter'],
    ['sotalk_messages_encrypted_total', 'counter'],
    ['sotalk_messages_decrypted_total', 'counter'],
    ['sotalk_integrity_errors_total', 'counter'],
    ['sotalk_crypto_pool_size', 'gauge'],
    ['sotalk_crypto_pool_utilization', 'gauge'],
    ['sotalk_crypto_pool_queue_depth', 'gauge'],
    ['sotalk_crypto_task_wait_seconds', 'histogram'],
    ['sotalk_crypto_task_run_seconds', 'histogram'],
    ['sotalk_audit_backlog', 'gauge'],
    ['sotalk_dependency_errors_total', 'counter'],
  ];
  it.each(families)('has the family %s (%s)', (name, type) => {
    expect(metricsText).toContain(`# TYPE ${name} ${type}\n`);
  });

  it('samples carry the documented labels (docs/operations.md) and count what the flow did', () => {
    const sample = (re: RegExp) => {
      const m = re.exec(metricsText);
      return m ? Number(m[1]) : NaN;
    };
    expect(sample(/^sotalk_http_requests_total\{route="\/api\/v1\/messages",method="POST",status="201"\} (\S+)$/m)).toBeGreaterThanOrEqual(5);
    expect(sample(/^sotalk_http_requests_total\{route="\/api\/v1\/messages",method="POST",status="429"\} (\S+)$/m)).toBeGreaterThanOrEqual(1);
    expect(sample(/^sotalk_http_requests_total\{route="\/api\/v1\/messages",method="POST",status="400"\} (\S+)$/m)).toBeGreaterThanOrEqual(2);
    expect(metricsText).toMatch(/^sotalk_http_request_duration_seconds_bucket\{le="[^"]+",route="\/api\/v1\/messages",method="POST"\} /m);
    expect(sample(/^sotalk_ws_frames_total\{direction="in"\} (\S+)$/m)).toBeGreaterThanOrEqual(8);
    expect(sample(/^sotalk_ws_frames_total\{direction="out"\} (\S+)$/m)).toBeGreaterThanOrEqual(4);
    expect(sample(/^sotalk_messages_encrypted_total (\S+)$/m)).toBeGreaterThanOrEqual(10);
    expect(sample(/^sotalk_messages_decrypted_total (\S+)$/m)).toBeGreaterThanOrEqual(3);
    expect(sample(/^sotalk_integrity_errors_total (\S+)$/m)).toBeGreaterThanOrEqual(1);
    expect(sample(/^sotalk_crypto_pool_size (\S+)$/m)).toBe(1);
    const util = sample(/^sotalk_crypto_pool_utilization (\S+)$/m);
    expect(util).toBeGreaterThanOrEqual(0);
    expect(util).toBeLessThanOrEqual(1);
    expect(sample(/^sotalk_crypto_pool_queue_depth (\S+)$/m)).toBeGreaterThanOrEqual(0);
    expect(sample(/^sotalk_audit_backlog (\S+)$/m)).toBeGreaterThanOrEqual(0);
    // process metrics for operators (RSS is what the malformed-burst test watches)
    expect(metricsText).toMatch(/^sotalk_process_(process_)?resident_memory_bytes \d/m);
  });
});
