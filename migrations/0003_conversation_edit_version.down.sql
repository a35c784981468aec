ALTER TABLE conversations DROP COLUMN IF EXISTS edit_version;
