import { Packr } from 'msgpackr';
import { z } from 'zod';
import { invalid } from '../errors.js';
import { exactlyOneTarget, sendFields, sendTarget } from '../http/messages-routes.js';
import { uuid } from '../http/validation.js';

export const MSGPACK_PROTOCOL = 'sotalk.msgpack.v1';

/** Plain msgpack (no msgpackr records extension) so clients in any language can read frames. */
export const packr = new Packr({ useRecords: false, moreTypes: false });

const requestId = z.union([z.string().max(128), z.number().int()]).optional();
const seqFrame = { conversation_id: uuid, seq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER) };

/** Client → server frames (docs/protocol.md, docs/asyncapi.yaml), validated before any service sees them. */
export const clientFrame = z.discriminatedUnion('type', [
  z.object({ type: z.literal('send'), request_id: requestId, ...sendTarget, ...sendFields }).superRefine(exactlyOneTarget),
  z.object({ type: z.literal('received'), request_id: requestId, ...seqFrame }),
  z.object({ type: z.literal('read'), request_id: requestId, ...seqFrame }),
  z.object({ type: z.literal('typing'), request_id: requestId, conversation_id: uuid }),
  z.object({ type: z.literal('ping'), request_id: requestId }),
]);

export type ClientFrame = z.output<typeof clientFrame>;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Decodes one inbound frame; throws a 400 ApiError (with the request id when readable). */
export function decodeFrame(data: ArrayBuffer, isBinary: boolean, msgpack: boolean): unknown {
  if (msgpack !== isBinary) throw invalid(undefined, msgpack ? 'this socket speaks msgpack: send binary frames' : 'send JSON text frames');
  try {
    return msgpack ? packr.unpack(new Uint8Array(data)) : JSON.parse(utf8.decode(data));
  } catch {
    throw invalid(undefined, msgpack ? 'frame is not valid msgpack' : 'frame is not valid JSON');
  }
}

/** The request id of a raw frame, if it has a usable one (to tag error replies). */
export function requestIdOf(raw: unknown): string | number | undefined {
  const id = (raw as { request_id?: unknown } | null)?.request_id;
  return typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id)) ? id : undefined;
}
