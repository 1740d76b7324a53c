-- Per-tenant quota overrides (JSON of the quotas set; the rest follow
-- the config's defaults).
CREATE TABLE tenant_quotas (
    tenant_id   TEXT PRIMARY KEY,
    overrides   TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
