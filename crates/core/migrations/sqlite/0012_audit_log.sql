-- The audit log: every mutating action and every denied attempt, per
-- tenant, append-only (only retention deletes, by age).
CREATE TABLE audit_log (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    tenant_id     TEXT NOT NULL,
    kind          TEXT NOT NULL,
    actor_type    TEXT NOT NULL,
    actor_id      TEXT NOT NULL,
    resource_type TEXT,
    resource_id   TEXT,
    request_id    TEXT,
    ip            TEXT,
    at            INTEGER NOT NULL,
    outcome       TEXT NOT NULL,
    error_code    TEXT,
    details       TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_tenant ON audit_log(tenant_id, seq);
CREATE INDEX audit_log_at ON audit_log(at);
