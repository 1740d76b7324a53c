//! The control plane's domain objects as they are stored and served: the
//! sandbox record with its lifecycle state machine, API keys, events and
//! usage intervals.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a sandbox is in its life. Transitions are checked by the
/// predicates below; anything else is a typed `InvalidState` error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(description = "Where a sandbox is in its life; `destroyed` is terminal.")]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Provisioning,
    Running,
    Paused,
    Snapshotting,
    Destroyed,
    Error,
}

impl SandboxState {
    pub const ALL: [SandboxState; 6] = [
        SandboxState::Provisioning,
        SandboxState::Running,
        SandboxState::Paused,
        SandboxState::Snapshotting,
        SandboxState::Destroyed,
        SandboxState::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Provisioning => "provisioning",
            SandboxState::Running => "running",
            SandboxState::Paused => "paused",
            SandboxState::Snapshotting => "snapshotting",
            SandboxState::Destroyed => "destroyed",
            SandboxState::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<SandboxState> {
        SandboxState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Exec, files, processes and terminals need a running guest.
    pub fn can_exec(self) -> bool {
        self == SandboxState::Running
    }
    pub fn can_pause(self) -> bool {
        self == SandboxState::Running
    }
    pub fn can_resume(self) -> bool {
        self == SandboxState::Paused
    }
    /// A snapshot needs a running VM to write.
    pub fn can_snapshot(self) -> bool {
        self == SandboxState::Running
    }
    /// Restore in place replaces the VM of a running or paused sandbox.
    pub fn can_restore(self) -> bool {
        matches!(self, SandboxState::Running | SandboxState::Paused)
    }
    /// Forks are taken of anything not destroyed (a snapshot of it may
    /// still exist).
    pub fn can_fork(self) -> bool {
        !self.is_terminal()
    }
    /// The first boot has not happened yet.
    pub fn needs_boot(self) -> bool {
        self == SandboxState::Provisioning
    }
    /// Destroy is allowed from every state but the terminal one, and is
    /// idempotent there (answered, not an error).
    pub fn can_destroy(self) -> bool {
        self != SandboxState::Destroyed
    }
    pub fn is_terminal(self) -> bool {
        self == SandboxState::Destroyed
    }
    /// States in which a VMM process is expected to be alive.
    pub fn has_vm(self) -> bool {
        matches!(self, SandboxState::Running | SandboxState::Snapshotting)
    }
    /// States whose clocks (timeout, idle) run.
    pub fn timers_run(self) -> bool {
        self == SandboxState::Running
    }
}

impl std::fmt::Display for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a sandbox's VM came up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BootPath {
    Cold,
    Snapshot,
}

impl BootPath {
    pub fn as_str(self) -> &'static str {
        match self {
            BootPath::Cold => "cold",
            BootPath::Snapshot => "snapshot",
        }
    }
    pub fn parse(s: &str) -> Option<BootPath> {
        match s {
            "cold" => Some(BootPath::Cold),
            "snapshot" => Some(BootPath::Snapshot),
            _ => None,
        }
    }
}

/// One sandbox, as stored. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRecord {
    pub id: String,
    pub tenant_id: String,
    pub name: Option<String>,
    pub state: SandboxState,
    pub template_id: String,
    pub template_version: String,
    pub cpu_count: u32,
    pub memory_mb: u32,
    pub disk_size_mb: u32,
    pub timeout_sec: u32,
    pub idle_timeout_sec: u32,
    pub always_on: bool,
    pub persistent: bool,
    pub egress: bool,
    /// What egress may reach (none: all the host's fixed rules leave).
    pub egress_policy: Option<hearth_vmm::EgressPolicy>,
    /// When the policy last changed (set, replaced or removed).
    pub egress_policy_updated_at: Option<i64>,
    pub env: BTreeMap<String, String>,
    pub secret_env: Vec<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub tags: Vec<String>,
    pub external_workspace_id: Option<String>,
    pub external_user_id: Option<String>,
    pub external_project_id: Option<String>,
    pub boot_ms: Option<u64>,
    pub boot_path: Option<BootPath>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub paused_at: Option<i64>,
    pub destroyed_at: Option<i64>,
    /// When `timeout_sec` fires (running only; `None` with `always_on`).
    pub deadline_at: Option<i64>,
    /// Last exec, file write, terminal input or preview request.
    pub last_activity_at: i64,
    /// The deployment this sandbox is a runtime instance of (then it is
    /// not listed among the tenant's sandboxes).
    pub deployment_id: Option<String>,
    /// The node that runs it (`None`: made before nodes existed).
    pub node_id: Option<String>,
}

