-- Of these streams, those holding a dead letter of the subscription (events are parked
-- behind it). Served by dead_letters_by_stream (migration 0006).
SELECT DISTINCT stream_id FROM {schema}.dead_letters
WHERE projection = $1 AND stream_id = ANY ($2)
