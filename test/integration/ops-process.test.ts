// Operations and reliability against the real process (`node bin/sotalk.js serve`):
// - SIGTERM in the middle of a burst of sends (docs/protocol.md: acknowledged means committed, nothing
//   acknowledged is lost): exit 0, sockets closed with 1001, every 201/ack in the database and
//   decryptable by a new server, requests after the signal answered 503 or refused.
// - 1,000 malformed HTTP requests and 1,000 malformed socket frames: no 500, still healthy, RSS back
//   near its baseline.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createTestDatabase, testPool } from '../helpers/db.js';
import { signIn, startTestServer, type SignedInUser } from '../helpers/server.js';
import { spawnServer } from '../helpers/spawned-server.js';
import { openSocket, type TestSocket } from '../helpers/socket.js';

const packr = new Packr({ useRecords: false });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch((err) => console.error('cleanup failed:', err));
});

async function newServer(env: Record<string, string> = {}) {
  const db = await createTestDatabase();
  const dataDir = mkdtempSync(join(tmpdir(), 'sotalk-ops-'));
  const masterKey = randomBytes(32).toString('base64');
  const server = await spawnServer({ DATABASE_URL: db.url, ENCRYPTION_MASTER_KEY: masterKey, SOTALK_DATA_DIR: dataDir, ...env });
  cleanups.push(async () => {
    await server.stop();
    await db.drop();
    rmSync(dataDir, { recursive: true, force: true });
  });
  return { server, db, masterKey };
}

async function metricsOf(baseUrl: string): Promise<string> {
  return (await fetch(`${baseUrl}/metrics`)).text();
}

function rssOf(text: string): number {
  const m = /^sotalk_process_(?:process_)?resident_memory_bytes (\S+)$/m.exec(text);
  if (!m) throw new Error('no resident memory metric in /metrics');
  return Number(m[1]);
}

/** Runs `tasks` with at most `limit` at once. */
async function bounded<T>(count: number, limit: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, count) }, async () => {
      while (next < count) {
        const i = next++;
        out[i] = await task(i);
      }
    }),
  );
  return out;
}

// ---------------------------------------------------------------- SIGTERM

