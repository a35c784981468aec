-- Messages store ciphertext only; nonce, tag and key version live in the metadata table (docs/design.md, Crypto).
CREATE TABLE messages (
  id                uuid PRIMARY KEY,
  conversation_id   uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
  sender_id         uuid NOT NULL REFERENCES users (id),
  seq               bigint NOT NULL CHECK (seq >= 1),
  content           bytea,
  content_type      text NOT NULL DEFAULT 'text'
                    CHECK (content_type IN ('text', 'markdown', 'json', 'image', 'file', 'audio', 'video')),
  signature         text,
  reply_to_id       uuid REFERENCES messages (id) ON DELETE SET NULL,
  status            text NOT NULL DEFAULT 'sent',
  client_message_id text,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  edited_at         timestamptz,
  deleted_at        timestamptz,
  CONSTRAINT messages_conversation_seq UNIQUE (conversation_id, seq),
  CONSTRAINT messages_client_message_id UNIQUE (conversation_id, sender_id, client_message_id)
);

CREATE TABLE message_encryption_metadata (
  message_id  uuid PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
  nonce       bytea NOT NULL CHECK (octet_length(nonce) = 12),
  tag         bytea NOT NULL CHECK (octet_length(tag) = 16),
  algorithm   text NOT NULL DEFAULT 'AES-256-GCM',
  key_version int NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE decryption_audit (
  id              bigserial PRIMARY KEY,
  occurred_at     timestamptz NOT NULL DEFAULT now(),
  actor_id        uuid,
  conversation_id uuid NOT NULL,
  message_count   int NOT NULL CHECK (message_count > 0),
  purpose         text NOT NULL CHECK (purpose IN ('fetch', 'search', 'export', 'reencrypt', 'verify')),
  request_id      text
);
CREATE INDEX decryption_audit_conversation ON decryption_audit (conversation_id, occurred_at);
