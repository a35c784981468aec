DROP TABLE IF EXISTS message_search_state;
DROP TABLE IF EXISTS message_search_tokens;
