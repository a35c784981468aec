DROP VIEW IF EXISTS message_search_tokens;
DROP VIEW IF EXISTS message_search_state;
CREATE TABLE message_search_tokens (
  conversation_id uuid NOT NULL,
  token           bytea NOT NULL CHECK (octet_length(token) = 16),
  message_id      uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
  PRIMARY KEY (conversation_id, token, message_id)
);
CREATE INDEX message_search_tokens_message ON message_search_tokens (message_id);
CREATE TABLE message_search_state (
  message_id             uuid PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
  master_key_fingerprint text NOT NULL
);
INSERT INTO message_search_tokens (conversation_id, token, message_id)
SELECT DISTINCT i.conversation_id, t.token, i.message_id FROM message_search_index i, unnest(i.tokens) AS t(token);
INSERT INTO message_search_state (message_id, master_key_fingerprint)
SELECT message_id, master_key_fingerprint FROM message_search_index;
DROP TABLE message_search_index;
