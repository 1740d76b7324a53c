//! What a deployment, its versions and its custom domains are, as stored
//! (re-exported from [`crate::model`]).

/// A deployment: a sandbox published as a long-lived service at
/// `<slug>.apps.<domain>`, serving its active version from a runtime
/// instance.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRecord {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub slug: String,
    /// `pending`, `building`, `running`, `stopped` or `failed`.
    pub state: String,
    pub active_version_id: Option<String>,
    /// The sandboxes serving the active version (the load-balanced set).
    pub instances: Vec<String>,
    /// How many instances serve it.
    pub replicas: u32,
    /// Environment of the start command in instances started from now on.
    pub env: std::collections::BTreeMap<String, String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub external_workspace_id: Option<String>,
    pub external_user_id: Option<String>,
    pub external_project_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Which deployments `GET /deployments` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentListFilter {
    pub state: Option<String>,
    pub external_workspace_id: Option<String>,
    pub external_user_id: Option<String>,
    pub external_project_id: Option<String>,
}

/// A custom domain of a deployment: served once verified (a TXT record
/// `_hearth-challenge.<domain>` holding its token), over TLS with its own
/// certificate when one was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRecord {
    pub id: String,
    pub deployment_id: String,
    pub tenant_id: String,
    /// Lower case, no trailing dot.
    pub domain: String,
    /// `pending` or `verified`.
    pub state: String,
    pub verification_token: String,
    pub certificate_pem: Option<String>,
    /// The certificate's private key, sealed.
    pub sealed_key: Option<Vec<u8>>,
    pub created_at: i64,
    pub verified_at: Option<i64>,
}

/// One immutable version of a deployment: a snapshot of its source
/// sandbox, and how to run and check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentVersionRecord {
    pub id: String,
    pub deployment_id: String,
    pub tenant_id: String,
    pub version_number: i64,
    /// `building`, `ready` (healthy once), `active`, `failed` or `retired`.
    pub state: String,
    pub source_sandbox_id: String,
    pub snapshot_id: Option<String>,
    pub runtime_command: String,
    pub runtime_port: u16,
    pub health_check_path: String,
    /// Run once at publish, in a clone of the source; the version is the
    /// clone after it.
    pub build_command: Option<String>,
    /// What the build command wrote (its tail, at most
    /// [`crate::deployments::MAX_BUILD_LOG`] bytes).
    pub build_log: Option<String>,
    /// The directory the start command runs in.
    pub output_path: Option<String>,
    pub error: Option<String>,
    pub promoted_at: Option<i64>,
    pub created_at: i64,
}
