-- Inbox consumers (annals-nats) apply events from a message bus exactly once and in each
-- stream's order, in the transaction of their effect.
--
-- `inbox` records every event a consumer applied. A redelivered message whose event is
-- here is acknowledged without running the handler again. Rows older than the consumer's
-- retention are purged in small batches.
CREATE TABLE inbox (
    consumer       text        NOT NULL,
    event_id       uuid        NOT NULL,
    stream_id      text        NOT NULL,
    stream_version bigint      NOT NULL,
    applied_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX inbox_by_age ON inbox (consumer, applied_at);

-- Per consumer and stream, the last version it has passed (applied, dead-lettered or
-- parked): an event applies only after the one before it in its stream. The row is locked
-- while a batch handles the stream's events, so processes sharing one durable consumer
-- take turns per stream. Never purged: one row per stream the consumer has seen.
CREATE TABLE inbox_streams (
    consumer  text   NOT NULL,
    stream_id text   NOT NULL,
    version   bigint NOT NULL,
    PRIMARY KEY (consumer, stream_id)
);

-- A consumer's dead letter keeps the whole message (subject, headers, payload), so it can
-- be retried after the bus has dropped it.
ALTER TABLE dead_letters ADD COLUMN message bytea;
