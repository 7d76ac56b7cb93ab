-- For the rest of this transaction, unqualified table names resolve to the shadow schema
-- first: the projection's own SQL writes to the shadow tables.
SELECT set_config('search_path', $1 || ', ' || current_setting('search_path'), true)
