-- A claimed timer fired: clear it, unless a later decision moved or cancelled it.
UPDATE {schema}.process_timers SET due_at = NULL
WHERE process = $1 AND instance = $2 AND name = $3 AND version = $4
