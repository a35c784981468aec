import { readFileSync } from 'node:fs';
import { Parser, type AsyncAPIDocumentInterface, type Diagnostic, type MessageInterface } from '@asyncapi/parser';
import { Ajv, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';

export const ASYNCAPI_PATH = new URL('../../docs/asyncapi.yaml', import.meta.url);

export interface FrameValidator {
  /** Frame type (`type` of the payload) → validator of that frame. */
  serverFrames: Map<string, ValidateFunction>;
  clientFrames: Map<string, ValidateFunction>;
}

export interface LoadedAsyncApi {
  document: AsyncAPIDocumentInterface;
  diagnostics: Diagnostic[];
  validators: FrameValidator;
  /** Every message of the document with its payload's frame type and its direction. */
  messages: { message: MessageInterface; frameType: string; direction: 'server' | 'client' }[];
}

/** The frame type a message's payload fixes (`properties.type.const`). */
function frameTypeOf(message: MessageInterface): string {
  const type = (message.payload()?.json() as { properties?: { type?: { const?: unknown } } } | undefined)?.properties?.type?.const;
  if (typeof type !== 'string') throw new Error(`message ${message.id()} has no constant payload type`);
  return type;
}

/**
 * Parses docs/asyncapi.yaml with the AsyncAPI parser (offline: the document has only local
 * references) and compiles each message's dereferenced payload schema with ajv. Messages the
 * server sends are those of `send` operations and the replies of `receive` operations.
 */
export async function loadAsyncApi(): Promise<LoadedAsyncApi> {
  const { document, diagnostics } = await new Parser().parse(readFileSync(ASYNCAPI_PATH, 'utf8'));
  if (!document) throw new Error(`docs/asyncapi.yaml does not parse: ${diagnostics.map((d) => `${d.path.join('.')}: ${d.message}`).join('; ')}`);
  const ajv = new Ajv({ allErrors: true, strict: true, strictRequired: false });
  addFormats.default(ajv);
  ajv.addKeyword('x-parser-schema-id');
  // by id: one message may be named by several operations (error: its own, and send's reply)
  const server = new Map<string, MessageInterface>();
  const client = new Map<string, MessageInterface>();
  for (const operation of document.operations()) {
    const [own, other] = operation.action() === 'send' ? [server, client] : [client, server];
    for (const m of operation.messages()) own.set(m.id(), m);
    for (const m of operation.reply()?.messages() ?? []) other.set(m.id(), m);
  }
  const messages: LoadedAsyncApi['messages'] = [];
  const validators: FrameValidator = { serverFrames: new Map(), clientFrames: new Map() };
  for (const [direction, set, map] of [['server', server, validators.serverFrames], ['client', client, validators.clientFrames]] as const) {
    for (const message of set.values()) {
      const frameType = frameTypeOf(message);
      if (map.has(frameType)) throw new Error(`two ${direction} messages have the frame type ${frameType}`);
      map.set(frameType, ajv.compile(message.payload()!.json()));
      messages.push({ message, frameType, direction });
    }
  }
  return { document, diagnostics, validators, messages };
}

/** Why a frame does not match the document ('' when it does). */
export function frameProblems(validators: Map<string, ValidateFunction>, frame: unknown): string {
  const type = (frame as { type?: unknown } | null)?.type;
  const validate = typeof type === 'string' ? validators.get(type) : undefined;
  if (!validate) return `no message with frame type ${JSON.stringify(type)} in docs/asyncapi.yaml`;
  if (validate(frame)) return '';
  return (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? ''} ${JSON.stringify(e.params)}`).join('; ');
}