describe('SIGTERM during a burst of sends', () => {
  it('exits 0, closes sockets with 1001, and every acknowledged message is committed and decrypts', async () => {
    const { server, db, masterKey } = await newServer({ RATE_LIMIT_SEND_PER_MIN: '0' });
    const [a, b] = await Promise.all([signIn(server.baseUrl), signIn(server.baseUrl)]);
    const conv = await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] });
    expect(conv.status).toBe(201);
    const d: string = conv.body.conversation.id;
    const grp = await a.api.post('/api/v1/conversations', { type: 'group', title: 'burst', member_ids: [b.user.id] });
    const g: string = grp.body.conversation.id;

    const sockets: TestSocket[] = await Promise.all([
      openSocket(server.baseUrl, a.token),
      openSocket(server.baseUrl, a.token, { msgpack: true }),
      openSocket(server.baseUrl, b.token),
    ]);

    /** content → acknowledged message id */
    const acked = new Map<string, { id: string; conversationId: string; via: string }>();
    const httpStatuses = new Map<number, number>();
    const httpAfterSignal = new Map<string, number>();
    const socketErrors: string[] = [];
    let connectionErrors = 0;
    let signalledAt = 0;
    let stopLoops = false;
    const exitState = { exited: false };
    void server.exited.then(() => (exitState.exited = true));

    // HTTP senders: 16 loops, each sends one message at a time until the process has gone.
    const httpLoop = async (worker: number) => {
      const sender = worker % 2 ? a : b;
      for (let i = 0; !stopLoops; i++) {
        const content = `burst http ${worker}-${i}`;
        const conversationId = i % 3 ? d : g;
        const afterSignal = signalledAt !== 0;
        try {
          const res = await fetch(`${server.baseUrl}/api/v1/messages`, {
            method: 'POST',
            headers: { authorization: `Bearer ${sender.token}`, 'content-type': 'application/json' },
            body: JSON.stringify({ conversation_id: conversationId, content, client_message_id: content }),
            signal: AbortSignal.timeout(20_000),
          });
          const body = (await res.json().catch(() => undefined)) as any;
          httpStatuses.set(res.status, (httpStatuses.get(res.status) ?? 0) + 1);
          if (afterSignal || signalledAt) httpAfterSignal.set(`${res.status} ${body?.error?.code ?? ''}`, (httpAfterSignal.get(`${res.status} ${body?.error?.code ?? ''}`) ?? 0) + 1);
          if (res.status === 201) acked.set(content, { id: body.message.id, conversationId, via: 'http' });
        } catch {
          connectionErrors++;
          if (exitState.exited) return;
          await sleep(20);
        }
      }
    };
    // Socket senders: each socket keeps up to 4 sends outstanding (pipelined) while it is open.
    const frameOutcome = new Map<string, string>(); // request_id → 'pending' | 'ack' | error code
    const socketLoop = async (s: TestSocket, tag: string, sender: SignedInUser) => {
      const conversationId = sender === a ? d : g;
      const outstanding = () => [...frameOutcome].filter(([k, v]) => k.startsWith(`${tag}-`) && v === 'pending').length;
      for (let i = 0; !stopLoops && s.ws.readyState === WebSocket.OPEN; i++) {
        while (outstanding() >= 4 && !stopLoops && s.ws.readyState === WebSocket.OPEN) await sleep(2);
        if (stopLoops || s.ws.readyState !== WebSocket.OPEN) break;
        const requestId = `${tag}-${i}`;
        const content = `burst socket ${requestId}`;
        frameOutcome.set(requestId, 'pending');
        s.send({ type: 'send', request_id: requestId, conversation_id: conversationId, content, client_message_id: content });
      }
    };
    for (const s of sockets) {
      s.ws.on('message', (data, isBinary) => {
        const f = isBinary ? packr.unpack(data as Buffer) : JSON.parse(String(data));
        if (f.type === 'ack') {
          frameOutcome.set(f.request_id, 'ack');
          acked.set(f.message.content, { id: f.message.id, conversationId: f.message.conversation_id, via: 'socket' });
        } else if (f.type === 'error') {
          frameOutcome.set(f.request_id, f.error.code);
          socketErrors.push(f.error.code);
        }
      });
    }
    const closes = sockets.map((s) => s.closed);

    const loops = [
      ...Array.from({ length: 16 }, (_, w) => httpLoop(w)),
      socketLoop(sockets[0]!, 'j', a),
      socketLoop(sockets[1]!, 'm', a),
      socketLoop(sockets[2]!, 'b', b),
    ];
    // Signal once the burst is well under way.
    const deadline = Date.now() + 20_000;
    while (acked.size < 150 && Date.now() < deadline) await sleep(10);
    expect(acked.size, 'the burst got going before the signal').toBeGreaterThanOrEqual(150);
    const ackedBeforeSignal = acked.size;
    signalledAt = Date.now();
    server.child.kill('SIGTERM');

    const exit = await Promise.race([server.exited, sleep(25_000).then(() => undefined)]);
    const exitMs = Date.now() - signalledAt;
    stopLoops = true;
    await Promise.all(loops);
    expect(exit, `the process exited within 25 s of SIGTERM; output:\n${server.lines.slice(-20).join('\n')}`).toBeDefined();
    expect(exit!.code, `exit code; output:\n${server.lines.slice(-20).join('\n')}`).toBe(0);
    console.log(
      `[ops] SIGTERM: ${ackedBeforeSignal} acks before the signal, ${acked.size} in all; exit after ${exitMs} ms; ` +
        `HTTP statuses ${JSON.stringify(Object.fromEntries(httpStatuses))}; after the signal ${JSON.stringify(Object.fromEntries(httpAfterSignal))}; ` +
        `${connectionErrors} connection errors; ${[...frameOutcome.values()].filter((v) => v === 'pending').length} frames unanswered; socket errors ${JSON.stringify(socketErrors.reduce<Record<string, number>>((m, c) => ((m[c] = (m[c] ?? 0) + 1), m), {}))}`,
    );

    // Sockets: closed by the server with 1001 (going away).
    const codes = await Promise.all(closes.map((c) => Promise.race([c, sleep(5000).then(() => ({ code: -1, reason: 'not closed' }))])));
    expect(codes.map((c) => c.code)).toEqual([1001, 1001, 1001]);

    // Only 201 (and 503 once shutting down) over HTTP; only `unavailable` errors over sockets.
    expect([...httpStatuses.keys()].filter((s) => s !== 201 && s !== 503)).toEqual([]);
    for (const key of httpAfterSignal.keys()) expect(['201 ', '503 unavailable']).toContain(key);
    expect(socketErrors.filter((c) => c !== 'unavailable')).toEqual([]);
    // The log says it stopped cleanly.
    expect(server.lines.some((l) => l.includes('"sotalk stopped"'))).toBe(true);

    // Every acknowledged message is in the database…
    const pool = testPool(db.url, 2);
    try {
      const ids = [...acked.values()].map((v) => v.id);
      const { rows } = await pool.query<{ id: string }>('SELECT id FROM messages WHERE id = ANY($1::uuid[])', [ids]);
      const stored = new Set(rows.map((r) => r.id));
      const lost = [...acked.entries()].filter(([, v]) => !stored.has(v.id));
      expect(lost.map(([content, v]) => `${v.via}: ${content}`), 'acknowledged but not in the database').toEqual([]);

      // …and nothing was committed without its answer reaching the client (the server waited for it).
      const all = await pool.query<{ client_message_id: string }>("SELECT client_message_id FROM messages WHERE client_message_id LIKE 'burst %'");
      const unanswered = all.rows.map((r) => r.client_message_id).filter((c) => !acked.has(c));
      expect(unanswered, 'committed but never acknowledged (the answer was lost in the shutdown)').toEqual([]);
    } finally {
      await pool.end();
    }

    // …and decrypts through a new server on the same database and key.
    const again = await startTestServer({ database: { ...db, drop: async () => {} }, env: { ENCRYPTION_MASTER_KEY: masterKey } });
    try {
      const served = new Map<string, string>();
      for (const conversationId of [d, g]) {
        let after = 0;
        for (;;) {
          const res = await fetch(`${again.baseUrl}/api/v1/conversations/${conversationId}/messages?limit=200&after_seq=${after}`, {
            headers: { authorization: `Bearer ${a.token}` },
          });
          expect(res.status).toBe(200);
          const page = (await res.json()) as { messages: any[]; has_more: boolean };
          for (const m of page.messages) {
            expect(m.integrity_error).toBeUndefined();
            served.set(m.id, m.content);
          }
          if (!page.has_more || page.messages.length === 0) break;
          after = page.messages.at(-1).seq;
        }
      }
      const wrong = [...acked.entries()].filter(([content, v]) => served.get(v.id) !== content);
      expect(wrong.map(([content]) => content), 'acknowledged messages that do not decrypt to what was sent').toEqual([]);
    } finally {
      await again.close();
    }
  }, 120_000);

  it('SIGINT on an idle server exits 0 promptly', async () => {
    const { server } = await newServer();
    const s = await openSocket(server.baseUrl, (await signIn(server.baseUrl)).token);
    server.child.kill('SIGINT');
    const exit = await Promise.race([server.exited, sleep(15_000).then(() => undefined)]);
    expect(exit?.code).toBe(0);
    expect((await s.closed).code).toBe(1001);
  }, 60_000);
});

