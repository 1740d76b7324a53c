-- Share tokens are listed and revoked by sandbox (every token of every
-- preview of a sandbox, and the sandbox-wide ones).
CREATE INDEX preview_tokens_sandbox ON preview_tokens(sandbox_id, created_at);
