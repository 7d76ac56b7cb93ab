-- Process managers (annals-projections): durable timers, and which instances are open.
--
-- A timer is set or cancelled by a recorded decision, with that decision's version of the
-- instance's stream: a replayed older decision never undoes a newer one. A cancelled or
-- fired timer keeps its row (due_at NULL) for that reason. Workers claim due timers with
-- FOR UPDATE SKIP LOCKED and push due_at forward while they handle them (a claim), so a
-- worker that dies lets the timer fire again later: at least once, never early.
CREATE TABLE process_timers (
    process  text        NOT NULL,
    instance text        NOT NULL,
    name     text        NOT NULL,
    due_at   timestamptz,
    version  bigint      NOT NULL,
    PRIMARY KEY (process, instance, name)
);
CREATE INDEX process_timers_due ON process_timers (process, due_at) WHERE due_at IS NOT NULL;

CREATE TABLE process_instances (
    process    text        NOT NULL,
    instance   text        NOT NULL,
    open       boolean     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (process, instance)
);
CREATE INDEX process_instances_open ON process_instances (process) WHERE open;