impl SandboxRecord {
    /// The env a store may keep: without the values of `secret_env` keys,
    /// which live only in memory (and in the guest) for the VM's life.
    pub fn storable_env(&self) -> std::borrow::Cow<'_, BTreeMap<String, String>> {
        if self.secret_env.iter().any(|k| self.env.contains_key(k)) {
            let mut env = self.env.clone();
            env.retain(|k, _| !self.secret_env.contains(k));
            std::borrow::Cow::Owned(env)
        } else {
            std::borrow::Cow::Borrowed(&self.env)
        }
    }

    /// Every env name, secret ones included (their values may be gone
    /// from a record read back from the store).
    pub fn env_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.env.keys().cloned().collect();
        for k in &self.secret_env {
            if !self.env.contains_key(k) {
                keys.push(k.clone());
            }
        }
        keys.sort();
        keys
    }

    /// Milliseconds left before the timeout fires, exactly, at `now`.
    pub fn timeout_remaining_ms(&self, now: i64) -> Option<i64> {
        if self.always_on || !self.state.timers_run() {
            return None;
        }
        self.deadline_at.map(|d| (d - now).max(0))
    }

    /// When the idle timeout fires, if it is on and running.
    pub fn idle_deadline(&self) -> Option<i64> {
        if self.always_on || self.idle_timeout_sec == 0 || !self.state.timers_run() {
            return None;
        }
        Some(self.last_activity_at + i64::from(self.idle_timeout_sec) * 1000)
    }

    /// The earliest moment a timer of this sandbox fires, if any.
    pub fn next_deadline(&self) -> Option<i64> {
        let timeout = if self.always_on || !self.state.timers_run() {
            None
        } else {
            self.deadline_at
        };
        match (timeout, self.idle_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What a timer does at `now`, if anything is due.
    pub fn due(&self, now: i64) -> Option<Expiry> {
        if self.always_on || !self.state.timers_run() {
            return None;
        }
        if self.deadline_at.is_some_and(|d| d <= now) {
            return Some(if self.persistent {
                Expiry::TimeoutPause
            } else {
                Expiry::TimeoutDestroy
            });
        }
        if self.idle_deadline().is_some_and(|d| d <= now) {
            return Some(if self.persistent {
                Expiry::IdlePause
            } else {
                Expiry::IdleDestroy
            });
        }
        None
    }

    pub fn last_error(&self) -> Option<&str> {
        self.metadata.get("last_error").and_then(|v| v.as_str())
    }
}

/// What a fired timer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// `timeout_sec` ran out on a non-persistent sandbox.
    TimeoutDestroy,
    /// `timeout_sec` ran out on a persistent sandbox.
    TimeoutPause,
    /// `idle_timeout_sec` passed without activity on a non-persistent
    /// sandbox: abandoned sessions clean themselves up.
    IdleDestroy,
    /// `idle_timeout_sec` passed without activity on a persistent sandbox.
    IdlePause,
}

/// An API key as stored (the key itself only as a hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// The first characters of the key, shown to identify it.
    pub prefix: String,
    pub hash: String,
    pub admin: bool,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// An entry of the append-only event log.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Monotonic sequence: the SSE `id:` and what `Last-Event-ID` names.
    pub seq: i64,
    pub id: String,
    pub tenant_id: String,
    pub sandbox_id: Option<String>,
    pub kind: String,
    pub ts: i64,
    pub data: serde_json::Value,
}

/// Where a snapshot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotStatus {
    Creating,
    Ready,
    Failed,
}

