import type { Message } from '../services/message-view.js';

/** Server → client events about one conversation (SPEC §6). */
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
   * Delivers to every connection of every current member; `alsoTo` adds users who are no longer
   * members (a removed member hears of their removal).
   */
  publish(conversationId: string, event: ConversationEvent, alsoTo?: string[]): void;
}

export const noEvents: EventPublisher = { publish() {} };
