DELETE FROM decryption_audit WHERE purpose = 'reindex';
ALTER TABLE decryption_audit DROP CONSTRAINT decryption_audit_purpose_check;
ALTER TABLE decryption_audit ADD CONSTRAINT decryption_audit_purpose_check
  CHECK (purpose IN ('fetch', 'search', 'export', 'reencrypt', 'verify'));
DROP TABLE IF EXISTS message_search_state;
DROP TABLE IF EXISTS message_search_tokens;