impl SnapshotStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotStatus::Creating => "creating",
            SnapshotStatus::Ready => "ready",
            SnapshotStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<SnapshotStatus> {
        match s {
            "creating" => Some(SnapshotStatus::Creating),
            "ready" => Some(SnapshotStatus::Ready),
            "failed" => Some(SnapshotStatus::Failed),
            _ => None,
        }
    }
}

/// A user-visible snapshot of a sandbox: memory, device state and disk,
/// in `<data>/snapshots/<id>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub id: String,
    pub tenant_id: String,
    pub sandbox_id: String,
    pub status: SnapshotStatus,
    pub comment: Option<String>,
    pub size_bytes: u64,
    pub error: Option<String>,
    pub created_at: i64,
}

/// A template built from a [`BuildSpec`]: a name in a tenant, and versions
/// (one per build) under `<data>/templates/<id>/v<n>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRecord {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub created_at: i64,
}

/// Where a template build is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildState {
    Queued,
    Building,
    Snapshotting,
    Ready,
    Failed,
}

impl BuildState {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildState::Queued => "queued",
            BuildState::Building => "building",
            BuildState::Snapshotting => "snapshotting",
            BuildState::Ready => "ready",
            BuildState::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<BuildState> {
        match s {
            "queued" => Some(BuildState::Queued),
            "building" => Some(BuildState::Building),
            "snapshotting" => Some(BuildState::Snapshotting),
            "ready" => Some(BuildState::Ready),
            "failed" => Some(BuildState::Failed),
            _ => None,
        }
    }
    pub fn is_final(self) -> bool {
        matches!(self, BuildState::Ready | BuildState::Failed)
    }
}

/// One build step: a shell command, or a file put in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuildStep {
    /// A shell command.
    #[schema(value_type = ShellCommand)]
    Run(String),
    Copy(CopyStep),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CopyStep {
    /// Absolute, or relative to the spec's `workdir`; without NUL or a
    /// `..` component.
    #[schema(min_length = 1, pattern = r"^[^\u0000]+$", example = "app/config.json")]
    pub path: String,
    #[schema(content_encoding = "base64", example = "aGVsbG8K")]
    pub content_base64: String,
    /// Permission bits (`493` for `0755`).
    #[schema(maximum = 4095)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// A validated BuildSpec (API.md), defaults filled in. `from` is `minimal`,
/// `default` (Debian), or the id of a custom template with the version
/// built on (names and versions are resolved when the build is created, so
/// a version never changes under a rebuild of its base).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildSpec {
    pub from: String,
    /// The version of custom template `from` this build starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<u32>,
    pub packages: Vec<String>,
    pub steps: Vec<BuildStep>,
    pub env: BTreeMap<String, String>,
    pub workdir: String,
    pub user: Option<String>,
    pub start_cmd: Option<String>,
    pub ready_cmd: Option<String>,
    /// How long `ready_cmd` may keep failing before the build fails.
    pub ready_timeout_sec: u32,
    pub cpu_count: u32,
    pub memory_mb: u32,
    pub disk_size_mb: u32,
}

/// One build of a template: version `version` when it is `ready`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRecord {
    pub id: String,
    pub template_id: String,
    pub tenant_id: String,
    pub version: u32,
    pub state: BuildState,
    pub spec: BuildSpec,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// Who may open a preview: anyone (rate limited per client IP), or the
/// owning tenant's API key and share tokens only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    Public,
    Private,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }
    pub fn parse(s: &str) -> Option<Visibility> {
        match s {
            "public" => Some(Visibility::Public),
            "private" => Some(Visibility::Private),
            _ => None,
        }
    }
}

/// A sandbox port served by the preview proxy at `<slug>.preview.<domain>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewRecord {
    pub id: String,
    pub tenant_id: String,
    pub sandbox_id: String,
    pub port: u16,
    pub visibility: Visibility,
    pub slug: String,
    pub created_at: i64,
}

/// A share token (stored as its SHA-256): opens one private preview, or
/// every preview of a sandbox when `preview_id` is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewTokenRecord {
    pub id: String,
    pub tenant_id: String,
    pub sandbox_id: String,
    pub preview_id: Option<String>,
    pub hash: String,
    pub prefix: String,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub created_at: i64,
}

