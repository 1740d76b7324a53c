//! Everything that must survive a restart lives behind [`Store`]: tenants,
//! API keys, sandboxes, the event log, idempotent responses and usage
//! intervals. [`SqliteStore`] is the default (one file in the data
//! directory, WAL, migrations at start) and [`PgStore`] the one several
//! hosts share; both run the same queries (`sql/`). The trait is also the
//! seam for fakes in tests.

mod postgres;
mod sqlite;

use async_trait::async_trait;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// The store `config` names: PostgreSQL at `database_url`, else the
/// SQLite file (`database`, default `<data_dir>/hearth.db`).
pub async fn open(config: &crate::config::ServerConfig) -> StoreResult<std::sync::Arc<dyn Store>> {
    Ok(match &config.database_url {
        Some(url) => std::sync::Arc::new(PgStore::connect(url).await?),
        None => std::sync::Arc::new(SqliteStore::open(&config.database_path()).await?),
    })
}

/// How a placement picks its node (see [`Store::place`]).
pub type PlacementChoice<'a> = dyn Fn(
        &[(crate::model::NodeRecord, crate::model::NodeLoad)],
    ) -> Option<crate::model::PlacementRecord>
    + Send
    + Sync
    + 'a;

/// Where the SQL of the two stores differs; each backend names its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// `FROM <json_array(arg)>` yielding one row per element, its column
    /// `value`: before and after the array expression.
    pub(crate) fn json_elements(self) -> (&'static str, &'static str) {
        match self {
            Dialect::Sqlite => ("json_each(", ")"),
            Dialect::Postgres => ("jsonb_array_elements_text((", ")::jsonb)"),
        }
    }

    /// The larger of two values (a scalar, not the aggregate).
    pub(crate) fn greatest(self) -> &'static str {
        match self {
            Dialect::Sqlite => "MAX",
            Dialect::Postgres => "GREATEST",
        }
    }

    /// The statement that makes placements one at a time, first in their
    /// transaction (SQLite: none, the transaction's first write does).
    pub(crate) fn placement_lock(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some("SELECT pg_advisory_xact_lock(7205559101)"),
        }
    }

    /// The column that orders a table's rows as they were inserted.
    pub(crate) fn insertion_order(self) -> &'static str {
        match self {
            Dialect::Sqlite => "rowid",
            Dialect::Postgres => "seq",
        }
    }
}

use crate::model::{
    ApiKeyRecord, AuditRecord, BuildRecord, DeploymentRecord, DeploymentVersionRecord, EventRecord,
    PreviewRecord, PreviewTokenRecord, SandboxRecord, ScopedTokenRecord, SecretBindingRecord,
    SecretRecord, SnapshotRecord, TemplateRecord, UsageInterval,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("open store {path}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrate store")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("store query")]
    Query(#[from] sqlx::Error),
    #[error("corrupt {what} in store")]
    Corrupt {
        what: &'static str,
        #[source]
        source: Option<serde_json::Error>,
    },
    /// A uniqueness rule was broken (a live sandbox name, an idempotency key).
    #[error("{0} already exists")]
    Duplicate(&'static str),
}

pub use crate::model::{Page, SandboxFilter};

/// Which audit entries a reading wants (each `None` matches all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub kind: Option<String>,
    pub actor_id: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
}

/// Which secrets or bindings a listing wants (each `None` matches all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretFilter {
    pub resource_id: Option<String>,
    pub resource_type: Option<String>,
    pub kind: Option<String>,
    pub scope: Option<String>,
    /// Bindings only: those of this secret.
    pub secret_id: Option<String>,
}

/// A stored response to an idempotent mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentResponse {
    /// Method, path and body hash of the first request.
    pub fingerprint: String,
    pub status: u16,
    pub body: Vec<u8>,
    pub created_at: i64,
}

