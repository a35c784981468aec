// Unit tests: what a page is built and cached from (src/services/message-view.ts).
import { describe, expect, it } from 'vitest';
import type { MessageRow } from '../../src/db/messages.js';
import { messageFields, toMessage } from '../../src/services/message-view.js';

const row: MessageRow = {
  id: '01a228aa-4db1-75c1-8ea5-78ab11748a01',
  conversation_id: '01a228aa-4da0-7095-914f-2e21a3e5d4b4',
  sender_id: '01a228aa-4d6e-722d-b0c8-37c83dc53599',
  seq: 7,
  content: Buffer.from('ciphertext'),
  content_type: 'text',
  signature: null,
  reply_to_id: null,
  client_message_id: 'c-1',
  created_at: new Date('2026-12-05T10:00:00.123Z'),
  updated_at: new Date('2026-12-05T10:00:01.456Z'),
  edited_at: null,
  deleted_at: null,
  nonce: Buffer.alloc(12),
  tag: Buffer.alloc(16),
  key_version: 3,
  created_unix_seconds: 1_700_000_000,
  master_key_fingerprint: 'abcd',
};

describe('messageFields', () => {
  it('keeps the rendered fields and nothing of the ciphertext, its nonce, tag or key', () => {
    const fields = messageFields(row);
    expect(Object.keys(fields).sort()).toEqual(
      ['client_message_id', 'content_type', 'conversation_id', 'created_at', 'deleted_at', 'edited_at', 'id', 'reply_to_id', 'sender_id', 'seq', 'signature', 'updated_at'].sort(),
    );
    expect(toMessage(fields, 'hello', 'read')).toEqual({
      id: row.id,
      conversation_id: row.conversation_id,
      sender_id: row.sender_id,
      seq: 7,
      content: 'hello',
      content_type: 'text',
      reply_to_id: null,
      client_message_id: 'c-1',
      signature: null,
      status: 'read',
      created_at: '2026-12-05T10:00:00.123Z',
      updated_at: '2026-12-05T10:00:01.456Z',
      edited_at: null,
      deleted: false,
    });
  });
});
