//! Rows to records and back: the column lists, JSON columns and the
//! mapping of each table's rows to the model's records.

use super::Db;
use super::DbRow;
use sqlx::{QueryBuilder, Row};

use crate::model::{
    ApiKeyRecord, BootPath, BuildRecord, BuildState, EventRecord, PreviewRecord,
    PreviewTokenRecord, SandboxRecord, SandboxState, SnapshotRecord, SnapshotStatus,
    TemplateRecord, UsageInterval, Visibility,
};
use crate::store::{StoreError, StoreResult};

pub(super) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("maps of strings and JSON values always serialize")
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(
    s: &str,
    what: &'static str,
) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        what,
        source: Some(e),
    })
}

/// What sandboxes take, summed over a `FROM sandboxes ... WHERE state !=
/// 'destroyed'` (paused ones keep their disk and give back vCPUs and
/// memory): a tenant's quota use and a node's load. Read by [`load_from_row`].
pub(super) const LOAD_SUMS: &str = "COUNT(*) AS n, \
    CAST(COALESCE(SUM(CASE WHEN state != 'paused' THEN cpu_count END), 0) AS BIGINT) AS vcpus, \
    CAST(COALESCE(SUM(CASE WHEN state != 'paused' THEN memory_mb END), 0) AS BIGINT) AS mem, \
    CAST(COALESCE(SUM(disk_size_mb), 0) AS BIGINT) AS disk";

pub(super) fn load_from_row(r: &DbRow) -> StoreResult<crate::model::NodeLoad> {
    let n =
        |c: &str| -> StoreResult<u64> { Ok(u64::try_from(r.try_get::<i64, _>(c)?).unwrap_or(0)) };
    Ok(crate::model::NodeLoad {
        sandboxes: n("n")?,
        vcpus: n("vcpus")?,
        memory_mb: n("mem")?,
        disk_mb: n("disk")?,
    })
}

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

pub(super) fn sandbox_from_row(r: &DbRow) -> StoreResult<SandboxRecord> {
    let state: String = r.try_get("state")?;
    let boot_path: Option<String> = r.try_get("boot_path")?;
    Ok(SandboxRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        state: SandboxState::parse(&state).ok_or(StoreError::Corrupt {
            what: "sandbox state",
            source: None,
        })?,
        template_id: r.try_get("template_id")?,
        template_version: r.try_get("template_version")?,
        cpu_count: r.try_get::<i64, _>("cpu_count")? as u32,
        memory_mb: r.try_get::<i64, _>("memory_mb")? as u32,
        disk_size_mb: r.try_get::<i64, _>("disk_size_mb")? as u32,
        timeout_sec: r.try_get::<i64, _>("timeout_sec")? as u32,
        idle_timeout_sec: r.try_get::<i64, _>("idle_timeout_sec")? as u32,
        always_on: r.try_get("always_on")?,
        persistent: r.try_get("persistent")?,
        egress: r.try_get("egress")?,
        egress_policy: r
            .try_get::<Option<String>, _>("egress_policy")?
            .map(|j| from_json(&j, "sandbox egress_policy"))
            .transpose()?,
        egress_policy_updated_at: r.try_get("egress_policy_updated_at")?,
        env: from_json(r.try_get("env")?, "sandbox env")?,
        secret_env: from_json(r.try_get("secret_env")?, "sandbox secret_env")?,
        metadata: from_json(r.try_get("metadata")?, "sandbox metadata")?,
        tags: from_json(r.try_get("tags")?, "sandbox tags")?,
        external_workspace_id: r.try_get("external_workspace_id")?,
        external_user_id: r.try_get("external_user_id")?,
        external_project_id: r.try_get("external_project_id")?,
        boot_ms: r.try_get::<Option<i64>, _>("boot_ms")?.map(|v| v as u64),
        boot_path: boot_path.as_deref().and_then(BootPath::parse),
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        paused_at: r.try_get("paused_at")?,
        destroyed_at: r.try_get("destroyed_at")?,
        deadline_at: r.try_get("deadline_at")?,
        last_activity_at: r.try_get("last_activity_at")?,
        deployment_id: r.try_get("deployment_id")?,
        node_id: r.try_get("node_id")?,
    })
}

pub(super) fn snapshot_from_row(r: &DbRow) -> StoreResult<SnapshotRecord> {
    let status: String = r.try_get("status")?;
    Ok(SnapshotRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        sandbox_id: r.try_get("sandbox_id")?,
        status: SnapshotStatus::parse(&status).ok_or(StoreError::Corrupt {
            what: "snapshot status",
            source: None,
        })?,
        comment: r.try_get("comment")?,
        size_bytes: r.try_get::<i64, _>("size_bytes")? as u64,
        error: r.try_get("error")?,
        created_at: r.try_get("created_at")?,
    })
}

pub(super) fn template_from_row(r: &DbRow) -> StoreResult<TemplateRecord> {
    Ok(TemplateRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        created_at: r.try_get("created_at")?,
    })
}

