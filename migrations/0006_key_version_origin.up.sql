-- Why a conversation key version was created. A message sealed under an older version is
-- re-sealed only when the newer one came from an explicit rotation (rotate-key, rotate-conversation);
-- automatic retirements (count, age) and master-key changes accept messages in flight.
ALTER TABLE conversation_keys ADD COLUMN origin text NOT NULL DEFAULT 'explicit'
  CHECK (origin IN ('initial', 'explicit', 'count', 'age', 'master'));
UPDATE conversation_keys SET origin = 'initial' WHERE version = 1;
