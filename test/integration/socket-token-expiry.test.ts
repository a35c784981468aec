// A socket lives no longer than the token it was opened with (docs/protocol.md): at expiry it gets
// an `error` frame (unauthorized) and is closed with 4001; a frame sent after expiry is refused so.
import { afterAll, expect, it } from 'vitest';
import { signIn, startTestServer, type TestServer } from '../helpers/server.js';
import { openSocket } from '../helpers/socket.js';

const servers: TestServer[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

it('closes a socket with 4001 when its token expires (AUTH_TOKEN_TTL_S=2)', async () => {
  const srv = await startTestServer({ env: { AUTH_TOKEN_TTL_S: '2' } });
  servers.push(srv);
  const u = await signIn(srv.baseUrl);
  const sock = await openSocket(srv.baseUrl, u.token);
  const closed = await Promise.race([sock.closed, new Promise<null>((r) => setTimeout(() => r(null), 8000))]);
  expect(closed?.code).toBe(4001);
  expect(sock.frames.some((f) => f.type === 'error' && f.error.code === 'unauthorized')).toBe(true);
}, 20_000);

it('a frame sent after the token expired (service clock) is refused with 4001, not handled', async () => {
  let now = Date.now();
  const srv = await startTestServer({ deps: { clock: () => new Date(now) } });
  servers.push(srv);
  const [a, b] = await Promise.all([signIn(srv.baseUrl), signIn(srv.baseUrl)]);
  const res = await a.api.post('/api/v1/conversations', { type: 'direct', member_ids: [b.user.id] });
  const sock = await openSocket(srv.baseUrl, a.token);
  now += 2 * 86_400_000; // past the default 24 h lifetime
  sock.send({ type: 'send', request_id: 'late', conversation_id: res.body.conversation.id, content: 'after expiry' });
  const closed = await sock.closed;
  expect(closed.code).toBe(4001);
  expect(sock.frames.some((f) => f.type === 'ack')).toBe(false);
  const { rows } = await srv.pool.query('SELECT count(*)::int AS n FROM messages');
  expect(rows[0].n).toBe(0);
}, 20_000);
