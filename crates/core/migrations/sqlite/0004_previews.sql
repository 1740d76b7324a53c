-- Previews: a sandbox port served at <slug>.preview.<domain>, and the
-- share tokens that open private ones (stored hashed).
CREATE TABLE previews (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    sandbox_id  TEXT NOT NULL,
    port        INTEGER NOT NULL,
    visibility  TEXT NOT NULL,
    slug        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    UNIQUE (sandbox_id, port)
);
CREATE TABLE preview_tokens (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    sandbox_id  TEXT NOT NULL,
    preview_id  TEXT,
    hash        TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE INDEX preview_tokens_preview ON preview_tokens(preview_id);
