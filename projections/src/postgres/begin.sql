-- Creates the checkpoint row if needed and locks it until the batch commits or rolls back;
-- returns where it stands, for the caller to check against where its batch starts.
INSERT INTO {schema}.checkpoints AS c (projection) VALUES ($1)
ON CONFLICT (projection) DO UPDATE SET projection = excluded.projection
RETURNING c.commit_id, c.position
