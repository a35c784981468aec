-- Blind index, one row per message (issue "Send and fan-out pipeline"): the distinct tokens of a
-- message (docs/design.md: HMAC-SHA256(search key, word)[0:16]) in one bytea[] under a GIN index, and
-- the master key they were computed under. A send writes one row instead of one per word.
-- Tokens are keyed per conversation, so a token names its conversation: a search is
-- `tokens && <each word's tokens>` through the GIN index.
CREATE TABLE message_search_index (
  message_id             uuid PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
  conversation_id        uuid NOT NULL,
  master_key_fingerprint text NOT NULL,
  tokens                 bytea[] NOT NULL,
  -- the message's creation time, copied: results are newest first, and for a common word walking
  -- this index newest-first finds a page long before the GIN match list is complete
  created_at             timestamptz NOT NULL
);
CREATE INDEX message_search_index_recent ON message_search_index (created_at DESC, message_id DESC);
-- A larger pending list than the 4 MB default: inserts append to it and are merged in bulk.
CREATE INDEX message_search_index_tokens ON message_search_index USING gin (tokens) WITH (gin_pending_list_limit = 16384);

INSERT INTO message_search_index (message_id, conversation_id, master_key_fingerprint, tokens, created_at)
SELECT s.message_id, m.conversation_id, s.master_key_fingerprint,
       COALESCE((SELECT array_agg(t.token ORDER BY t.token) FROM message_search_tokens t WHERE t.message_id = s.message_id), '{}'),
       m.created_at
FROM message_search_state s JOIN messages m ON m.id = s.message_id;

DROP TABLE message_search_tokens;
DROP TABLE message_search_state;

-- The per-word shape, as read-only views over the index (for operators' queries
-- and tools that read message_search_tokens(conversation_id, token, message_id)).
CREATE VIEW message_search_tokens AS
  SELECT i.conversation_id, t.token, i.message_id FROM message_search_index i CROSS JOIN LATERAL unnest(i.tokens) AS t(token);
CREATE VIEW message_search_state AS
  SELECT message_id, master_key_fingerprint FROM message_search_index;
