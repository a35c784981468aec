-- Messages encrypted under each conversation key version, so a version can be retired after a
-- configured count (random 96-bit nonces: stay well below 2^32 encryptions per key).
ALTER TABLE conversation_keys ADD COLUMN message_count bigint NOT NULL DEFAULT 0;
