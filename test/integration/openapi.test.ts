import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';

const doc = JSON.parse(readFileSync(new URL('../../docs/openapi.json', import.meta.url), 'utf8')) as {
  openapi: string;
  paths: Record<string, Record<string, unknown>>;
};
const METHODS = new Set(['get', 'post', 'put', 'patch', 'delete']);

describe('docs/openapi.json', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(() => server.close());

  it('is OpenAPI 3.1', () => {
    expect(doc.openapi).toMatch(/^3\.1\./);
  });

  it('documents exactly the routes the server registers', () => {
    // Operations marked x-sotalk-enabled-by exist only when that flag is on (test/e2e/web-server.test.ts).
    const documented = Object.entries(doc.paths)
      .flatMap(([path, ops]) =>
        Object.entries(ops)
          .filter(([m, op]) => METHODS.has(m) && !(op as Record<string, unknown>)['x-sotalk-enabled-by'])
          .map(([m]) => `${m.toUpperCase()} ${path}`),
      )
      .sort();
    const registered = server.server.routes.map((r) => `${r.method} ${r.path}`).sort();
    expect(registered).toEqual(documented);
  });
});
