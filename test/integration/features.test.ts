// GET /api/v1/features: clients learn which optional endpoints exist without probing them
// (issue "Production build and an operator's command line", the web client item).
import { afterEach, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';

let srv: TestServer | undefined;
afterEach(async () => {
  await srv?.close();
  srv = undefined;
});

describe('GET /api/v1/features', () => {
  it('without a token: search on, at-rest panel off, the message size limit', async () => {
    srv = await startTestServer({ env: { MAX_MESSAGE_BYTES: '1000' } });
    const res = await fetch(`${srv.baseUrl}/api/v1/features`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ features: { search: true, at_rest_panel: false, max_message_bytes: 1000 } });
  });

  it('follows SEARCH_ENABLED and SOTALK_AT_REST_PANEL, and the endpoints it names exist exactly then', async () => {
    srv = await startTestServer({ env: { SEARCH_ENABLED: 'false', SOTALK_AT_REST_PANEL: 'true' } });
    const body = (await (await fetch(`${srv.baseUrl}/api/v1/features`)).json()) as { features: unknown };
    expect(body.features).toMatchObject({ search: false, at_rest_panel: true });
    // search is absent (the router's 404 for an unknown endpoint), at-rest is present (401 without a token)
    expect((await fetch(`${srv.baseUrl}/api/v1/search?q=x`)).status).toBe(404);
    expect((await fetch(`${srv.baseUrl}/api/v1/messages/00000000-0000-0000-0000-000000000000/at-rest`)).status).toBe(401);
  });
});
