DROP TABLE IF EXISTS conversation_keys;
DROP TABLE IF EXISTS conversation_members;
DROP TABLE IF EXISTS conversations;
DROP TABLE IF EXISTS auth_challenges;
DROP TABLE IF EXISTS users;
