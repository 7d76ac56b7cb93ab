CREATE TABLE IF NOT EXISTS bank_customers (
    id            text        PRIMARY KEY,
    name          text        NOT NULL,
    email         text        NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now()
)
