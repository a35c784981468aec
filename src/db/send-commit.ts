import type { NewMessage } from './messages.js';
import type { Queryable } from './transaction.js';

/** What the group commit decided for one message. */
export type CommitVerdict =
  /** prevAt: when the message before it was committed (ms), for receivers' ordering. */
  | { kind: 'inserted'; seq: number; created_at: Date; updated_at: Date; prevAt: number }
  /** The sender already has a message with this client_message_id here: answer with it. */
  | { kind: 'duplicate' }
  | { kind: 'not_member' }
  | { kind: 'bad_reply' }
  /** Encrypted under a key version that is no longer current (rotated meanwhile): seal again. */
  | { kind: 'stale_key'; currentVersion: number };

export interface CommitResult {
  /** One per message, in the order given. */
  verdicts: CommitVerdict[];
  /** Conversations whose current key version was retired (full) by this commit. */
  retired: string[];
}

export interface CommitOptions {
  /** Retire a key version after this many encryptions (0: never by count). */
  maxMessagesPerKey: number;
  /** Master key new versions are created under. */
  activeFingerprint: string;
  nowUnixSeconds: number;
}

interface OutcomeRow {
  idx: number | null;
  verdict: string;
  seq: string | null;
  created_at: Date | null;
  updated_at: Date | null;
  current_version: number | null;
  prev_at: Date | null;
  retired: string | null;
}

const NONCE = 12;
const TAG = 16;
const TOKEN = 16;

/**
 * Packs every message's nonce, tag, ciphertext and search tokens into one buffer, sent as a single
 * binary bytea parameter (an array of bytea would travel as hex text, twice the bytes and a parse).
 */
export function packSendBlob(messages: NewMessage[]): { blob: Buffer; offsets: number[]; lengths: number[]; tokenCounts: number[] } {
  let size = 0;
  for (const m of messages) size += NONCE + TAG + m.ciphertext.length + (m.search ? m.search.tokens.length * TOKEN : 0);
  const blob = Buffer.allocUnsafe(size);
  const offsets: number[] = [];
  const lengths: number[] = [];
  const tokenCounts: number[] = [];
  let at = 0;
  for (const m of messages) {
    offsets.push(at);
    lengths.push(m.ciphertext.length);
    at += m.nonce.copy(blob, at);
    at += m.tag.copy(blob, at);
    at += m.ciphertext.copy(blob, at);
    if (m.search) {
      for (const token of m.search.tokens) at += token.copy(blob, at, 0, TOKEN);
      tokenCounts.push(m.search.tokens.length);
    } else tokenCounts.push(-1);
  }
  return { blob, offsets, lengths, tokenCounts };
}

/**
 * One group commit in one round trip: `sotalk_send_batch` (migration 0008) locks the
 * conversations, checks membership, idempotency, reply targets and key staleness in a fresh
 * snapshot, assigns gap-free seqs, inserts messages, metadata and search rows, counts key use and
 * retires full key versions — one autocommit call, so durable when it returns.
 */
export async function commitSendBatch(db: Queryable, messages: NewMessage[], options: CommitOptions): Promise<CommitResult> {
  const { blob, offsets, lengths, tokenCounts } = packSendBlob(messages);
  const fingerprints = new Set(messages.flatMap((m) => (m.search ? [m.search.fingerprint] : [])));
  if (fingerprints.size > 1) throw new Error('group commit: messages indexed under different master keys');
  const { rows } = await db.query<OutcomeRow>({
    name: 'sotalk_send_batch',
    text: 'SELECT * FROM sotalk_send_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)',
    values: [
      messages.map((m) => m.id),
      messages.map((m) => m.conversationId),
      messages.map((m) => m.senderId),
      messages.map((m) => m.contentType),
      messages.map((m) => m.signature),
      messages.map((m) => m.replyToId),
      messages.map((m) => m.clientMessageId),
      messages.map((m) => m.keyVersion),
      messages.map((m) => m.keyFingerprint),
      offsets,
      lengths,
      tokenCounts,
      blob,
      [...fingerprints][0] ?? null,
      options.maxMessagesPerKey,
      options.activeFingerprint,
      options.nowUnixSeconds,
    ],
  });
  const verdicts: CommitVerdict[] = new Array<CommitVerdict>(messages.length);
  const retired: string[] = [];
  for (const r of rows) {
    if (r.verdict === 'retired') {
      retired.push(r.retired!);
      continue;
    }
    const i = r.idx! - 1;
    switch (r.verdict) {
      case 'ok':
        verdicts[i] = { kind: 'inserted', seq: Number(r.seq), created_at: r.created_at!, updated_at: r.updated_at!, prevAt: (r.prev_at ?? r.created_at!).getTime() };
        break;
      case 'stale_key':
        verdicts[i] = { kind: 'stale_key', currentVersion: r.current_version! };
        break;
      case 'duplicate':
      case 'not_member':
      case 'bad_reply':
        verdicts[i] = { kind: r.verdict };
        break;
      default:
        throw new Error(`group commit: unknown verdict ${r.verdict}`);
    }
  }
  for (let i = 0; i < messages.length; i++) if (!verdicts[i]) throw new Error('group commit: a message is missing from the reply');
  return { verdicts, retired };
}
