// docs/asyncapi.yaml: a valid AsyncAPI 3.0 document, self-contained, whose examples match its
// schemas and whose message object is the HTTP API's (docs/openapi.json).
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ASYNCAPI_PATH, frameProblems, loadAsyncApi, type LoadedAsyncApi } from '../helpers/asyncapi.js';

let api: LoadedAsyncApi;

beforeAll(async () => {
  api = await loadAsyncApi();
});

/** Every `$ref` value in a parsed YAML/JSON text. */
const refsIn = (text: string) => [...text.matchAll(/\$ref:\s*'?([^'\s]+)'?/g)].map((m) => m[1]!);

describe('docs/asyncapi.yaml', () => {
  it('is a valid AsyncAPI 3.0 document: no errors or warnings from the parser', () => {
    expect(api.document.version()).toBe('3.0.0');
    const serious = api.diagnostics.filter((d) => d.severity <= 1); // 0 error, 1 warning
    expect(serious.map((d) => `${d.path.join('.')}: ${d.message}`)).toEqual([]);
  });

  it('refers only to itself (parsing needs no network and no other file)', () => {
    const refs = refsIn(readFileSync(ASYNCAPI_PATH, 'utf8'));
    expect(refs.length).toBeGreaterThan(50);
    expect(refs.filter((r) => !r.startsWith('#/'))).toEqual([]);
  });

  it('describes every frame of the protocol, once per direction', () => {
    const server = api.messages.filter((m) => m.direction === 'server').map((m) => m.frameType).sort();
    const client = api.messages.filter((m) => m.direction === 'client').map((m) => m.frameType).sort();
    expect(server).toEqual(['ack', 'error', 'hello', 'key_rotated', 'member_added', 'member_removed', 'message_deleted', 'message_updated', 'new_message', 'pong', 'receipt', 'typing']);
    expect(client).toEqual(['ping', 'read', 'received', 'send', 'typing']);
  });

  it('every message has examples, and each matches its payload schema', () => {
    for (const { message, direction } of api.messages) {
      const examples = message.examples().all();
      expect(examples.length, message.id()).toBeGreaterThan(0);
      const validators = direction === 'server' ? api.validators.serverFrames : api.validators.clientFrames;
      for (const example of examples) expect(frameProblems(validators, example.payload()), `${message.id()}: ${JSON.stringify(example.payload())}`).toBe('');
    }
  });

  it('the schemas reject what the protocol does not allow (the validation can fail)', () => {
    const server = api.validators.serverFrames;
    const id = '01a228d9-8b36-7157-958e-b4ca112e99d1';
    expect(frameProblems(server, { type: 'hello', user_id: id })).toBe('');
    expect(frameProblems(server, { type: 'hello', user_id: 'not-a-uuid' })).toMatch(/format/);
    expect(frameProblems(server, { type: 'hello', user_id: id, extra: 1 })).toMatch(/additional/);
    expect(frameProblems(server, { type: 'receipt', conversation_id: id, user_id: id, delivered_seq: '1', read_seq: 0 })).toMatch(/integer/);
    expect(frameProblems(server, { type: 'error', request_id: null, error: { code: 'teapot', message: 'x' } })).toMatch(/allowed values/);
    expect(frameProblems(server, { type: 'shout' })).toMatch(/no message/);
    const client = api.validators.clientFrames;
    expect(frameProblems(client, { type: 'send', conversation_id: id, content: 'x' })).toBe('');
    expect(frameProblems(client, { type: 'send', conversation_id: id, recipient_id: id, content: 'x' })).not.toBe('');
    expect(frameProblems(client, { type: 'send', content: 'x' })).not.toBe('');
    expect(frameProblems(client, { type: 'read', conversation_id: id, seq: -1 })).toMatch(/>= 0/);
  });

  it('its message object is the HTTP API’s Message (docs/openapi.json), field for field', () => {
    const openapi = JSON.parse(readFileSync(new URL('../../docs/openapi.json', import.meta.url), 'utf8')) as {
      components: { schemas: { Message: { required: string[]; properties: Record<string, unknown> } } };
    };
    const ack = api.messages.find((m) => m.frameType === 'ack')!.message.payload()!.json() as {
      properties: { message: { required: string[]; properties: Record<string, unknown> } };
    };
    const ours = ack.properties.message;
    const theirs = openapi.components.schemas.Message;
    expect([...ours.required].sort()).toEqual([...theirs.required].sort());
    expect(Object.keys(ours.properties).sort()).toEqual(Object.keys(theirs.properties).sort());
  });

  it('every close code the server sends is documented, here and in docs/protocol.md', () => {
    const source = readFileSync(new URL('../../src/realtime/socket-server.ts', import.meta.url), 'utf8');
    const sent = [...source.matchAll(/\.end\((\d{4}),/g)].map((m) => m[1]!);
    expect(sent).toEqual(expect.arrayContaining(['1001', '1009', '4001'])); // found: the scan works
    const protocol = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8');
    const table = protocol.slice(protocol.indexOf('### Close codes'), protocol.indexOf('### Catching up'));
    const described = api.document.info().description() ?? '';
    for (const code of [...sent, '1000', '1006']) {
      expect(table, `close code ${code} in docs/protocol.md`).toMatch(new RegExp(`^\\| ${code} \\|`, 'm'));
      expect(described, `close code ${code} in docs/asyncapi.yaml`).toContain(code);
    }
  });
});
