-- Why a single-statement append was refused: the stream's version now, and whether its
-- first event id is stored (then the append may repeat an earlier one).
SELECT (SELECT version FROM {schema}.stream_heads WHERE stream_id = $1) AS version,
       EXISTS (SELECT 1 FROM {schema}.events WHERE event_id = $2) AS stored
