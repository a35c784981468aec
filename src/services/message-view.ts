import type { MessageRow } from '../db/messages.js';
import type { MemberRow } from '../db/conversations.js';

export type MessageStatus = 'sent' | 'delivered' | 'read';

/** The message object (docs/openapi.json, Message). */
export interface Message {
  id: string;
  conversation_id: string;
  sender_id: string;
  seq: number;
  content: string | null;
  content_type: string;
  reply_to_id: string | null;
  client_message_id: string | null;
  signature: string | null;
  status: MessageStatus;
  created_at: string;
  updated_at: string;
  edited_at: string | null;
  deleted: boolean;
  integrity_error?: true;
}

export type MessageFields = Pick<
  MessageRow,
  'id' | 'conversation_id' | 'sender_id' | 'seq' | 'content_type' | 'reply_to_id' | 'client_message_id' | 'signature' | 'created_at' | 'updated_at' | 'edited_at' | 'deleted_at'
>;

/**
 * The fields a message is rendered from, copied out of a database row by name: one object shape
 * for every row (a rest copy `{ content, nonce, tag, ...row }` of pg's rows cost more per message
 * than its decryption), without the ciphertext, nonce and tag that cached pages need not keep.
 */
export function messageFields(r: MessageFields): MessageFields {
  return {
    id: r.id,
    conversation_id: r.conversation_id,
    sender_id: r.sender_id,
    seq: r.seq,
    content_type: r.content_type,
    reply_to_id: r.reply_to_id,
    client_message_id: r.client_message_id,
    signature: r.signature,
    created_at: r.created_at,
    updated_at: r.updated_at,
    edited_at: r.edited_at,
    deleted_at: r.deleted_at,
  };
}

/** A message row after decryption, without its ciphertext: what pages are built (and cached) from. */
export interface DecryptedRow {
  row: MessageFields;
  content: string | null;
  integrityError: boolean;
}

export function toMessage(row: MessageFields, content: string | null, status: MessageStatus, integrityError = false): Message {
  const message: Message = {
    id: row.id,
    conversation_id: row.conversation_id,
    sender_id: row.sender_id,
    seq: row.seq,
    content: row.deleted_at ? null : content,
    content_type: row.content_type,
    reply_to_id: row.reply_to_id,
    client_message_id: row.client_message_id,
    signature: row.signature,
    status,
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString(),
    edited_at: row.edited_at ? row.edited_at.toISOString() : null,
    deleted: row.deleted_at !== null,
  };
  if (integrityError) message.integrity_error = true;
  return message;
}

type Receipts = Pick<MemberRow, 'conversation_id' | 'user_id' | 'delivered_seq' | 'read_seq'>;

/** Members grouped by conversation, in one pass. */
export function groupByConversation<M extends { conversation_id: string }>(members: M[]): Map<string, M[]> {
  const groups = new Map<string, M[]>();
  for (const m of members) {
    const list = groups.get(m.conversation_id);
    if (list) list.push(m);
    else groups.set(m.conversation_id, [m]);
  }
  return groups;
}

/** Status of messages of several conversations, from each one's members (grouped, or a flat list). */
export function statusAcross(members: Map<string, Receipts[]> | Receipts[]): (row: Pick<MessageRow, 'conversation_id' | 'sender_id' | 'seq'>) => MessageStatus {
  const groups = Array.isArray(members) ? groupByConversation(members) : members;
  const views = new Map([...groups].map(([id, list]) => [id, new ReceiptView(list)]));
  return (row) => views.get(row.conversation_id)?.statusOf(row.sender_id, row.seq) ?? 'sent';
}

/**
 * Status of messages from the receipts of the members other than their sender: `read` when every
 * other member's read_seq covers the seq, `delivered` when every delivered_seq does.
 */
export class ReceiptView {
  readonly #members: Pick<MemberRow, 'user_id' | 'delivered_seq' | 'read_seq'>[];

  constructor(members: Pick<MemberRow, 'user_id' | 'delivered_seq' | 'read_seq'>[]) {
    this.#members = members;
  }

  statusOf(senderId: string, seq: number): MessageStatus {
    let read = true;
    let delivered = true;
    let others = 0;
    for (const m of this.#members) {
      if (m.user_id === senderId) continue;
      others++;
      if (m.read_seq < seq) read = false;
      if (m.delivered_seq < seq) delivered = false;
    }
    if (others === 0) return 'sent';
    return read ? 'read' : delivered ? 'delivered' : 'sent';
  }
}