/// One stretch of time a sandbox spent in one billable state.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageInterval {
    pub sandbox_id: String,
    pub tenant_id: String,
    pub state: SandboxState,
    pub cpu_count: u32,
    pub memory_mb: u32,
    pub disk_size_mb: u32,
    pub external_workspace_id: Option<String>,
    pub external_user_id: Option<String>,
    pub external_project_id: Option<String>,
    pub template_id: String,
    /// The deployment the sandbox is an instance of.
    pub deployment_id: Option<String>,
    pub started_at: i64,
    /// `None` while the interval is still open.
    pub ended_at: Option<i64>,
}

pub use crate::nodes::records::{NodeLoad, NodeRecord, NodeState, PlacementRecord};

pub use crate::deployments::records::{
    DeploymentListFilter, DeploymentRecord, DeploymentVersionRecord, DomainRecord,
};

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(now: i64) -> SandboxRecord {
        SandboxRecord {
            id: "sbx_test".into(),
            tenant_id: "ten_a".into(),
            name: None,
            state: SandboxState::Running,
            template_id: "minimal".into(),
            template_version: "1".into(),
            cpu_count: 1,
            memory_mb: 256,
            disk_size_mb: 512,
            timeout_sec: 60,
            idle_timeout_sec: 0,
            always_on: false,
            persistent: false,
            egress: true,
            egress_policy: None,
            egress_policy_updated_at: None,
            env: BTreeMap::new(),
            secret_env: vec![],
            metadata: serde_json::Map::new(),
            tags: vec![],
            external_workspace_id: None,
            external_user_id: None,
            external_project_id: None,
            boot_ms: None,
            boot_path: None,
            created_at: now,
            started_at: Some(now),
            paused_at: None,
            destroyed_at: None,
            deadline_at: Some(now + 60_000),
            last_activity_at: now,
            deployment_id: None,
            node_id: None,
        }
    }

    #[test]
    fn states_round_trip_and_guard_transitions() {
        for s in SandboxState::ALL {
            assert_eq!(SandboxState::parse(s.as_str()), Some(s));
        }
        assert!(SandboxState::Running.can_pause());
        assert!(!SandboxState::Provisioning.can_pause());
        assert!(!SandboxState::Paused.can_exec());
        assert!(SandboxState::Paused.can_resume());
        assert!(!SandboxState::Destroyed.can_destroy());
        assert!(SandboxState::Error.can_destroy());
    }

    #[test]
    fn timeout_remaining_is_exact_and_stops_when_not_running() {
        let mut r = record(1_000);
        assert_eq!(r.timeout_remaining_ms(1_000), Some(60_000));
        assert_eq!(r.timeout_remaining_ms(31_234), Some(29_766));
        assert_eq!(r.timeout_remaining_ms(99_000), Some(0));
        r.state = SandboxState::Paused;
        assert_eq!(r.timeout_remaining_ms(1_000), None);
        r.state = SandboxState::Running;
        r.always_on = true;
        assert_eq!(r.timeout_remaining_ms(1_000), None);
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn timeout_destroys_or_pauses_when_persistent() {
        let mut r = record(0);
        assert_eq!(r.due(59_999), None);
        assert_eq!(r.due(60_000), Some(Expiry::TimeoutDestroy));
        r.persistent = true;
        assert_eq!(r.due(60_000), Some(Expiry::TimeoutPause));
    }

    #[test]
    fn idle_timeout_follows_activity() {
        let mut r = record(0);
        r.idle_timeout_sec = 10;
        assert_eq!(r.next_deadline(), Some(10_000));
        assert_eq!(r.due(10_000), Some(Expiry::IdleDestroy));
        r.persistent = true;
        assert_eq!(r.due(10_000), Some(Expiry::IdlePause));
        r.persistent = false;
        r.last_activity_at = 5_000;
        assert_eq!(r.due(10_000), None);
        assert_eq!(r.next_deadline(), Some(15_000));
        // The timeout still wins when it comes first.
        r.deadline_at = Some(12_000);
        assert_eq!(r.next_deadline(), Some(12_000));
        assert_eq!(r.due(13_000), Some(Expiry::TimeoutDestroy));
    }
}

