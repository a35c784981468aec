// A client that goes away in the middle of a request body must not stay "in flight": shutdown
// would otherwise wait its whole drain timeout (10 s) for a request that can never finish.
import net from 'node:net';
import { expect, it } from 'vitest';
import { signIn, startTestServer } from '../helpers/server.js';

it('aborted bodies do not hold shutdown for the drain timeout', async () => {
  const srv = await startTestServer();
  let closed = false;
  try {
    const u = await signIn(srv.baseUrl);
    for (let i = 0; i < 3; i++) {
      await new Promise<void>((resolve, reject) => {
        const sock = net.connect(srv.port, '127.0.0.1', () => {
          sock.write(
            `POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${u.token}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"content":"half a bo`,
          );
          setTimeout(() => {
            sock.destroy();
            resolve();
          }, 100);
        });
        sock.on('error', reject);
      });
    }
    await new Promise((r) => setTimeout(r, 200));
    // the server still answers normally
    expect((await fetch(`${srv.baseUrl}/healthz`)).status).toBe(200);
    const started = Date.now();
    await srv.close();
    closed = true;
    expect(Date.now() - started).toBeLessThan(5_000);
  } finally {
    if (!closed) await srv.close();
  }
}, 30_000);
