ALTER TABLE conversation_keys DROP COLUMN IF EXISTS origin;
