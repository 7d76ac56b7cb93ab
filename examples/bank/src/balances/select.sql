SELECT account_id, owner, currency, balance, status, last_activity, events_applied
FROM account_balances
WHERE account_id = ANY ($1)
ORDER BY account_id
