-- The secrets vault: values sealed (XChaCha20-Poly1305 under
-- data/secrets.key, bound to tenant and id), never stored in plain text;
-- bindings expose a secret to a sandbox's commands as an env variable.
CREATE TABLE secrets (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    scope         TEXT NOT NULL,
    sealed        BLOB NOT NULL,
    value_prefix  TEXT NOT NULL,
    last4         TEXT,
    expose_as_env TEXT,
    resource_id   TEXT,
    resource_type TEXT,
    metadata      TEXT NOT NULL DEFAULT '{}',
    created_at    INTEGER NOT NULL,
    rotated_at    INTEGER,
    expires_at    INTEGER
);
CREATE UNIQUE INDEX secrets_tenant_name ON secrets(tenant_id, name);

CREATE TABLE secret_bindings (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    secret_id     TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    expose_as_env TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX secret_bindings_resource ON secret_bindings(tenant_id, resource_type, resource_id);
CREATE INDEX secret_bindings_secret ON secret_bindings(secret_id);
-- One variable per resource: a second binding of the same name replaces
-- nothing silently, it is refused.
CREATE UNIQUE INDEX secret_bindings_env ON secret_bindings(resource_type, resource_id, expose_as_env);
