-- Of these streams, those holding a dead letter of the subscription that parks its stream
-- (every letter does when $3: the subscription's policy is Park). Served by
-- dead_letters_by_stream (migration 0006).
SELECT DISTINCT stream_id FROM {schema}.dead_letters
WHERE projection = $1 AND stream_id = ANY ($2) AND ($3 OR parks_stream)
