-- Secret env values are never stored (they live in memory and in the
-- guest): drop the ones earlier versions wrote.
UPDATE sandboxes
SET env = (
    SELECT COALESCE(jsonb_object_agg(e.key, e.value), '{}'::jsonb)::text
    FROM jsonb_each(sandboxes.env::jsonb) AS e
    WHERE e.key NOT IN (SELECT jsonb_array_elements_text(sandboxes.secret_env::jsonb))
)
WHERE secret_env IS NOT NULL AND secret_env != '[]';

-- Replayable responses are stored sealed from now on; the plain ones
-- (which may hold new API keys and share tokens) go.
DELETE FROM idempotency;
