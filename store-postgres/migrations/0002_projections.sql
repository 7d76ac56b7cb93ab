-- Projection bookkeeping, used by annals-projections. A checkpoint row is updated in the
-- same transaction as the projection's read-model writes, after being locked at the
-- start of the batch: a worker that lost its lease finds the checkpoint moved and rolls
-- back, so no event's effect is applied twice.
CREATE TABLE checkpoints (
    projection text        PRIMARY KEY,
    commit_id  bigint      NOT NULL DEFAULT 0,
    position   bigint      NOT NULL DEFAULT 0,
    state      text        NOT NULL DEFAULT 'running',
    error      text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Events a projection gave up on (per its policy), to list, retry or discard.
CREATE TABLE dead_letters (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection     text        NOT NULL,
    event_id       uuid        NOT NULL,
    commit_id      bigint      NOT NULL,
    position       bigint      NOT NULL,
    stream_id      text        NOT NULL,
    stream_version bigint      NOT NULL,
    event_type     text        NOT NULL,
    error          text        NOT NULL,
    attempts       integer     NOT NULL,
    failed_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (projection, event_id)
);
