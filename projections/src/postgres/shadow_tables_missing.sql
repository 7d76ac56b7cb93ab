-- Declared tables that do not exist in the shadow schema ($2). A missing one would let
-- unqualified writes fall through the search_path to the live table.
SELECT t FROM unnest($1::text[]) AS t
WHERE to_regclass(quote_ident($2) || '.' || quote_ident(t)) IS NULL
