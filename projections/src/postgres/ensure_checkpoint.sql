-- Creates a checkpoint row at the start if there is none: a rebuild's row marks that the
-- rebuild exists (and can be resumed or discarded) before its first batch commits.
INSERT INTO {schema}.checkpoints (projection) VALUES ($1) ON CONFLICT (projection) DO NOTHING
