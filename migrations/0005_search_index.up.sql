-- Blind index for search (docs/design.md): per message, the first 16 bytes of
-- HMAC-SHA256(search_key, word) of each distinct word; never the word itself.
CREATE TABLE message_search_tokens (
  conversation_id uuid NOT NULL,
  token           bytea NOT NULL CHECK (octet_length(token) = 16),
  message_id      uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
  PRIMARY KEY (conversation_id, token, message_id)
);
CREATE INDEX message_search_tokens_message ON message_search_tokens (message_id);

-- `sotalk reindex` decrypts messages to rebuild their tokens: audited under its own purpose.
ALTER TABLE decryption_audit DROP CONSTRAINT decryption_audit_purpose_check;
ALTER TABLE decryption_audit ADD CONSTRAINT decryption_audit_purpose_check
  CHECK (purpose IN ('fetch', 'search', 'export', 'reencrypt', 'verify', 'reindex'));

-- Which master key a message's tokens were computed under (reindex and rotate-master resume from it).
CREATE TABLE message_search_state (
  message_id             uuid PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
  master_key_fingerprint text NOT NULL
);
