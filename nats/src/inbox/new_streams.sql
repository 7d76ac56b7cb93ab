-- Rows for streams the consumer has not seen (version 0: nothing passed yet), in stream
-- order; a concurrent insert of the same row waits for this transaction.
INSERT INTO {schema}.inbox_streams (consumer, stream_id, version)
SELECT $1, id, 0 FROM unnest($2::text[]) AS t(id) ORDER BY id
ON CONFLICT (consumer, stream_id) DO NOTHING
