-- Reading the log by time (EventStore::position_at, `relay --from`, `rebuild --until`):
-- recorded_at follows insertion order closely, so a BRIN index finds a time's events at a
-- fraction of a B-tree's cost on every append.
CREATE INDEX events_recorded ON events USING brin (recorded_at);
