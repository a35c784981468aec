DROP TABLE IF EXISTS decryption_audit;
DROP TABLE IF EXISTS message_encryption_metadata;
DROP TABLE IF EXISTS messages;