pub(super) fn build_from_row(r: &DbRow) -> StoreResult<BuildRecord> {
    let state: String = r.try_get("state")?;
    Ok(BuildRecord {
        id: r.try_get("id")?,
        template_id: r.try_get("template_id")?,
        tenant_id: r.try_get("tenant_id")?,
        version: r.try_get::<i64, _>("version")? as u32,
        state: BuildState::parse(&state).ok_or(StoreError::Corrupt {
            what: "build state",
            source: None,
        })?,
        spec: from_json(r.try_get("spec")?, "build spec")?,
        error: r.try_get("error")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

pub(super) fn preview_from_row(r: &DbRow) -> StoreResult<PreviewRecord> {
    let visibility: String = r.try_get("visibility")?;
    Ok(PreviewRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        sandbox_id: r.try_get("sandbox_id")?,
        port: r.try_get::<i64, _>("port")? as u16,
        visibility: Visibility::parse(&visibility).ok_or(StoreError::Corrupt {
            what: "preview visibility",
            source: None,
        })?,
        slug: r.try_get("slug")?,
        created_at: r.try_get("created_at")?,
    })
}

pub(super) fn preview_token_from_row(r: &DbRow) -> StoreResult<PreviewTokenRecord> {
    Ok(PreviewTokenRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        sandbox_id: r.try_get("sandbox_id")?,
        preview_id: r.try_get("preview_id")?,
        hash: r.try_get("hash")?,
        prefix: r.try_get("prefix")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        created_at: r.try_get("created_at")?,
    })
}

pub(super) fn key_from_row(r: &DbRow) -> StoreResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        hash: r.try_get("hash")?,
        admin: r.try_get("admin")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

pub(super) fn event_from_row(r: &DbRow) -> StoreResult<EventRecord> {
    Ok(EventRecord {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        sandbox_id: r.try_get("sandbox_id")?,
        kind: r.try_get("type")?,
        ts: r.try_get("ts")?,
        data: from_json(r.try_get("data")?, "event data")?,
    })
}

pub(super) fn usage_from_row(r: &DbRow) -> StoreResult<UsageInterval> {
    let state: String = r.try_get("state")?;
    Ok(UsageInterval {
        sandbox_id: r.try_get("sandbox_id")?,
        tenant_id: r.try_get("tenant_id")?,
        state: SandboxState::parse(&state).ok_or(StoreError::Corrupt {
            what: "usage state",
            source: None,
        })?,
        cpu_count: r.try_get::<i64, _>("cpu_count")? as u32,
        memory_mb: r.try_get::<i64, _>("memory_mb")? as u32,
        disk_size_mb: r.try_get::<i64, _>("disk_size_mb")? as u32,
        external_workspace_id: r.try_get("external_workspace_id")?,
        external_user_id: r.try_get("external_user_id")?,
        external_project_id: r.try_get("external_project_id")?,
        template_id: r.try_get("template_id")?,
        deployment_id: r.try_get("deployment_id")?,
        started_at: r.try_get("started_at")?,
        ended_at: r.try_get("ended_at")?,
    })
}

pub(super) const SANDBOX_COLUMNS: &str =
    "id, tenant_id, name, state, template_id, template_version, \
    cpu_count, memory_mb, disk_size_mb, timeout_sec, idle_timeout_sec, always_on, persistent, \
    egress, env, secret_env, metadata, tags, external_workspace_id, external_user_id, \
    external_project_id, boot_ms, boot_path, created_at, started_at, paused_at, destroyed_at, \
    deadline_at, last_activity_at, egress_policy, egress_policy_updated_at, deployment_id, node_id";

/// `col = excluded.col` for every column of `columns` but `id`: an upsert
/// that makes the row the record.
pub(super) fn upsert_set(columns: &str) -> String {
    columns
        .split(',')
        .map(str::trim)
        .filter(|c| *c != "id")
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn push_sandbox_values(b: &mut QueryBuilder<'_, Db>, s: &SandboxRecord) {
    let mut v = b.separated(", ");
    v.push_bind(s.id.clone())
        .push_bind(s.tenant_id.clone())
        .push_bind(s.name.clone())
        .push_bind(s.state.as_str())
        .push_bind(s.template_id.clone())
        .push_bind(s.template_version.clone())
        .push_bind(i64::from(s.cpu_count))
        .push_bind(i64::from(s.memory_mb))
        .push_bind(i64::from(s.disk_size_mb))
        .push_bind(i64::from(s.timeout_sec))
        .push_bind(i64::from(s.idle_timeout_sec))
        .push_bind(s.always_on)
        .push_bind(s.persistent)
        .push_bind(s.egress)
        .push_bind(json(&s.storable_env()))
        .push_bind(json(&s.secret_env))
        .push_bind(json(&s.metadata))
        .push_bind(json(&s.tags))
        .push_bind(s.external_workspace_id.clone())
        .push_bind(s.external_user_id.clone())
        .push_bind(s.external_project_id.clone())
        .push_bind(s.boot_ms.map(|v| v as i64))
        .push_bind(s.boot_path.map(BootPath::as_str))
        .push_bind(s.created_at)
        .push_bind(s.started_at)
        .push_bind(s.paused_at)
        .push_bind(s.destroyed_at)
        .push_bind(s.deadline_at)
        .push_bind(s.last_activity_at)
        .push_bind(s.egress_policy.as_ref().map(json))
        .push_bind(s.egress_policy_updated_at)
        .push_bind(s.deployment_id.clone())
        .push_bind(s.node_id.clone());
}
