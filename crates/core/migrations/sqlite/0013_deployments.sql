-- Deployments: a sandbox published as a long-lived service. A version is
-- a snapshot of its source taken at publish time (immutable); runtime
-- instances are sandboxes the deployment owns (sandboxes.deployment_id),
-- kept out of the tenant's sandbox listing.
CREATE TABLE deployments (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL,
    name                TEXT NOT NULL,
    slug                TEXT NOT NULL UNIQUE,
    state               TEXT NOT NULL,
    active_version_id   TEXT,
    active_instance_id  TEXT,
    metadata            TEXT NOT NULL DEFAULT '{}',
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
CREATE UNIQUE INDEX deployments_tenant_name ON deployments(tenant_id, name);

CREATE TABLE deployment_versions (
    id                TEXT PRIMARY KEY,
    deployment_id     TEXT NOT NULL,
    tenant_id         TEXT NOT NULL,
    version_number    INTEGER NOT NULL,
    state             TEXT NOT NULL,
    source_sandbox_id TEXT NOT NULL,
    snapshot_id       TEXT,
    runtime_command   TEXT NOT NULL,
    runtime_port      INTEGER NOT NULL,
    health_check_path TEXT NOT NULL,
    error             TEXT,
    promoted_at       INTEGER,
    created_at        INTEGER NOT NULL,
    UNIQUE (deployment_id, version_number)
);

ALTER TABLE sandboxes ADD COLUMN deployment_id TEXT;
