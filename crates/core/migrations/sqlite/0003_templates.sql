-- Templates built from a BuildSpec, and their builds (one version each).
CREATE TABLE templates (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE TABLE template_builds (
    id           TEXT PRIMARY KEY,
    template_id  TEXT NOT NULL,
    tenant_id    TEXT NOT NULL,
    version      INTEGER NOT NULL,
    state        TEXT NOT NULL,
    spec         TEXT NOT NULL,
    error        TEXT,
    created_at   INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,
    UNIQUE (template_id, version)
);
CREATE INDEX template_builds_state ON template_builds(state);
