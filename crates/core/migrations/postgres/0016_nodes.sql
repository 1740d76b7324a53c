-- Nodes: every `hearth serve` sharing the database, its address, its
-- capacity and labels, and its heartbeat; each sandbox names the node that
-- runs it (NULL: made before nodes existed, the only node's).
CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,
    api_url       TEXT NOT NULL,
    proxy_url     TEXT,
    vcpus         BIGINT NOT NULL,
    memory_mb     BIGINT NOT NULL,
    disk_mb       BIGINT NOT NULL,
    labels        TEXT NOT NULL DEFAULT '{}',
    -- `active`, `draining` (no new placements), `lost` (missed its
    -- heartbeats), `gone` (stopped cleanly).
    state         TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL
);
ALTER TABLE sandboxes ADD COLUMN node_id TEXT;
CREATE INDEX sandboxes_node ON sandboxes(node_id, state);
