-- User-visible snapshots of sandboxes (memory + device state + disk).
CREATE TABLE snapshots (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    sandbox_id  TEXT NOT NULL,
    status      TEXT NOT NULL,
    comment     TEXT,
    size_bytes  INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    created_at  INTEGER NOT NULL
);
CREATE INDEX snapshots_sandbox ON snapshots(sandbox_id, created_at);
