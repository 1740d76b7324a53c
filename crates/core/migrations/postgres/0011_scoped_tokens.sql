-- Scoped tokens: a key's delegates with fewer scopes, an expiry, and
-- optionally a fixed set of sandboxes. Stored as SHA-256, like keys.
CREATE TABLE scoped_tokens (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    minted_by    TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    sandbox_ids  TEXT,
    hash         TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE INDEX scoped_tokens_tenant ON scoped_tokens(tenant_id, created_at);
CREATE INDEX scoped_tokens_minted_by ON scoped_tokens(minted_by);
