-- Where these event ids are stored, with the commits of their stream neighbours: what
-- tells a repeated append from a misuse of ids (annals_core::check_repeat). A neighbour
-- written in the same commit by another request of a group commit (migration 0011) is
-- another append: its commit is reported as unknown (NULL).
SELECT e.event_id, e.stream_id, e.stream_version, e.global_position,
       e.transaction_id AS commit_id,
       CASE WHEN p.group_request IS NOT DISTINCT FROM e.group_request
            THEN p.transaction_id END AS previous_commit,
       CASE WHEN n.group_request IS NOT DISTINCT FROM e.group_request
            THEN n.transaction_id END AS next_commit
FROM {schema}.events e
LEFT JOIN {schema}.events p ON p.stream_id = e.stream_id AND p.stream_version = e.stream_version - 1
LEFT JOIN {schema}.events n ON n.stream_id = e.stream_id AND n.stream_version = e.stream_version + 1
WHERE e.event_id = ANY ($1)
