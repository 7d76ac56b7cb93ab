-- Each stream's events appear in the global log in version order, and appends are
-- idempotent by event id.
--
-- The log is ordered by (transaction_id, global_position). PostgreSQL gives a transaction
-- its id at its first write, and an UPDATE takes it *before* waiting for the row lock of a
-- stream another append holds. So an append could take a small id, wait, and write a
-- stream's next version after a younger transaction (larger id) had written and committed
-- the version before it: the log listed v3 before v2. append_streams (several streams,
-- and every fallback) now first takes an advisory lock per stream (it needs no
-- transaction id), in key order, so its id is assigned after it owns its streams and is
-- larger than every earlier lock holder's.
--
-- Single-statement appends (one stream) do not take the lock: they check that their
-- transaction id is not older than the stream's last writer's (stream_heads.last_xid),
-- again on the row's newest version when they had to wait for it, and fall back to
-- append_streams when it is. That check alone keeps the order; the lock keeps writers
-- that wait (several streams, fallbacks) from being refused over and over. Taking the
-- lock on every append cost 4 % to 13 % of throughput.
--
-- A caller's transaction that wrote something before appending (an outbox write) already
-- has an id, possibly older than a stream's last writer: that append is refused (SQLSTATE
-- AN412) instead of being listed out of order.
--
-- The table is renamed and the append function replaced under a new name on purpose: a
-- binary of an earlier release, still running during an upgrade, would append without the
-- check and reorder the log again. Its statements name `streams` and `append_events`,
-- which no longer exist, so its appends fail loudly until it is upgraded.

ALTER TABLE streams RENAME TO stream_heads;
ALTER INDEX streams_pkey RENAME TO stream_heads_pkey;
ALTER TABLE stream_heads ADD COLUMN last_xid xid8;
UPDATE stream_heads h
SET last_xid = coalesce(
    (SELECT e.transaction_id FROM events e
     WHERE e.stream_id = h.stream_id AND e.stream_version = h.version),
    '0'::xid8);
ALTER TABLE stream_heads ALTER COLUMN last_xid SET NOT NULL;

DROP FUNCTION append_events(text[], bigint[], integer[], uuid[], text[], integer[], text[],
                            boolean[], bytea[], boolean);
DROP FUNCTION lock_stream(text, bigint, bigint, integer);

