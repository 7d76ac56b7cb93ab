INSERT INTO account_balances
    (account_id, owner, currency, balance, status, last_activity, events_applied)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[],
                     $6::timestamptz[], $7::bigint[])
ON CONFLICT (account_id) DO UPDATE
SET owner = excluded.owner, currency = excluded.currency, balance = excluded.balance,
    status = excluded.status, last_activity = excluded.last_activity,
    events_applied = excluded.events_applied
