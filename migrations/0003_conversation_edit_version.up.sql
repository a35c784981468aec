-- Counts edits and deletes per conversation; with last_seq it versions a conversation's
-- history, so cached pages can be checked for staleness with one cheap read.
ALTER TABLE conversations ADD COLUMN edit_version bigint NOT NULL DEFAULT 0;
