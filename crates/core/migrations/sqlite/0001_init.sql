-- Hearth control plane store. Times are unix milliseconds.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    prefix      TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    admin       INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id);

CREATE TABLE sandboxes (
    id                    TEXT PRIMARY KEY,
    tenant_id             TEXT NOT NULL,
    name                  TEXT,
    state                 TEXT NOT NULL,
    template_id           TEXT NOT NULL,
    template_version      TEXT NOT NULL,
    cpu_count             INTEGER NOT NULL,
    memory_mb             INTEGER NOT NULL,
    disk_size_mb          INTEGER NOT NULL,
    timeout_sec           INTEGER NOT NULL,
    idle_timeout_sec      INTEGER NOT NULL,
    always_on             INTEGER NOT NULL,
    persistent            INTEGER NOT NULL,
    egress                INTEGER NOT NULL,
    env                   TEXT NOT NULL,
    secret_env            TEXT NOT NULL,
    metadata              TEXT NOT NULL,
    tags                  TEXT NOT NULL,
    external_workspace_id TEXT,
    external_user_id      TEXT,
    external_project_id   TEXT,
    boot_ms               INTEGER,
    boot_path             TEXT,
    created_at            INTEGER NOT NULL,
    started_at            INTEGER,
    paused_at             INTEGER,
    destroyed_at          INTEGER,
    deadline_at           INTEGER,
    last_activity_at      INTEGER NOT NULL
);
CREATE INDEX sandboxes_tenant ON sandboxes(tenant_id, created_at);
CREATE INDEX sandboxes_state ON sandboxes(state);
-- Names are unique per tenant among sandboxes that are not destroyed.
CREATE UNIQUE INDEX sandboxes_live_name ON sandboxes(tenant_id, name)
    WHERE name IS NOT NULL AND state != 'destroyed';

CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    tenant_id   TEXT NOT NULL,
    sandbox_id  TEXT,
    type        TEXT NOT NULL,
    ts          INTEGER NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX events_tenant ON events(tenant_id, seq);
CREATE INDEX events_sandbox ON events(sandbox_id, seq);

CREATE TABLE idempotency (
    tenant_id    TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    status       INTEGER NOT NULL,
    body         BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

CREATE TABLE usage_intervals (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox_id            TEXT NOT NULL,
    tenant_id             TEXT NOT NULL,
    state                 TEXT NOT NULL,
    cpu_count             INTEGER NOT NULL,
    memory_mb             INTEGER NOT NULL,
    disk_size_mb          INTEGER NOT NULL,
    external_workspace_id TEXT,
    external_user_id      TEXT,
    external_project_id   TEXT,
    template_id           TEXT NOT NULL,
    started_at            INTEGER NOT NULL,
    ended_at              INTEGER
);
CREATE INDEX usage_sandbox ON usage_intervals(sandbox_id);
CREATE INDEX usage_tenant ON usage_intervals(tenant_id, started_at);