/// A new event before the store gives it its sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub id: String,
    pub tenant_id: String,
    pub sandbox_id: Option<String>,
    pub kind: String,
    pub ts: i64,
    pub data: serde_json::Value,
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Closes the connections (at shutdown).
    async fn close(&self);

    // Tenants and keys.
    async fn ensure_tenant(&self, id: &str, name: &str, now: i64) -> StoreResult<()>;
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()>;
    async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKeyRecord>>;
    async fn list_api_keys(&self, tenant_id: &str) -> StoreResult<Vec<ApiKeyRecord>>;
    /// Marks a key revoked; false when the tenant has no such live key.
    async fn revoke_api_key(&self, tenant_id: &str, id: &str, now: i64) -> StoreResult<bool>;
    async fn count_api_keys(&self) -> StoreResult<u64>;
    /// When the last API key, scoped token or share token was revoked
    /// (unix ms; 0 for never): other nodes' revocations, for this node's
    /// caches and open connections.
    async fn latest_revocation(&self) -> StoreResult<i64>;

    // Quotas.
    /// The admin's overrides for `tenant`, if any.
    async fn tenant_quotas(
        &self,
        tenant: &str,
    ) -> StoreResult<Option<crate::quotas::QuotaOverrides>>;
    async fn put_tenant_quotas(
        &self,
        tenant: &str,
        overrides: &crate::quotas::QuotaOverrides,
        now: i64,
    ) -> StoreResult<()>;
    /// What `tenant` holds now, counted as [`crate::quotas::Quotas`] says.
    async fn tenant_usage(&self, tenant: &str) -> StoreResult<crate::quotas::Quotas>;

    // Deployments and their versions.
    async fn put_deployment(&self, d: &DeploymentRecord) -> StoreResult<()>;
    async fn get_deployment(&self, id: &str) -> StoreResult<Option<DeploymentRecord>>;
    async fn deployment_by_slug(&self, slug: &str) -> StoreResult<Option<DeploymentRecord>>;
    /// A tenant's deployments, newest first (at most 1000).
    async fn list_deployments(
        &self,
        tenant: &str,
        filter: &crate::model::DeploymentListFilter,
    ) -> StoreResult<Vec<DeploymentRecord>>;
    /// Every tenant's deployments in state `running` (the supervisor's
    /// round).
    async fn running_deployments(&self) -> StoreResult<Vec<DeploymentRecord>>;
    /// Deletes a deployment and its versions.
    async fn delete_deployment(&self, id: &str) -> StoreResult<()>;
    /// After a restart: versions still `building` are `failed` with
    /// `error`, and deployments that never served and were being
    /// published are `failed`; how many versions.
    async fn settle_interrupted_publishes(&self, error: &str, now: i64) -> StoreResult<u64>;
    /// Inserts a version as the deployment's next number; the version.
    async fn insert_version(
        &self,
        v: &DeploymentVersionRecord,
    ) -> StoreResult<DeploymentVersionRecord>;
    async fn update_version(&self, v: &DeploymentVersionRecord) -> StoreResult<()>;
    /// A deployment's versions, newest first.
    async fn list_versions(&self, deployment_id: &str)
        -> StoreResult<Vec<DeploymentVersionRecord>>;
    /// Inserts or replaces a custom domain; `Duplicate` when the
    /// deployment has it already, or another holds it verified.
    async fn put_domain(&self, d: &crate::model::DomainRecord) -> StoreResult<()>;
    async fn delete_domain(&self, id: &str) -> StoreResult<()>;
    /// A deployment's custom domains, oldest first.
    async fn domains_of(&self, deployment_id: &str)
        -> StoreResult<Vec<crate::model::DomainRecord>>;
    /// Every verified custom domain (the proxy's table, loaded at start).
    async fn verified_domains(&self) -> StoreResult<Vec<crate::model::DomainRecord>>;

    // The audit log (append-only; retention deletes by age).
    /// Appends an entry; its `seq`.
    async fn append_audit(&self, e: &AuditRecord) -> StoreResult<i64>;
    /// A tenant's entries after `after_seq`, oldest first (at most `limit`).
    async fn audit_after(
        &self,
        tenant: &str,
        filter: &AuditFilter,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>>;
    /// Deletes entries older than `before`; how many.
    async fn prune_audit(&self, before: i64) -> StoreResult<u64>;

    // Scoped tokens.
    async fn insert_scoped_token(&self, t: &ScopedTokenRecord) -> StoreResult<()>;
    async fn scoped_token_by_hash(&self, hash: &str) -> StoreResult<Option<ScopedTokenRecord>>;
    async fn get_scoped_token(
        &self,
        tenant: &str,
        id: &str,
    ) -> StoreResult<Option<ScopedTokenRecord>>;
    /// The tenant's tokens, newest first (at most `limit`).
    async fn list_scoped_tokens(
        &self,
        tenant: &str,
        limit: u32,
    ) -> StoreResult<Vec<ScopedTokenRecord>>;
    /// Whether the tenant has the token (revoking a revoked one keeps its
    /// first `revoked_at`).
    async fn revoke_scoped_token(&self, tenant: &str, id: &str, now: i64) -> StoreResult<bool>;
    /// Revokes every live token `key_id` minted; how many.
    async fn revoke_tokens_minted_by(&self, key_id: &str, now: i64) -> StoreResult<u64>;

    // Secrets (values sealed) and their bindings. Every query is scoped to
    // a tenant.
    /// `Duplicate` when the tenant has a secret of that name.
    async fn insert_secret(&self, s: &SecretRecord) -> StoreResult<()>;
    async fn get_secret(&self, tenant: &str, id: &str) -> StoreResult<Option<SecretRecord>>;
    /// The tenant's secrets whose names are in `names`.
    async fn secrets_named(&self, tenant: &str, names: &[String])
        -> StoreResult<Vec<SecretRecord>>;
    /// The tenant's secrets matching `filter`, oldest first (at most `limit`).
    async fn list_secrets(
        &self,
        tenant: &str,
        filter: &SecretFilter,
        limit: u32,
    ) -> StoreResult<Vec<SecretRecord>>;
    /// Writes a rotation: the sealed value, prefixes, `rotated_at`, expiry.
    async fn update_secret(&self, s: &SecretRecord) -> StoreResult<()>;
    /// Deletes a secret and its bindings; whether it existed.
    async fn delete_secret(&self, tenant: &str, id: &str) -> StoreResult<bool>;
    async fn count_secrets(&self, tenant: &str) -> StoreResult<u64>;
    /// `Duplicate` when the resource already has a binding of that
    /// variable.
    async fn insert_binding(&self, b: &SecretBindingRecord) -> StoreResult<()>;
    async fn list_bindings(
        &self,
        tenant: &str,
        filter: &SecretFilter,
        limit: u32,
    ) -> StoreResult<Vec<SecretBindingRecord>>;
    async fn delete_binding(&self, tenant: &str, id: &str) -> StoreResult<bool>;
    /// Each binding of a resource with its secret.
    async fn bound_secrets(
        &self,
        tenant: &str,
        resource_type: &str,
        resource_id: &str,
    ) -> StoreResult<Vec<(SecretBindingRecord, SecretRecord)>>;

    // Sandboxes. A store writes `SandboxRecord::storable_env`, never the
    // values of `secret_env` keys; a record read back has their names only.
    async fn insert_sandbox(&self, s: &SandboxRecord) -> StoreResult<()>;
    async fn update_sandbox(&self, s: &SandboxRecord) -> StoreResult<()>;
    /// Moves `last_activity_at` forward (never back), touching nothing else.
    async fn touch_sandbox(&self, id: &str, at: i64) -> StoreResult<()>;
    async fn get_sandbox(&self, id: &str) -> StoreResult<Option<SandboxRecord>>;
    async fn sandbox_by_name(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> StoreResult<Option<SandboxRecord>>;
    async fn list_sandboxes(
        &self,
        tenant_id: &str,
        filter: &SandboxFilter,
        page: Page,
    ) -> StoreResult<(Vec<SandboxRecord>, u64)>;
    /// Every sandbox not destroyed, of every tenant (recovery at start).
    /// The sandboxes not destroyed that `node` runs, and those made before
    /// nodes existed (recovery at start adopts them).
    async fn live_sandboxes(&self, node: &str) -> StoreResult<Vec<SandboxRecord>>;
    /// The sandboxes not destroyed that `node` runs.
    async fn node_sandboxes(&self, node: &str) -> StoreResult<Vec<SandboxRecord>>;

    // Nodes.
    /// Registers a node or replaces what it says of itself.
    async fn put_node(&self, n: &crate::model::NodeRecord) -> StoreResult<()>;
    /// Promises room on a node, one placement at a time across the
    /// cluster: `choose` sees every node with its load (its stored
    /// sandboxes and unexpired promises) and picks; its pick is stored.
    async fn place(
        &self,
        now: i64,
        choose: &PlacementChoice<'_>,
    ) -> StoreResult<Option<crate::model::PlacementRecord>>;
    /// Hands paused sandbox `id` from node `from` to node `to`; false when
    /// it is no longer paused there (another node or a resume got it).
    async fn move_paused(&self, id: &str, from: &str, to: &str) -> StoreResult<bool>;
    /// Records that node `node` holds a copy of paused sandbox `id`'s
    /// snapshot of the pause at `paused_at`; false (nothing recorded) when
    /// the sandbox is no longer paused from that pause.
    async fn put_replica(&self, id: &str, node: &str, paused_at: i64) -> StoreResult<bool>;
    /// The node holding a copy of paused sandbox `id`'s snapshot.
    async fn replica_of(&self, id: &str) -> StoreResult<Option<String>>;
    async fn drop_replica(&self, id: &str) -> StoreResult<()>;
    /// The promise kept: the sandbox's record now counts instead.
    async fn release_placement(&self, id: &str) -> StoreResult<()>;
    /// Records a heartbeat and the template snapshots the node holds; the
    /// node's state (`None`: not registered).
    async fn node_heartbeat(
        &self,
        id: &str,
        now: i64,
        templates: &[String],
    ) -> StoreResult<Option<crate::model::NodeState>>;
    async fn list_nodes(&self) -> StoreResult<Vec<crate::model::NodeRecord>>;
    /// Moves a node from one of `from` to `to`; false when it was in none
    /// of them.
    async fn set_node_state(
        &self,
        id: &str,
        from: &[crate::model::NodeState],
        to: crate::model::NodeState,
    ) -> StoreResult<bool>;
    /// Marks `lost` the active or draining nodes whose heartbeat is older
    /// than `cutoff`, and answers them (each to exactly one caller).
    async fn mark_lost_nodes(&self, cutoff: i64) -> StoreResult<Vec<crate::model::NodeRecord>>;
    /// What each node's sandboxes take, by node id.
    async fn node_loads(
        &self,
    ) -> StoreResult<std::collections::BTreeMap<String, crate::model::NodeLoad>>;

    // Snapshots.
    /// Inserts or replaces a snapshot record.
    async fn put_snapshot(&self, s: &SnapshotRecord) -> StoreResult<()>;
    async fn get_snapshot(&self, id: &str) -> StoreResult<Option<SnapshotRecord>>;
    async fn list_snapshots(&self, sandbox_id: &str) -> StoreResult<Vec<SnapshotRecord>>;
    /// A tenant's snapshots, newest first, at most `limit`.
    async fn tenant_snapshots(
        &self,
        tenant_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<SnapshotRecord>>;
    async fn delete_snapshot(&self, id: &str) -> StoreResult<bool>;
    // Previews and their share tokens.
    /// Inserts a preview; a port that already has one is `Duplicate`.
    async fn insert_preview(&self, p: &PreviewRecord) -> StoreResult<()>;
    async fn get_preview(&self, id: &str) -> StoreResult<Option<PreviewRecord>>;
    async fn preview_by_slug(&self, slug: &str) -> StoreResult<Option<PreviewRecord>>;
    async fn list_previews(&self, sandbox_id: &str) -> StoreResult<Vec<PreviewRecord>>;
    /// Deletes a preview and its tokens.
    async fn delete_preview(&self, id: &str) -> StoreResult<bool>;
    async fn insert_preview_token(&self, t: &PreviewTokenRecord) -> StoreResult<()>;
    async fn preview_token_by_hash(&self, hash: &str) -> StoreResult<Option<PreviewTokenRecord>>;
    /// Revokes every live token of a preview; how many.
    async fn revoke_preview_tokens(&self, preview_id: &str, now: i64) -> StoreResult<u64>;
    async fn get_preview_token(&self, id: &str) -> StoreResult<Option<PreviewTokenRecord>>;
    /// A sandbox's tokens (only those of `preview_id` when given, which
    /// leaves out the sandbox-wide ones), newest first, at most `limit`.
    async fn list_preview_tokens(
        &self,
        sandbox_id: &str,
        preview_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<PreviewTokenRecord>>;
    /// Revokes every live token of a sandbox (of each of its previews and
    /// the sandbox-wide ones); how many.
    async fn revoke_sandbox_preview_tokens(&self, sandbox_id: &str, now: i64) -> StoreResult<u64>;
    /// Revokes one token unless it already is; whether it was live.
    async fn revoke_preview_token(&self, id: &str, now: i64) -> StoreResult<bool>;

    // Templates built from a BuildSpec, and their builds.
    /// Inserts a template; a name taken in the tenant is `Duplicate`.
    async fn insert_template(&self, t: &TemplateRecord) -> StoreResult<()>;
    async fn get_template(&self, id: &str) -> StoreResult<Option<TemplateRecord>>;
    async fn template_by_name(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> StoreResult<Option<TemplateRecord>>;
    async fn list_templates(&self, tenant_id: &str) -> StoreResult<Vec<TemplateRecord>>;
    /// Inserts a build as the template's next version; returns that version.
    async fn insert_build(&self, b: &BuildRecord) -> StoreResult<u32>;
    /// Writes a build's state, error and times.
    async fn update_build(&self, b: &BuildRecord) -> StoreResult<()>;
    async fn get_build(&self, id: &str) -> StoreResult<Option<BuildRecord>>;
    /// A template's builds, newest version first.
    async fn list_builds(&self, template_id: &str) -> StoreResult<Vec<BuildRecord>>;
    /// Marks every build that is not finished as failed with `error`.
    async fn fail_unfinished_builds(&self, error: &str, now: i64) -> StoreResult<u64>;

    // Events.
    async fn append_event(&self, e: &NewEvent) -> StoreResult<EventRecord>;
    /// Events of a tenant (one sandbox's, when given) after `after_seq`.
    async fn events_after(
        &self,
        tenant_id: &str,
        sandbox_id: Option<&str>,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>>;
    /// Deletes events older than `before_ts` (when given), then the oldest
    /// past `max_per_tenant` of any one tenant, then the oldest past
    /// `max_rows` in all (a limit of 0 is none); how many went. Sequence
    /// numbers are never reused, so `Last-Event-ID` stays meaningful.
    async fn prune_events(
        &self,
        before_ts: Option<i64>,
        max_rows: u64,
        max_per_tenant: u64,
    ) -> StoreResult<u64>;

    // Idempotency.
    async fn idempotent_response(
        &self,
        tenant_id: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotentResponse>>;
    /// Stores the first response under a key; `Duplicate` if one exists.
    async fn put_idempotent_response(
        &self,
        tenant_id: &str,
        key: &str,
        resp: &IdempotentResponse,
    ) -> StoreResult<()>;
    /// Forgets responses created before `before`.
    async fn prune_idempotency(&self, before: i64) -> StoreResult<u64>;

    // Usage.
    /// Closes the sandbox's open interval (if any) at `at` and opens `next`.
    async fn switch_usage(
        &self,
        sandbox_id: &str,
        at: i64,
        next: Option<&UsageInterval>,
    ) -> StoreResult<()>;
    /// Intervals of a tenant (one sandbox's, when given) that overlap
    /// `[from, to)`.
    async fn usage_intervals(
        &self,
        tenant_id: &str,
        sandbox_id: Option<&str>,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<UsageInterval>>;
}