// ---------------------------------------------------------------- malformed burst

/** Sends raw bytes on a fresh TCP connection; resolves with the HTTP status (or 'closed' / 'timeout'). */
function rawRequest(port: number, payload: Buffer | string, timeoutMs = 3000): Promise<number | 'closed' | 'timeout'> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let text = '';
    let done = false;
    const finish = (v: number | 'closed' | 'timeout') => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    socket.on('error', () => finish('closed'));
    socket.on('close', () => finish('closed'));
    socket.on('connect', () => socket.write(payload));
    socket.on('data', (d) => {
      text += d.toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      if (m) finish(Number(m[1]));
      else if (text.length > 12 && !text.startsWith('HTTP/')) finish('closed');
    });
  });
}

describe('a malformed burst', () => {
  it('1,000 malformed HTTP requests and 1,000 malformed frames: no 500, healthy, memory back near baseline', async () => {
    const { server } = await newServer();
    const base = server.baseUrl;
    const [a, b] = await Promise.all([signIn(base), signIn(base)]);
    const conv = await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] });
    const d: string = conv.body.conversation.id;
    // warm up: the code paths the burst takes, so baseline memory includes them
    for (let i = 0; i < 20; i++) expect((await a.api.post('/api/v1/messages', { conversation_id: d, content: `warm ${i}` })).status).toBe(201);
    expect((await a.api.get(`/api/v1/conversations/${d}/messages`)).status).toBe(200);
    await sleep(3000);
    const baseline = rssOf(await metricsOf(base));

    const auth = { authorization: `Bearer ${a.token}` };
    const json = { ...auth, 'content-type': 'application/json' };
    const deep = '{"a":'.repeat(5000) + '1' + '}'.repeat(5000);
    type Case = { name: string; expect?: number[]; run: () => Promise<number | 'closed' | 'timeout'> };
    const f = async (path: string, init: RequestInit) => (await fetch(base + path, init).then(async (r) => (await r.arrayBuffer(), r.status)));
    const raw = (payload: () => Buffer | string) => () => rawRequest(server.port, payload());
    const cases: Case[] = [
      { name: 'truncated JSON', expect: [400], run: () => f('/api/v1/messages', { method: 'POST', headers: json, body: `{"conversation_id":"${d}","content":` }) },
      { name: 'JSON array body', expect: [400], run: () => f('/api/v1/messages', { method: 'POST', headers: json, body: '[1,2,3]' }) },
      { name: 'invalid UTF-8 body', expect: [400], run: () => f('/api/v1/messages', { method: 'POST', headers: json, body: Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]) }) },
      { name: 'deeply nested JSON', expect: [400], run: () => f('/api/v1/messages', { method: 'POST', headers: json, body: deep }) },
      { name: 'text/plain body', expect: [415], run: () => f('/api/v1/messages', { method: 'POST', headers: { ...auth, 'content-type': 'text/plain' }, body: 'hello' }) },
      { name: 'xml body', expect: [415], run: () => f('/api/v1/messages', { method: 'POST', headers: { ...auth, 'content-type': 'application/xml' }, body: '<a/>' }) },
      { name: 'form body', expect: [415], run: () => f('/api/v1/conversations', { method: 'POST', headers: { ...auth, 'content-type': 'application/x-www-form-urlencoded' }, body: 'type=group' }) },
      { name: 'bad uuid in path', expect: [400], run: () => f('/api/v1/conversations/not-a-uuid/messages', { headers: auth }) },
      { name: 'bad escape in path', expect: [400], run: () => f('/api/v1/users/%E0%A4%A', { headers: auth }) },
      { name: 'bad uuid in PATCH path', expect: [400], run: () => f('/api/v1/messages/123', { method: 'PATCH', headers: json, body: '{"content":"x"}' }) },
      { name: 'bad uuid in body', expect: [400], run: () => f('/api/v1/messages', { method: 'POST', headers: json, body: JSON.stringify({ conversation_id: 'zzz', content: 'x' }) }) },
      { name: 'bad limit', expect: [400], run: () => f(`/api/v1/conversations/${d}/messages?limit=abc`, { headers: auth }) },
      { name: 'both cursors', expect: [400], run: () => f(`/api/v1/conversations/${d}/messages?before_seq=1&after_seq=1`, { headers: auth }) },
      { name: 'wrong type', expect: [400], run: () => f('/api/v1/messages', { method: 'POST', headers: json, body: JSON.stringify({ conversation_id: d, content: 5 }) }) },
      { name: 'unknown content_type', expect: [400], run: () => f('/api/v1/messages', { method: 'POST', headers: json, body: JSON.stringify({ conversation_id: d, content: 'x', content_type: 'exe' }) }) },
      { name: 'NUL in client_message_id', expect: [400], run: () => f('/api/v1/messages', { method: 'POST', headers: json, body: JSON.stringify({ conversation_id: d, content: 'x', client_message_id: 'a\u0000b' }) }) },
      { name: 'member_ids not a list', expect: [400], run: () => f('/api/v1/conversations', { method: 'POST', headers: json, body: JSON.stringify({ type: 'direct', member_ids: 'x' }) }) },
      { name: 'verify garbage', expect: [400, 401], run: () => f('/api/v1/auth/verify', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ wallet: '0OIl', nonce: 5, signature: [] }) }) },
      { name: 'no token', expect: [401], run: () => f('/api/v1/users/me', {}) },
      { name: 'garbage token', expect: [401], run: () => f('/api/v1/users/me', { headers: { authorization: `Bearer ${randomBytes(64).toString('base64')}` } }) },
      { name: 'unknown route', expect: [404], run: () => f(`/api/v1/${randomBytes(8).toString('hex')}`, { headers: auth }) },
      { name: 'declared huge body', expect: [413], run: raw(() => `POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${a.token}\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{`) },
      // uWS itself drops a connection declaring >= 1e9 bytes (no answer): not the server's 413
      { name: 'declared 1 GB body', run: raw(() => `POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${a.token}\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{`) },
      { name: 'huge header', run: raw(() => `GET /api/v1/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${a.token}\r\nX-Junk: ${'j'.repeat(64 * 1024)}\r\n\r\n`) },
      { name: 'many headers', run: raw(() => `GET /healthz HTTP/1.1\r\nHost: x\r\n${Array.from({ length: 500 }, (_, i) => `X-H${i}: ${i}`).join('\r\n')}\r\n\r\n`) },
      { name: 'random bytes', run: raw(() => randomBytes(512)) },
      { name: 'random bytes after a request line', run: raw(() => Buffer.concat([Buffer.from('POST /api/v1/messages HTTP/1.1\r\n'), randomBytes(256)])) },
      { name: 'bad chunked encoding', run: raw(() => `POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${a.token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`) },
      { name: 'unknown method', run: raw(() => 'BREW /api/v1/messages HTTP/1.1\r\nHost: x\r\n\r\n') },
      { name: 'HTTP/0.9 style', run: raw(() => 'GET /\r\n\r\n') },
    ];
    const outcomes = await bounded(1000, 16, async (i) => {
      const c = cases[i % cases.length]!;
      let status: number | 'closed' | 'timeout' | string;
      try {
        status = await c.run();
      } catch (err) {
        status = `error: ${(err as Error).message}`;
      }
      return { name: c.name, status, expected: c.expect };
    });
    const fiveHundreds = outcomes.filter((o) => typeof o.status === 'number' && o.status >= 500);
    expect([...new Set(fiveHundreds.map((o) => `${o.name}: ${o.status}`))], 'answers >= 500').toEqual([]);
    const unexpected = outcomes.filter((o) => o.expected && !o.expected.includes(o.status as number));
    expect([...new Set(unexpected.map((o) => `${o.name}: ${o.status} (expected ${o.expected})`))]).toEqual([]);
    const rawSummary: Record<string, Record<string, number>> = {};
    for (const o of outcomes.filter((x) => !x.expected)) {
      (rawSummary[o.name] ??= {})[String(o.status)] = (rawSummary[o.name]![String(o.status)] ?? 0) + 1;
    }
    console.log(`[ops] malformed raw requests: ${JSON.stringify(rawSummary)}`);

    // 1,000 malformed frames over three sockets (JSON, msgpack, JSON with the token in the query).
    const sj = await openSocket(base, a.token);
    const sm = await openSocket(base, a.token, { msgpack: true });
    const sq = await openSocket(base, b.token, { tokenInQuery: true });
    const jsonFrames: (() => string | Buffer)[] = [
      () => '{"type":"send",',
      () => 'not json at all',
      () => '[]',
      () => 'null',
      () => '42',
      () => '"send"',
      () => JSON.stringify({ type: 'nope', request_id: 'x' }),
      () => JSON.stringify({ type: 'send', request_id: 1 }),
      () => JSON.stringify({ type: 'send', request_id: 2, conversation_id: 'bad', content: 'x' }),
      () => JSON.stringify({ type: 'send', request_id: 3, conversation_id: d, content: 123 }),
      () => JSON.stringify({ type: 'send', request_id: 4, conversation_id: d, recipient_id: b.user.id, content: 'x' }),
      () => JSON.stringify({ type: 'send', request_id: 5, conversation_id: d, content: 'x', content_type: 'exe' }),
      () => JSON.stringify({ type: 'read', request_id: 6, conversation_id: d, seq: -1 }),
      () => JSON.stringify({ type: 'read', request_id: 7, conversation_id: d, seq: 'x' }),
      () => JSON.stringify({ type: 'received', request_id: 8, conversation_id: d, seq: 1e12 }),
      () => JSON.stringify({ type: 'typing', request_id: 9, conversation_id: 'x' }),
      () => JSON.stringify({ type: 'ping', request_id: { nested: true } }),
      () => JSON.stringify({ type: 'send', request_id: 'x'.repeat(500), conversation_id: d, content: 'x' }),
      () => '{"a":'.repeat(2000) + '1' + '}'.repeat(2000),
      () => randomBytes(64), // binary on a JSON socket
    ];
    const msgpackFrames: (() => string | Buffer)[] = [
      () => '{"type":"ping"}', // text on a msgpack socket
      () => Buffer.from([0xc1, 0xc1, 0xc1]), // never-used msgpack byte
      () => Buffer.from([0xdb, 0xff, 0xff, 0xff, 0xff]), // str32 claiming 4 GiB
      () => packr.pack(42),
      () => packr.pack([1, 2, 3]),
      () => packr.pack({ type: 'send', request_id: 10, conversation_id: 'bad', content: 'x' }),
      () => packr.pack({ type: 'read', request_id: 11, conversation_id: d, seq: 2 ** 60 }),
      () => packr.pack({ type: 'typing', request_id: 12 }),
      () => randomBytes(48),
    ];
    const sent = new Map<TestSocket, number>();
    const plan: [TestSocket, (() => string | Buffer)[]][] = [
      [sj, jsonFrames],
      [sm, msgpackFrames],
      [sq, jsonFrames],
    ];
    for (let i = 0; i < 1000; i++) {
      const [s, frames] = plan[i % plan.length]!;
      const frame = frames[Math.floor(i / plan.length) % frames.length]!();
      // ws sends a Buffer as binary unless told otherwise; strings as text
      s.ws.send(frame, { binary: typeof frame !== 'string' });
      sent.set(s, (sent.get(s) ?? 0) + 1);
      if (i % 50 === 49) await sleep(5);
    }
    const errorsOf = (s: TestSocket) => s.frames.filter((fr) => fr.type === 'error');
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && plan.some(([s]) => errorsOf(s).length < sent.get(s)!)) await sleep(50);
    for (const [s] of plan) {
      expect(s.ws.readyState, 'the socket stays open').toBe(WebSocket.OPEN);
      expect(errorsOf(s).length, 'one error frame per malformed frame').toBe(sent.get(s));
      const codes = new Set(errorsOf(s).map((e) => e.error?.code));
      expect([...codes].filter((c) => c !== 'invalid_request' && c !== 'not_found'), 'error codes').toEqual([]);
      // still usable
      s.send({ type: 'ping', request_id: 'after' });
      await s.next((fr) => fr.type === 'pong' && fr.request_id === 'after');
    }
    await Promise.all(plan.map(([s]) => s.close()));

    // Healthy: probes, a real send and a page still work; no 500 was counted.
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    expect((await a.api.post('/api/v1/messages', { conversation_id: d, content: 'after the burst' })).status).toBe(201);
    expect((await b.api.get(`/api/v1/conversations/${d}/messages`)).body.messages.at(-1).content).toBe('after the burst');
    const metrics = await metricsOf(base);
    expect(metrics.match(/^sotalk_http_requests_total\{[^}]*status="5\d\d"\} .*$/gm) ?? []).toEqual([]);

    // Memory settles back near the baseline (generous bound; the minimum over a settle period).
    let settled = Infinity;
    for (let i = 0; i < 10; i++) {
      await sleep(1000);
      settled = Math.min(settled, rssOf(await metricsOf(base)));
      if (settled < baseline + 16 * 1024 * 1024) break;
    }
    console.log(`[ops] RSS baseline ${(baseline / 2 ** 20).toFixed(1)} MiB, after the burst ${(settled / 2 ** 20).toFixed(1)} MiB`);
    expect(settled - baseline).toBeLessThan(64 * 1024 * 1024);
  }, 180_000);
});

