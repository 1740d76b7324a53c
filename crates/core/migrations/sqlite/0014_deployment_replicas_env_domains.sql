-- Deployments grow: several instances behind one URL (`replicas`, the
-- serving set in `instance_ids`, a JSON array replacing
-- `active_instance_id`), environment for the start command, the caller's
-- external ids; versions keep their build command, its log and the
-- directory the app runs in; custom domains; usage intervals name the
-- deployment an instance served.
ALTER TABLE deployments ADD COLUMN replicas INTEGER NOT NULL DEFAULT 1;
ALTER TABLE deployments ADD COLUMN instance_ids TEXT NOT NULL DEFAULT '[]';
ALTER TABLE deployments ADD COLUMN env TEXT NOT NULL DEFAULT '{}';
ALTER TABLE deployments ADD COLUMN external_workspace_id TEXT;
ALTER TABLE deployments ADD COLUMN external_user_id TEXT;
ALTER TABLE deployments ADD COLUMN external_project_id TEXT;
UPDATE deployments SET instance_ids = json_array(active_instance_id)
    WHERE active_instance_id IS NOT NULL;
ALTER TABLE deployments DROP COLUMN active_instance_id;

ALTER TABLE deployment_versions ADD COLUMN build_command TEXT;
ALTER TABLE deployment_versions ADD COLUMN build_log TEXT;
ALTER TABLE deployment_versions ADD COLUMN output_path TEXT;

CREATE TABLE deployment_domains (
    id                 TEXT PRIMARY KEY,
    deployment_id      TEXT NOT NULL,
    tenant_id          TEXT NOT NULL,
    domain             TEXT NOT NULL,
    -- `pending` until its TXT record is seen, then `verified`.
    state              TEXT NOT NULL,
    verification_token TEXT NOT NULL,
    -- PEM chain (public) and the key sealed with the server's key.
    certificate_pem    TEXT,
    sealed_key         BLOB,
    created_at         INTEGER NOT NULL,
    verified_at        INTEGER
);
CREATE UNIQUE INDEX deployment_domains_per_deployment
    ON deployment_domains(deployment_id, domain);
-- Anyone may claim a name (a claim squats nothing); one deployment holds
-- it once verified.
CREATE UNIQUE INDEX deployment_domains_verified
    ON deployment_domains(domain) WHERE state = 'verified';

ALTER TABLE usage_intervals ADD COLUMN deployment_id TEXT;
