import type { Message } from '../services/message-view.js';

/** Server → client events about one conversation (docs/protocol.md, docs/asyncapi.yaml). */
export type ConversationEvent =
  | { type: 'new_message'; message: Message }
  | { type: 'message_updated'; message: Message }
  | { type: 'message_deleted'; conversation_id: string; id: string; seq: number }
  | { type: 'receipt'; conversation_id: string; user_id: string; delivered_seq: number; read_seq: number }
  | { type: 'typing'; conversation_id: string; user_id: string }
  | { type: 'key_rotated'; conversation_id: string; current_key_version: number }
  | { type: 'member_added'; conversation_id: string; user_id: string }
  | { type: 'member_removed'; conversation_id: string; user_id: string };

/** Where services hand events once the change they describe is committed. */
export interface EventPublisher {
  /**
   * Delivers to every connection of every current member. `prevAt` (ms since the epoch) is when
   * a new_message's predecessor was committed, so receivers know whether to wait for it.
   */
  publish(conversationId: string, event: ConversationEvent, prevAt?: number): void;
  /** Users joined a conversation (one event for all of them, e.g. a new group). */
  membersAdded(conversationId: string, userIds: string[]): void;
  /** A user left: the remaining members and the user hear of it. */
  memberRemoved(conversationId: string, userId: string): void;
}

export const noEvents: EventPublisher = { publish() {}, membersAdded() {}, memberRemoved() {} };
