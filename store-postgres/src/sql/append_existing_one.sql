-- The commonest append: one event to an existing stream (a command on a loaded aggregate),
-- as one statement with scalar parameters. Returns no row when refused: the stream is
-- missing or not at the expected version ($2: -1 any, -3 stream exists, n exactly n), the
-- event id is already stored (a repeat, or a misuse of ids), or the caller's transaction
-- is older than the stream's last writer; the caller finds out which.
--
-- `locked` takes the stream's advisory lock first: `(SELECT true FROM locked)` is an
-- InitPlan in the UPDATE's one-time filter, evaluated before the scan of stream_heads
-- starts. So the transaction id (assigned by the UPDATE's write) is taken only once this
-- append owns the stream: after every earlier writer of the stream committed, hence larger
-- than theirs.
-- The transaction-id check only bites when the id was assigned before this statement (an
-- append inside a caller's transaction that wrote before).
WITH locked AS MATERIALIZED (
    SELECT pg_advisory_xact_lock({schema}.stream_lock_key($1))
), head AS (
    UPDATE {schema}.stream_heads h
    SET version = h.version + 1, last_xid = pg_current_xact_id()
    WHERE h.stream_id = $1
      AND (SELECT true FROM locked)
      AND CASE WHEN $2 = -1 THEN true WHEN $2 = -3 THEN h.version > 0 ELSE h.version = $2 END
      AND (pg_current_xact_id_if_assigned() IS NULL
           OR h.last_xid <= pg_current_xact_id_if_assigned())
      AND NOT EXISTS (SELECT 1 FROM {schema}.events WHERE event_id = $3)
    RETURNING h.version
)
INSERT INTO {schema}.events (event_id, stream_id, stream_version, event_type, schema_version,
                             metadata, payload, payload_bin)
SELECT $3, $1, head.version, $4, $5, $6::jsonb, $7::jsonb, $8
FROM head
RETURNING stream_version, global_position, transaction_id
