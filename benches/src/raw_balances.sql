CREATE TABLE raw_balances (
    account_id     text        PRIMARY KEY,
    owner          text        NOT NULL,
    currency       text        NOT NULL,
    balance        bigint      NOT NULL,
    status         text        NOT NULL,
    last_activity  timestamptz,
    events_applied bigint      NOT NULL
)
