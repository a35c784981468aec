// Base58 (Bitcoin / Solana alphabet): the client library's, for the wallet screens.

export { base58Decode, base58Encode, isWalletAddress } from '../client/base58.js';
