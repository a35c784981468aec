-- Users, sign-in challenges, conversations, members and conversation key versions (docs/design.md).
CREATE TABLE users (
  id           uuid PRIMARY KEY,
  wallet       text NOT NULL UNIQUE,
  display_name text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE auth_challenges (
  nonce      text PRIMARY KEY,
  wallet     text NOT NULL,
  message    text NOT NULL,
  expires_at timestamptz NOT NULL,
  used_at    timestamptz
);
CREATE INDEX auth_challenges_expires_at ON auth_challenges (expires_at);

CREATE TABLE conversations (
  id                  uuid PRIMARY KEY,
  type                text NOT NULL CHECK (type IN ('direct', 'group')),
  title               text,
  created_by          uuid NOT NULL REFERENCES users (id),
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now(),
  last_seq            bigint NOT NULL DEFAULT 0,
  current_key_version int NOT NULL DEFAULT 1,
  -- newest message time, or creation time: orders a user's conversation list
  last_activity_at    timestamptz NOT NULL DEFAULT now(),
  -- the two members of a direct conversation, lower id first; unique so a pair has one
  direct_low          uuid REFERENCES users (id),
  direct_high         uuid REFERENCES users (id),
  CONSTRAINT conversations_direct_pair CHECK (
    (type = 'direct' AND direct_low IS NOT NULL AND direct_high IS NOT NULL AND direct_low < direct_high)
    OR (type = 'group' AND direct_low IS NULL AND direct_high IS NULL)),
  CONSTRAINT conversations_direct_unique UNIQUE (direct_low, direct_high)
);

CREATE TABLE conversation_members (
  conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
  user_id         uuid NOT NULL REFERENCES users (id),
  role            text NOT NULL CHECK (role IN ('owner', 'member')),
  joined_at       timestamptz NOT NULL DEFAULT now(),
  delivered_seq   bigint NOT NULL DEFAULT 0,
  read_seq        bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (conversation_id, user_id),
  CHECK (read_seq <= delivered_seq)
);
CREATE INDEX conversation_members_user ON conversation_members (user_id);

-- Never the key itself: which master key (by fingerprint) and when, so it can be re-derived.
CREATE TABLE conversation_keys (
  conversation_id        uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
  version                int NOT NULL CHECK (version >= 1),
  master_key_fingerprint text NOT NULL,
  created_unix_seconds   bigint NOT NULL,
  created_at             timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (conversation_id, version)
);
