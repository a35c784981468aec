DROP FUNCTION IF EXISTS sotalk_send_batch(uuid[], uuid[], uuid[], text[], text[], uuid[], text[], int[], text[], int[], int[], int[], bytea, text, bigint, text, bigint);
DROP TYPE IF EXISTS sotalk_send_outcome;