/// Which sandboxes a list returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxFilter {
    pub state: Option<SandboxState>,
    /// Every tag must be present.
    pub tags: Vec<String>,
    pub external_workspace_id: Option<String>,
    pub external_user_id: Option<String>,
    pub external_project_id: Option<String>,
    pub template_id: Option<String>,
    /// Only these sandboxes (a scoped token's pinned ones).
    pub ids: Option<Vec<String>>,
    /// Deployments' runtime instances too (else they are left out); with
    /// `Some(id)`, only that deployment's.
    pub deployment: Option<DeploymentFilter>,
}

/// Which runtime instances a sandbox listing shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeploymentFilter {
    /// Every sandbox, instances included.
    All,
    /// Only the instances of this deployment.
    Of(String),
}

/// A page request: 1-based page number and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: u32,
    pub page_size: u32,
}

impl Page {
    pub fn offset(self) -> u64 {
        u64::from(self.page.saturating_sub(1)) * u64::from(self.page_size)
    }
}

/// For the API document only: a shell command (`templates::command_ok`): not blank, without NUL, at
/// most 64 KiB.
#[derive(Debug)]
pub struct ShellCommand;

impl utoipa::PartialSchema for ShellCommand {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .min_length(Some(1))
            .max_length(Some(65536))
            .pattern(Some(r"^[^\u0000]*[^\s\u0000][^\u0000]*$"))
            .examples([serde_json::json!("pip install -r requirements.txt")])
            .into()
    }
}

impl utoipa::ToSchema for ShellCommand {
    fn name() -> std::borrow::Cow<'static, str> {
        "ShellCommand".into()
    }
}

/// A secret of the vault. Its value is only ever stored sealed
/// ([`crate::seal`], bound to the tenant and the secret's id) and never
/// leaves the server except into a guest's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub id: String,
    pub tenant_id: String,
    /// Unique in the tenant; what `secrets: ["NAME"]` names.
    pub name: String,
    /// `api_key`, `token`, `password`, `certificate` or `generic`.
    pub kind: String,
    /// `user`, `workspace` or `tenant`.
    pub scope: String,
    pub sealed: Vec<u8>,
    /// The first characters of the value (a few, never more than a
    /// quarter of it), to tell secrets apart.
    pub value_prefix: String,
    /// The last four characters, for values of 16 or more.
    pub last4: Option<String>,
    /// The environment variable a per-call use exposes it as (its name
    /// when unset).
    pub expose_as_env: Option<String>,
    pub resource_id: Option<String>,
    pub resource_type: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created_at: i64,
    pub rotated_at: Option<i64>,
    pub expires_at: Option<i64>,
}

/// A secret bound to a resource (a sandbox): exposed as `expose_as_env`
/// to everything started there after the binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretBindingRecord {
    pub id: String,
    pub tenant_id: String,
    pub secret_id: String,
    pub resource_id: String,
    pub resource_type: String,
    pub expose_as_env: String,
    pub created_at: i64,
}

/// A scoped token (stored as its SHA-256): a tenant key's delegate that
/// can do less, for less long, on fewer sandboxes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedTokenRecord {
    pub id: String,
    pub tenant_id: String,
    /// The API key that minted it (its revocation revokes the token).
    pub minted_by: String,
    pub user_id: String,
    pub workspace_id: String,
    pub scopes: Vec<String>,
    /// When set, the only sandboxes it may touch.
    pub sandbox_ids: Option<Vec<String>>,
    pub hash: String,
    pub prefix: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// One entry of the audit log: who did what to which resource, when, from
/// where, and how it ended. Append-only; never holds a secret's value.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Position in the log (the cursor), set by the store.
    pub seq: i64,
    pub id: String,
    pub tenant_id: String,
    /// `sandbox.create`, `sandbox.exec`, `secret.rotate`, ...
    pub kind: String,
    /// `api_key`, `scoped_token` or `system`.
    pub actor_type: String,
    pub actor_id: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub at: i64,
    /// `ok`, `denied` or `error`.
    pub outcome: String,
    /// The error code when not `ok`.
    pub error_code: Option<String>,
    pub details: serde_json::Value,
}
