-- sotalk_send_batch (migration 0008) with its per-message checks as index probes that no plan can
-- turn into whole-table scans. As EXISTS sub-selects inside a CASE, the planner may evaluate a check
-- as a hashed sub-plan: it reads the whole of conversation_members or messages into a hash once
-- per call. Its cached generic plan did exactly that on tables without statistics yet (a fresh
-- database: its first minutes in production, every benchmark), and a flush then cost time in
-- proportion to the table — for sends with a client_message_id or a reply, the messages table.
-- Same signature, arguments and results; only the plan changes.
CREATE OR REPLACE FUNCTION sotalk_send_batch(
  p_ids uuid[], p_cids uuid[], p_senders uuid[], p_ctypes text[], p_sigs text[], p_replies uuid[],
  p_cmids text[], p_kvs int[], p_kfps text[], p_offs int[], p_clens int[], p_tcounts int[], p_blob bytea,
  p_search_fp text, p_max_messages bigint, p_active_fp text, p_now_unix bigint
) RETURNS TABLE (idx int, verdict text, seq bigint, created_at timestamptz, updated_at timestamptz,
                 current_version int, prev_at timestamptz, retired uuid)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
  v_out sotalk_send_outcome[];
  v_used uuid[];
  v_retired uuid[];
BEGIN
  -- Conversations in id order (every writer locks them first, so flushes never deadlock). Each
  -- later statement takes a fresh snapshot: it sees everything committed before the locks.
  -- One probe per conversation, taken in id order (a nested loop over the sorted ids).
  PERFORM 1
  FROM (SELECT DISTINCT u.id FROM unnest(p_cids) AS u(id) ORDER BY u.id) AS u
  CROSS JOIN LATERAL (SELECT 1 FROM conversations c WHERE c.id = u.id FOR UPDATE) AS locked;

  WITH input AS (
    SELECT * FROM unnest(p_ids, p_cids, p_senders, p_ctypes, p_sigs, p_replies, p_cmids, p_kvs, p_kfps, p_offs, p_clens, p_tcounts)
      WITH ORDINALITY AS i (id, cid, sender, ctype, sig, reply, cmid, kv, kfp, off, clen, tcount, n)
  ), conv AS (
    -- one probe per conversation of the flush, and one for its current key (never a table scan)
    SELECT c.id, c.last_seq, c.last_activity_at, c.current_key_version, cur.fp, cur.origin
    FROM (SELECT DISTINCT u.id FROM unnest(p_cids) AS u(id)) AS u
    CROSS JOIN LATERAL (
      SELECT c.id, c.last_seq, c.last_activity_at, c.current_key_version FROM conversations c WHERE c.id = u.id LIMIT 1
    ) c
    CROSS JOIN LATERAL (
      SELECT k.master_key_fingerprint AS fp, k.origin FROM conversation_keys k
      WHERE k.conversation_id = c.id AND k.version = c.current_key_version LIMIT 1
    ) cur
  ), judged AS MATERIALIZED (
    -- Each check is a LATERAL probe with LIMIT 1, one index lookup per message: as EXISTS
    -- sub-selects the planner may hash a whole table instead (its generic plan did, for
    -- conversation_members and messages, on tables without statistics yet). MATERIALIZED: the
    -- verdict is computed once per message, not again wherever `deduped` uses it.
    SELECT i.*, conv.last_seq, conv.last_activity_at, conv.current_key_version,
      CASE
        WHEN conv.id IS NULL OR member.hit IS NULL THEN 'not_member'
        WHEN i.reply IS NOT NULL AND reply.cid IS DISTINCT FROM i.cid THEN 'bad_reply'
        WHEN dup.hit IS NOT NULL THEN 'duplicate'
        -- sealed under a version an explicit rotation of the same master key replaced: seal again
        WHEN i.kv < conv.current_key_version AND conv.origin = 'explicit' AND i.kfp = conv.fp
          THEN 'stale_key'
        ELSE 'ok'
      END AS verdict
    FROM input i
    LEFT JOIN conv ON conv.id = i.cid
    LEFT JOIN LATERAL (
      SELECT true AS hit FROM conversation_members cm WHERE cm.conversation_id = i.cid AND cm.user_id = i.sender LIMIT 1
    ) member ON true
    LEFT JOIN LATERAL (
      -- by id alone, so only the primary key can serve it; the conversation is compared above
      SELECT r.conversation_id AS cid FROM messages r WHERE i.reply IS NOT NULL AND r.id = i.reply LIMIT 1
    ) reply ON true
    LEFT JOIN LATERAL (
      SELECT true AS hit FROM messages d
      WHERE i.cmid IS NOT NULL AND d.conversation_id = i.cid AND d.sender_id = i.sender AND d.client_message_id = i.cmid LIMIT 1
    ) dup ON true
  ), deduped AS (
    -- a second copy of one client_message_id in the same flush replays the first
    SELECT j.*,
      CASE WHEN j.verdict = 'ok' AND j.cmid IS NOT NULL
                AND row_number() OVER (PARTITION BY j.cid, j.sender, j.cmid, j.verdict = 'ok' ORDER BY j.n) > 1
           THEN 'duplicate' ELSE j.verdict END AS final
    FROM judged j
  ), numbered AS (
    SELECT d.*, d.last_seq + row_number() OVER w AS new_seq,
           CASE WHEN row_number() OVER w = 1 THEN d.last_activity_at END AS prev_at
    FROM deduped d WHERE d.final = 'ok'
    WINDOW w AS (PARTITION BY d.cid ORDER BY d.n)
  ), bumped AS (
    -- clock_timestamp(): the moment of the write, close to the commit (now() is when the call began):
    -- receivers compare it with the arrival of the next message's event
    UPDATE conversations c SET last_seq = b.last_seq, last_activity_at = clock_timestamp(), updated_at = now()
    FROM (SELECT cid, max(new_seq) AS last_seq FROM numbered GROUP BY cid) b
    WHERE c.id = b.cid
  ), inserted AS (
    INSERT INTO messages (id, conversation_id, sender_id, seq, content, content_type, signature, reply_to_id, client_message_id)
    SELECT x.id, x.cid, x.sender, x.new_seq, substring(p_blob FROM x.off + 29 FOR x.clen), x.ctype, x.sig, x.reply, x.cmid
    FROM numbered x
    RETURNING messages.id, messages.created_at, messages.updated_at
  ), metadata AS (
    INSERT INTO message_encryption_metadata (message_id, nonce, tag, key_version)
    SELECT x.id, substring(p_blob FROM x.off + 1 FOR 12), substring(p_blob FROM x.off + 13 FOR 16), x.kv
    FROM numbered x
  ), indexed AS (
    INSERT INTO message_search_index (message_id, conversation_id, master_key_fingerprint, tokens, created_at)
    SELECT x.id, x.cid, p_search_fp,
           ARRAY(SELECT substring(p_blob FROM x.off + 29 + x.clen + 16 * g FOR 16) FROM generate_series(0, x.tcount - 1) AS g),
           now()
    FROM numbered x
    WHERE p_search_fp IS NOT NULL AND x.tcount >= 0
  ), counted AS (
    -- encryptions per key version, so a full version can be retired (random 96-bit nonces)
    UPDATE conversation_keys k SET message_count = k.message_count + u.cnt
    FROM (SELECT cid, kv, count(*) AS cnt FROM numbered GROUP BY cid, kv) u
    WHERE k.conversation_id = u.cid AND k.version = u.kv
  )
  SELECT array_agg(ROW(d.n, d.final, x.new_seq, ins.created_at, ins.updated_at, d.current_key_version, x.prev_at)::sotalk_send_outcome ORDER BY d.n),
         array_agg(DISTINCT d.cid) FILTER (WHERE d.final = 'ok')
  INTO v_out, v_used
  FROM deduped d
  LEFT JOIN numbered x ON x.n = d.n
  LEFT JOIN inserted ins ON ins.id = x.id;

  -- Retire full current key versions (counted above, in a new snapshot): the next message uses a new one.
  IF p_max_messages > 0 AND v_used IS NOT NULL THEN
    WITH full_versions AS (
      SELECT c.id, c.current_key_version AS v
      FROM unnest(v_used) AS u(id)
      CROSS JOIN LATERAL (SELECT c.id, c.current_key_version FROM conversations c WHERE c.id = u.id LIMIT 1) AS c
      CROSS JOIN LATERAL (
        SELECT k.message_count FROM conversation_keys k WHERE k.conversation_id = c.id AND k.version = c.current_key_version LIMIT 1
      ) AS k
      WHERE k.message_count >= p_max_messages
    ), bumped AS (
      UPDATE conversations c SET current_key_version = f.v + 1, updated_at = now()
      FROM full_versions f WHERE c.id = f.id
      RETURNING c.id, c.current_key_version
    ), created AS (
      INSERT INTO conversation_keys (conversation_id, version, master_key_fingerprint, created_unix_seconds, origin)
      SELECT b.id, b.current_key_version, p_active_fp, p_now_unix, 'count' FROM bumped b
    )
    SELECT array_agg(b.id) INTO v_retired FROM bumped b;
  END IF;

  RETURN QUERY
    SELECT o.idx, o.verdict, o.seq, o.created_at, o.updated_at, o.current_version, o.prev_at, NULL::uuid FROM unnest(v_out) o
    UNION ALL
    SELECT NULL, 'retired', NULL, NULL, NULL, NULL, NULL, r FROM unnest(v_retired) r;
END
$fn$;
