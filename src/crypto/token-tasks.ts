import { TOKEN_BYTES } from './search-tokens.js';

/** Tokens of texts under one master key (fingerprint), one conversation per text. */
export interface TextTokenTask {
  fingerprint: string;
  conversationIds: string[];
  texts: string[];
}

/** Query tokens of `words` for each fingerprint × conversation (in that order). */
export interface QueryTokenTask {
  fingerprints: string[];
  conversationIds: string[];
  words: string[];
}

/** Token lists packed for the trip back from a worker: [count per list (u32)…][16-byte tokens…]. */
export function packTokenReply(lists: Buffer[][]): ArrayBuffer {
  const total = lists.reduce((n, l) => n + l.length, 0);
  const out = new ArrayBuffer(4 + 4 * lists.length + TOKEN_BYTES * total);
  const view = new DataView(out);
  view.setUint32(0, lists.length, true);
  const bytes = Buffer.from(out);
  let at = 4 + 4 * lists.length;
  lists.forEach((list, i) => {
    view.setUint32(4 + 4 * i, list.length, true);
    for (const t of list) {
      // Buffer#copy: no view object per token (a subarray + set cost ~3 µs a message of 44 words)
      t.copy(bytes, at, 0, TOKEN_BYTES);
      at += TOKEN_BYTES;
    }
  });
  return out;
}

/** The inverse of packTokenReply; throws on a reply of the wrong shape (a worker's answer is checked). */
export function readTokenReply(reply: unknown, expectedLists: number): Buffer[][] {
  if (!(reply instanceof ArrayBuffer) || reply.byteLength < 4) throw new Error('token reply is not a buffer');
  const view = new DataView(reply);
  const n = view.getUint32(0, true);
  if (n !== expectedLists || reply.byteLength < 4 + 4 * n) throw new Error('token reply has the wrong number of lists');
  const buf = Buffer.from(reply);
  let at = 4 + 4 * n;
  const lists: Buffer[][] = [];
  for (let i = 0; i < n; i++) {
    const count = view.getUint32(4 + 4 * i, true);
    if (at + count * TOKEN_BYTES > reply.byteLength) throw new Error('token reply is truncated');
    const list: Buffer[] = [];
    for (let j = 0; j < count; j++, at += TOKEN_BYTES) list.push(buf.subarray(at, at + TOKEN_BYTES));
    lists.push(list);
  }
  if (at !== reply.byteLength) throw new Error('token reply has trailing bytes');
  return lists;
}
