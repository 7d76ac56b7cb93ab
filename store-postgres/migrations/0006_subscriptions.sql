-- Subscriptions (projections, relays, process managers) take a checkpoint's lock as an
-- advisory lock and read the checkpoint after it, in one round trip: an advisory lock
-- takes no transaction id, so a batch that publishes to a broker before it writes holds no
-- tailing reader back. (The read must follow the lock in a statement of its own, to see
-- what the previous holder committed; a function's statements each take a new snapshot.)
CREATE FUNCTION lock_checkpoint(p_schema text, p_name text, OUT at_commit bigint, OUT at_position bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('annals.checkpoint:' || p_schema || ':' || p_name, 0));
    SELECT c.commit_id, c.position INTO at_commit, at_position FROM checkpoints c WHERE c.projection = p_name;
END
$$;

-- Subscriptions that park a stream's later events behind a dead letter look up, per batch,
-- which of the batch's streams hold one.
CREATE INDEX dead_letters_by_stream ON dead_letters (projection, stream_id, stream_version);
