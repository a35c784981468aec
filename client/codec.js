// Socket frame encodings (docs/protocol.md, Frames and encodings): JSON text frames, or plain
// msgpack binary frames under the sotalk.msgpack.v1 subprotocol.

export const MSGPACK_PROTOCOL = 'sotalk.msgpack.v1';

/** @type {import('./types.js').Codec} */
export const jsonCodec = {
  protocol: undefined,
  encode: (frame) => JSON.stringify(frame),
  decode: (data) => JSON.parse(typeof data === 'string' ? data : new TextDecoder().decode(data)),
};

/**
 * The msgpack codec around `msgpack` (pack/unpack), by default msgpackr without its record
 * extension (imported on first use: Node, or a browser with an import map naming it).
 * @param {import('./types.js').LiveOptions['msgpack']} [msgpack]
 * @returns {Promise<import('./types.js').Codec>}
 */
export async function msgpackCodec(msgpack) {
  let impl = msgpack;
  if (!impl) {
    const { Packr } = await import('msgpackr');
    impl = new Packr({ useRecords: false, moreTypes: false });
  }
  const { pack, unpack } = /** @type {NonNullable<typeof msgpack>} */ (impl);
  return {
    protocol: MSGPACK_PROTOCOL,
    encode: (frame) => pack.call(impl, frame),
    decode: (data) => {
      if (typeof data === 'string') throw new TypeError('a text frame on a msgpack socket');
      return unpack.call(impl, data instanceof Uint8Array ? data : new Uint8Array(data));
    },
  };
}
