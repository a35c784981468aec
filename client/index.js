// The SoTalk client library: plain ES modules with JSDoc types, for Node 20 and browsers
// (served by the server at /client/index.js). See client/README.md.

export { base58Decode, base58Encode, isWalletAddress } from './base58.js';
export { newClientMessageId, SoTalkClient } from './client.js';
export { jsonCodec, MSGPACK_PROTOCOL, msgpackCodec } from './codec.js';
export { ENDPOINTS } from './endpoints.js';
export { isTransient, SoTalkError } from './errors.js';
export { LiveConnection } from './live.js';
export { generateWallet, walletFromSeed } from './wallet.js';
