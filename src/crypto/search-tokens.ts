import { createHmac, hkdfSync, type KeyObject } from 'node:crypto';

const SEARCH_INFO = 'sotalk-search-v1';
export const TOKEN_BYTES = 16;
const MIN_WORD = 2;
const MAX_WORD = 64;

// Scripts written without spaces: indexed as overlapping character pairs.
const PAIRED = /[\p{Script_Extensions=Han}\p{Script_Extensions=Hiragana}\p{Script_Extensions=Katakana}\p{Script_Extensions=Thai}]/u;
// A word: a maximal run of letters, marks and decimal digits. Variation selectors (the mark that
// turns ❤ into ❤️) end a word like the emoji they belong to, and a run never starts with a mark.
const WORD = /[\p{L}\p{Nd}][\p{L}\p{M}\p{Nd}]*/gu;
const SURROGATE = /[\uD800-\uDFFF]/;
const VARIATION_SELECTORS = /[\u{FE00}-\u{FE0F}\u{E0100}-\u{E01EF}]/gu;

/**
 * The distinct indexable words of a text (docs/design.md, search): NFKC, lower case (locale-independent),
 * maximal runs of letters, marks and digits of 2..64 characters; Han, Hiragana, Katakana and
 * Thai runs become overlapping character pairs.
 */
export function searchWords(text: string): string[] {
  const words = new Set<string>();
  for (const [run] of text.normalize('NFKC').toLowerCase().replace(VARIATION_SELECTORS, ' ').matchAll(WORD)) {
    if (!PAIRED.test(run)) {
      // The common case, no paired script in the run: one word (length in code points).
      const length = SURROGATE.test(run) ? [...run].length : run.length;
      if (length >= MIN_WORD && length <= MAX_WORD) words.add(run);
      continue;
    }
    // Split the run where it switches between paired and spaced scripts.
    let segment: string[] = [];
    let paired: boolean | undefined;
    const flush = () => {
      if (segment.length === 0) return;
      if (paired) {
        for (let i = 0; i + 1 < segment.length; i++) words.add(segment[i]! + segment[i + 1]!);
      } else if (segment.length >= MIN_WORD && segment.length <= MAX_WORD) {
        words.add(segment.join(''));
      }
      segment = [];
    };
    for (const ch of run) {
      // Marks belong to the character before them, whatever its script.
      const isPaired = /\p{M}/u.test(ch) && paired !== undefined ? paired : PAIRED.test(ch);
      if (paired !== undefined && isPaired !== paired) flush();
      paired = isPaired;
      segment.push(ch);
    }
    flush();
  }
  return [...words];
}

/** Per-conversation search key: HKDF(active master key, salt = conversation id, "sotalk-search-v1"). */
export function deriveSearchKey(masterKey: Buffer | KeyObject, conversationId: string): Buffer {
  return Buffer.from(hkdfSync('sha256', masterKey, conversationId.toLowerCase(), SEARCH_INFO, 32));
}

/** Blind-index token of one word: the first 16 bytes of HMAC-SHA256(search key, word). */
export function searchToken(searchKey: Buffer | KeyObject, word: string): Buffer {
  return createHmac('sha256', searchKey).update(word, 'utf8').digest().subarray(0, TOKEN_BYTES);
}
