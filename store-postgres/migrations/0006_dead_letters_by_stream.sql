-- Subscriptions that park a stream's later events behind a dead letter look up, per batch,
-- which of the batch's streams hold one.
CREATE INDEX dead_letters_by_stream ON dead_letters (projection, stream_id, stream_version);