-- The advisory lock key of a stream. The seed keeps stream keys apart from the other
-- 64-bit advisory keys annals takes (projection leases hash their own strings with seed 0).
CREATE FUNCTION stream_lock_key(p_stream text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT hashtextextended(p_stream, 6872937143692883) $$;

-- Bumps one stream's version by `p_count` (creating its row if needed) and checks
-- `p_expected` (-1 any, -2 no stream, -3 stream exists, n exactly n) against the version
-- it had, which it returns. The caller holds the stream's advisory lock, but a
-- single-statement append (which does not take it) may have written the stream after
-- this transaction took its id: then AN412 (DETAIL the stream), and the append is retried
-- in a new transaction. `p_index` is the stream's place in the append, for the conflict's
-- DETAIL ('<index>:<actual>').
CREATE FUNCTION bump_stream(p_stream text, p_count bigint, p_expected bigint, p_index integer)
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    actual  bigint;
    matches boolean;
BEGIN
    UPDATE stream_heads SET version = version + p_count, last_xid = pg_current_xact_id()
    WHERE stream_id = p_stream AND last_xid <= pg_current_xact_id()
    RETURNING version - p_count INTO actual;
    IF NOT FOUND AND p_count > 0
       AND NOT EXISTS (SELECT 1 FROM stream_heads WHERE stream_id = p_stream) THEN
        -- A single-statement append may create the stream meanwhile (it takes no lock):
        -- then this waits for it, and the UPDATE below decides.
        INSERT INTO stream_heads (stream_id, version, last_xid)
        VALUES (p_stream, p_count, pg_current_xact_id())
        ON CONFLICT (stream_id) DO NOTHING;
        IF FOUND THEN
            actual := 0;
        ELSE
            UPDATE stream_heads SET version = version + p_count, last_xid = pg_current_xact_id()
            WHERE stream_id = p_stream AND last_xid <= pg_current_xact_id()
            RETURNING version - p_count INTO actual;
        END IF;
    END IF;
    IF actual IS NULL AND EXISTS (SELECT 1 FROM stream_heads WHERE stream_id = p_stream) THEN
        RAISE EXCEPTION 'a younger transaction wrote the stream first'
            USING ERRCODE = 'AN412', DETAIL = p_stream;
    END IF;
    actual := coalesce(actual, 0);
    matches := CASE
        WHEN p_expected = -1 THEN true
        WHEN p_expected = -2 THEN actual = 0
        WHEN p_expected = -3 THEN actual > 0
        ELSE actual = p_expected
    END;
    IF NOT matches THEN
        RAISE EXCEPTION 'wrong expected version'
            USING ERRCODE = 'AN409', DETAIL = p_index || ':' || actual;
    END IF;
    RETURN actual;
END
$$;

-- Appends events to one or several streams atomically.
--   p_streams       the streams, each at most once
--   p_expected      per stream: -1 any, -2 no stream, -3 stream exists, n >= 0 exactly n
--   p_event_stream  per event: 1-based index into p_streams
--   p_json          per event: payload is UTF-8 JSON (stored as jsonb) or binary (bytea)
-- Order of work: the streams' advisory locks, in key order (no transaction id is taken
-- before the append owns its streams); then, if the first event id is already stored,
-- nothing is written and `repeated` is true (the caller tells a repeat of an earlier
-- append from a misuse of ids); then the check of a caller's older transaction (AN412,
-- DETAIL the stream); then the version checks (AN409, DETAIL '<stream index>:<actual
-- version>') and the writes. AN400 for a malformed request.
CREATE FUNCTION append_streams(
    p_streams         text[],
    p_expected        bigint[],
    p_event_stream    integer[],
    p_event_ids       uuid[],
    p_event_types     text[],
    p_schema_versions integer[],
    p_metadata        text[],
    p_json            boolean[],
    p_payloads        bytea[],
    OUT versions      bigint[],
    OUT commit_id     xid8,
    OUT last_position bigint,
    OUT repeated      boolean
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    n_streams integer := coalesce(array_length(p_streams, 1), 0);
    n_events  integer := coalesce(array_length(p_event_ids, 1), 0);
    mine      xid8;
    stale     text;
    counts    bigint[];
    base      bigint[];
    k         bigint;
    s         record;
BEGIN
    repeated := false;
    IF n_streams = 0 THEN
        RETURN;
    END IF;
    IF n_streams > 1 AND (SELECT count(DISTINCT x) FROM unnest(p_streams) x) <> n_streams THEN
        RAISE EXCEPTION 'the same stream appears twice in one append' USING ERRCODE = 'AN400';
    END IF;

    FOR k IN SELECT DISTINCT stream_lock_key(x) FROM unnest(p_streams) x ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(k);
    END LOOP;

    IF n_events > 0 AND EXISTS (SELECT 1 FROM events WHERE event_id = p_event_ids[1]) THEN
        repeated := true;
        RETURN;
    END IF;

    mine := pg_current_xact_id_if_assigned();
    IF mine IS NOT NULL THEN
        SELECT h.stream_id INTO stale
        FROM stream_heads h
        WHERE h.stream_id = ANY (p_streams) AND h.last_xid > mine
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'a younger transaction wrote the stream first'
                USING ERRCODE = 'AN412', DETAIL = stale;
        END IF;
    END IF;

    IF n_streams = 1 THEN
        base := ARRAY[bump_stream(p_streams[1], n_events, p_expected[1], 1)];
        versions := ARRAY[base[1] + n_events];
    ELSE
        SELECT array_agg(coalesce(c.n, 0) ORDER BY i) INTO counts
        FROM generate_series(1, n_streams) i
        LEFT JOIN (SELECT es, count(*) AS n FROM unnest(p_event_stream) es GROUP BY es) c ON c.es = i;
        base := array_fill(0::bigint, ARRAY[n_streams]);
        versions := base;
        FOR s IN
            SELECT u.i, u.stream_id, u.expected
            FROM unnest(p_streams, p_expected) WITH ORDINALITY AS u (stream_id, expected, i)
            ORDER BY u.stream_id
        LOOP
            base[s.i] := bump_stream(s.stream_id, counts[s.i], s.expected, s.i::integer);
            versions[s.i] := base[s.i] + counts[s.i];
        END LOOP;
    END IF;

    IF n_events = 0 THEN
        RETURN;
    END IF;
    WITH inserted AS (
        INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version,
                            metadata, payload, payload_bin)
        SELECT e.id, p_streams[e.s],
               base[e.s] + CASE WHEN n_streams = 1 THEN e.ord
                                ELSE row_number() OVER (PARTITION BY e.s ORDER BY e.ord) END,
               e.event_type, e.schema_version,
               nullif(e.metadata, '')::jsonb,
               CASE WHEN e.is_json THEN convert_from(e.payload, 'UTF8')::jsonb END,
               CASE WHEN e.is_json THEN NULL ELSE e.payload END
        FROM unnest(p_event_stream, p_event_ids, p_event_types, p_schema_versions,
                    p_metadata, p_json, p_payloads)
             WITH ORDINALITY AS e (s, id, event_type, schema_version, metadata, is_json, payload, ord)
        ORDER BY e.ord
        RETURNING global_position
    )
    SELECT max(global_position) INTO last_position FROM inserted;
    commit_id := pg_current_xact_id();
END
$$;
