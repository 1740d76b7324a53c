-- Secret env values are never stored (they live in memory and in the
-- guest): drop the ones earlier versions wrote.
UPDATE sandboxes
SET env = (
    SELECT COALESCE(json_group_object(e.key, e.value), '{}')
    FROM json_each(sandboxes.env) AS e
    WHERE e.key NOT IN (SELECT s.value FROM json_each(sandboxes.secret_env) AS s)
)
WHERE secret_env IS NOT NULL AND secret_env != '[]';

-- Replayable responses are stored sealed from now on; the plain ones
-- (which may hold new API keys and share tokens) go.
DELETE FROM idempotency;
