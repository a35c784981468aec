import { invalid } from '../errors.js';
import { readTokenReply, type QueryTokenTask, type TextTokenTask } from '../crypto/token-tasks.js';
import type { QueryToken, SearchKeys } from '../keys/search-keys.js';

export interface SearchTokenizerOptions {
  keys: SearchKeys;
  /** Runs a worker task (MessageCipher.runTask); undefined when there is no pool. */
  runTask: (name: 'textTokens' | 'queryTokens', task: object) => Promise<unknown> | undefined;
  /** Whether there are workers (CRYPTO_POOL_SIZE > 0); without, everything runs here, in slices. */
  pooled: boolean;
  /** Texts of at most this many characters in one turn of the event loop are tokenised inline. */
  inlineChars?: number;
  /** Query tokens (conversations × words × master keys) computed inline at most. */
  inlineQueryTokens?: number;
  /** Most query tokens one search may need; more is a 400 on `q`. */
  maxQueryTokens: number;
}

interface Pending {
  conversationId: string;
  text: string;
  resolve: (tokens: Buffer[]) => void;
  reject: (err: unknown) => void;
}

/** Query tokens per worker task: each is a few milliseconds of HMAC. */
const QUERY_CHUNK = 4096;
/** Characters of text per worker task. */
const TEXT_CHUNK = 256 * 1024;

/**
 * Blind-index tokens for sends, edits and searches, kept off the main thread: texts submitted in
 * one turn of the event loop go to a worker as one task (small ones run inline, where a worker
 * round trip would cost more than the HMACs), and a search's query tokens are computed in
 * chunks on the workers. A search needing more than `maxQueryTokens` is refused (400).
 */
export class SearchTokenizer {
  readonly #o: Required<SearchTokenizerOptions>;
  #pending: Pending[] = [];
  #pendingChars = 0;
  #scheduled = false;

  constructor(options: SearchTokenizerOptions) {
    this.#o = { inlineChars: 2048, inlineQueryTokens: 512, ...options };
  }

  get activeFingerprint(): string {
    return this.#o.keys.activeFingerprint;
  }

  /** Tokens of a message's distinct words under the active master key. */
  tokensFor(conversationId: string, text: string): Promise<Buffer[]> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ conversationId, text, resolve, reject });
      this.#pendingChars += text.length;
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => this.#flush());
      }
    });
  }

  #flush(): void {
    this.#scheduled = false;
    const batch = this.#pending;
    const chars = this.#pendingChars;
    this.#pending = [];
    this.#pendingChars = 0;
    const fingerprint = this.#o.keys.activeFingerprint;
    if (chars <= this.#o.inlineChars) {
      this.#inline(batch);
      return;
    }
    if (!this.#o.pooled) {
      void this.#inlineSliced(batch);
      return;
    }
    for (let start = 0; start < batch.length; ) {
      const chunk: Pending[] = [];
      let size = 0;
      while (start < batch.length && (chunk.length === 0 || size + batch[start]!.text.length <= TEXT_CHUNK)) {
        size += batch[start]!.text.length;
        chunk.push(batch[start++]!);
      }
      const task: TextTokenTask = { fingerprint, conversationIds: chunk.map((p) => p.conversationId), texts: chunk.map((p) => p.text) };
      this.#o.runTask('textTokens', task)!.then(
        (reply) => {
          let lists: Buffer[][];
          try {
            lists = readTokenReply(reply, chunk.length);
          } catch {
            return this.#inline(chunk); // a malformed worker reply: computed here instead
          }
          chunk.forEach((p, i) => p.resolve(lists[i]!));
        },
        () => this.#inline(chunk),
      );
    }
  }

  /** Without workers: one text per turn of the event loop, so other work runs in between. */
  async #inlineSliced(batch: Pending[]): Promise<void> {
    for (const p of batch) {
      await new Promise((resolve) => setImmediate(resolve));
      this.#inline([p]);
    }
  }

  #inline(batch: Pending[]): void {
    for (const p of batch) {
      try {
        p.resolve(this.#o.keys.tokensFor(p.conversationId, p.text));
      } catch (err) {
        p.reject(err);
      }
    }
  }

  /**
   * Tokens of each query word for each conversation under every master key held (messages
   * indexed before a master-key rotation finished are found too).
   */
  async queryTokens(conversationIds: string[], words: string[]): Promise<QueryToken[]> {
    const fingerprints = this.#o.keys.fingerprints();
    const needed = fingerprints.length * conversationIds.length * words.length;
    if (needed > this.#o.maxQueryTokens) {
      throw invalid(
        'q',
        `this search needs ${needed} tokens (${words.length} words × ${conversationIds.length} conversations × ${fingerprints.length} keys), more than ${this.#o.maxQueryTokens}: use fewer words or conversation_id`,
      );
    }
    if (needed <= this.#o.inlineQueryTokens) return this.#o.keys.queryTokens(conversationIds, words);
    const perChunk = Math.max(1, Math.floor(QUERY_CHUNK / Math.max(1, words.length)));
    const tasks: QueryTokenTask[] = [];
    for (const fingerprint of fingerprints) {
      for (let i = 0; i < conversationIds.length; i += perChunk) {
        tasks.push({ fingerprints: [fingerprint], conversationIds: conversationIds.slice(i, i + perChunk), words });
      }
    }
    if (this.#o.pooled) return (await Promise.all(tasks.map((task) => this.#pooledChunk(task)))).flat();
    // Without workers: one chunk per turn of the event loop, one after the other (chunks queued
    // together would all run in the same check phase, with no I/O in between).
    const out: QueryToken[] = [];
    for (const task of tasks) {
      await new Promise((resolve) => setImmediate(resolve));
      const lists = task.conversationIds.map((c) => this.#o.keys.wordTokensUnder(task.fingerprints[0]!, c, task.words) ?? []);
      out.push(...flatten(task, lists));
    }
    return out;
  }

  async #pooledChunk(task: QueryTokenTask): Promise<QueryToken[]> {
    return flatten(task, readTokenReply(await this.#o.runTask('queryTokens', task), task.conversationIds.length));
  }
}

function flatten(task: QueryTokenTask, lists: Buffer[][]): QueryToken[] {
  const out: QueryToken[] = [];
  task.conversationIds.forEach((conversationId, i) => lists[i]!.forEach((token, word) => out.push({ conversationId, token, word })));
  return out;
}
