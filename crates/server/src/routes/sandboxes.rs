//! `/sandboxes`: create, list, get, by-name, PATCH, destroy, pause, resume,
//! extend, readiness, and usage (per sandbox and tenant-wide).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{
    Data, E404And422, SandboxData, SandboxId, SandboxName, SandboxPage, E404, E422, SBX, USAGE,
};
use super::{data, page, parse_page, ApiJson, AppState};
use crate::core::clock::{parse_time, rfc3339};
use crate::core::keys::idempotency::MAX_KEY_LEN;
use crate::core::keys::Caller;
use crate::core::sandboxes::{CreateParams, PatchParams};
use crate::core::usage::GroupBy;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::model::{BootPath, SandboxFilter, SandboxRecord, SandboxState};
use crate::validate::{check_env, check_label, range};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(by_name))
        .routes(routes!(get_one, patch, destroy))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(extend))
        .routes(routes!(readiness))
        .routes(routes!(sandbox_usage))
        .routes(routes!(tenant_usage))
}

/// The sandbox object of API.md.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Sandbox)]
pub struct SandboxView {
    /// `sbx_...`
    id: String,
    state: SandboxState,
    /// The same as `state`.
    status: SandboxState,
    template_id: String,
    template_version: String,
    cpu_count: u32,
    memory_mb: u32,
    disk_size_mb: u32,
    timeout_sec: u32,
    idle_timeout_sec: u32,
    always_on: bool,
    persistent: bool,
    #[schema(value_type = NetworkView)]
    network: serde_json::Value,
    env_keys: Vec<String>,
    /// Holds `last_error` in state `error`.
    metadata: serde_json::Map<String, serde_json::Value>,
    tags: Vec<String>,
    #[schema(required = true)]
    name: Option<String>,
    #[schema(required = true)]
    external_workspace_id: Option<String>,
    #[schema(required = true)]
    external_user_id: Option<String>,
    #[schema(required = true)]
    external_project_id: Option<String>,
    #[schema(required = true)]
    boot_ms: Option<u64>,
    #[schema(value_type = Option<BootPath>, required = true)]
    boot_path: Option<&'static str>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime, required = true)]
    started_at: Option<String>,
    #[schema(format = DateTime, required = true)]
    paused_at: Option<String>,
    #[schema(format = DateTime, required = true)]
    destroyed_at: Option<String>,
    /// Until the timeout fires; `null` unless running with a timeout.
    #[schema(required = true)]
    timeout_remaining_ms: Option<i64>,
}

/// `network` of a sandbox as sent (built in [`SandboxView::new`]).
#[derive(Debug, ToSchema)]
#[schema(
    description = "The egress policy is read and changed at `/sandboxes/{id}/network-policy`."
)]
#[allow(dead_code)]
pub struct NetworkView {
    egress: bool,
}

impl SandboxView {
    pub fn new(r: SandboxRecord, now: i64) -> SandboxView {
        SandboxView {
            timeout_remaining_ms: r.timeout_remaining_ms(now),
            state: r.state,
            status: r.state,
            env_keys: r.env.keys().cloned().collect(),
            network: json!({ "egress": r.egress }),
            boot_path: r.boot_path.map(|b| b.as_str()),
            created_at: rfc3339(r.created_at),
            started_at: r.started_at.map(rfc3339),
            paused_at: r.paused_at.map(rfc3339),
            destroyed_at: r.destroyed_at.map(rfc3339),
            id: r.id,
            template_id: r.template_id,
            template_version: r.template_version,
            cpu_count: r.cpu_count,
            memory_mb: r.memory_mb,
            disk_size_mb: r.disk_size_mb,
            timeout_sec: r.timeout_sec,
            idle_timeout_sec: r.idle_timeout_sec,
            always_on: r.always_on,
            persistent: r.persistent,
            metadata: r.metadata,
            tags: r.tags,
            name: r.name,
            external_workspace_id: r.external_workspace_id,
            external_user_id: r.external_user_id,
            external_project_id: r.external_project_id,
            boot_ms: r.boot_ms,
        }
    }
}

fn view(state: &AppState, r: SandboxRecord) -> SandboxView {
    SandboxView::new(r, state.now_ms())
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct NetworkBody {
    /// `false`: no network at all.
    #[schema(default = true)]
    pub egress: Option<bool>,
    /// The egress policy, as `PUT /sandboxes/{id}/network-policy` takes it.
    pub policy: Option<crate::core::sandboxes::network::EgressPolicy>,
}

/// The create body of API.md. Every field optional; ranges checked in
/// [`CreateBody::validate`], all at once.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(
    as = SandboxCreateBody,
    description = "Every field is optional; a value out of range is 422 naming the field."
)]
#[serde(default)]
pub struct CreateBody {
    /// `default` (Debian; `miosa-sandbox` is an alias), `minimal`, or a
    /// custom template's id or name.
    #[schema(
        max_length = 128,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$",
        default = "default"
    )]
    pub template_id: Option<String>,
    /// Alias of `template_id`.
    #[schema(deprecated, max_length = 128)]
    pub template: Option<String>,
    /// Shorthand for `cpu_count`, `memory_mb` and `disk_size_mb`
    /// (explicit fields win). Sizes beyond the host's limits are 422.
    #[schema(value_type = Option<super::openapi::SandboxSize>)]
    pub size: Option<String>,
    /// At most the host's vCPUs too.
    #[schema(minimum = 1, maximum = 8, default = 1)]
    pub cpu_count: Option<i64>,
    /// At most the host's available memory too.
    #[schema(minimum = 128, maximum = 8192, default = 1024)]
    pub memory_mb: Option<i64>,
    #[schema(minimum = 256, maximum = 10240, default = 3072)]
    pub disk_size_mb: Option<i64>,
    /// Alias of `disk_size_mb` (which wins).
    #[schema(minimum = 256, maximum = 10240)]
    pub disk_mb: Option<i64>,
    /// Seconds until the sandbox is destroyed (paused when `persistent`).
    #[schema(minimum = 1, maximum = 86400, default = 300)]
    pub timeout_sec: Option<i64>,
    /// Seconds without activity until the sandbox is paused; 0 = off.
    #[schema(minimum = 0, maximum = 86400, default = 0)]
    pub idle_timeout_sec: Option<i64>,
    /// No timeout applies.
    #[schema(default = false)]
    pub always_on: Option<bool>,
    /// A timeout pauses instead of destroying.
    #[schema(default = false)]
    pub persistent: Option<bool>,
    #[schema(schema_with = super::openapi::shell_env_or_null)]
    pub env: Option<BTreeMap<String, String>>,
    /// Env whose values are never returned.
    #[schema(schema_with = super::openapi::shell_env_or_null)]
    pub secret_env: Option<BTreeMap<String, String>>,
    /// At most 16 KiB as JSON.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[schema(schema_with = super::openapi::tags)]
    pub tags: Option<Vec<String>>,
    /// Unique per tenant among sandboxes not destroyed.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub external_workspace_id: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub external_user_id: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub external_project_id: Option<String>,
    #[schema(default = json!({ "egress": true }))]
    pub network: Option<NetworkBody>,
    /// As the `Idempotency-Key` header.
    #[schema(schema_with = super::openapi::string_or_null::<1, { MAX_KEY_LEN }>)]
    pub idempotency_key: Option<String>,
}

/// `size` shorthand: (cpu_count, memory_mb, disk_size_mb).
pub fn size_preset(size: &str) -> Option<(u32, u32, u32)> {
    Some(match size {
        "xs" => (1, 512, 1024),
        "s" | "sm" | "small" => (1, 1024, 3072),
        "m" | "md" | "medium" => (2, 2048, 5120),
        "l" | "lg" | "large" => (4, 4096, 8192),
        "xl" => (8, 8192, 10240),
        _ => return None,
    })
}

const MAX_METADATA_BYTES: usize = 16 * 1024;

fn check_tags(bad: &mut Vec<FieldError>, tags: &[String]) {
    if tags.len() > 50 {
        bad.push(FieldError::new("tags", "at most 50 tags"));
    }
    for (i, t) in tags.iter().enumerate() {
        if t.is_empty() || t.len() > 64 || t.contains(',') || t.chars().any(char::is_control) {
            bad.push(FieldError::new(
                format!("tags[{i}]"),
                "tags are 1-64 characters without commas",
            ));
        }
    }
}

fn check_metadata(bad: &mut Vec<FieldError>, m: &serde_json::Map<String, serde_json::Value>) {
    let size = serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        bad.push(FieldError::new(
            "metadata",
            "must be at most 16 KiB of JSON",
        ));
    }
}

impl CreateBody {
    pub fn validate(self) -> ApiResult<CreateParams> {
        let mut bad = Vec::new();
        let template_id = self
            .template_id
            .or(self.template)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "default".into());
        let (mut cpu, mut mem, mut disk) = (1, 1024, 3072);
        if let Some(size) = &self.size {
            match size_preset(size) {
                Some((c, m, d)) => (cpu, mem, disk) = (c, m, d),
                None => bad.push(FieldError::new("size", "must be one of xs, s, m, l, xl")),
            }
        }
        let cpu_count = range(&mut bad, "cpu_count", self.cpu_count, 1, 8, cpu);
        let memory_mb = range(&mut bad, "memory_mb", self.memory_mb, 128, 8192, mem);
        let (disk_field, disk_value) = match (self.disk_size_mb, self.disk_mb) {
            (Some(v), _) => ("disk_size_mb", Some(v)),
            (None, v) => ("disk_mb", v),
        };
        let disk_size_mb = range(&mut bad, disk_field, disk_value, 256, 10240, disk);
        let timeout_sec = range(&mut bad, "timeout_sec", self.timeout_sec, 1, 86400, 300);
        let idle_timeout_sec = range(
            &mut bad,
            "idle_timeout_sec",
            self.idle_timeout_sec,
            0,
            86400,
            0,
        );
        let mut env = self.env.unwrap_or_default();
        check_env(&mut bad, "env", &env);
        let secret = self.secret_env.unwrap_or_default();
        check_env(&mut bad, "secret_env", &secret);
        let secret_keys: Vec<String> = secret.keys().cloned().collect();
        env.extend(secret);
        let metadata = self.metadata.unwrap_or_default();
        check_metadata(&mut bad, &metadata);
        let tags = self.tags.unwrap_or_default();
        check_tags(&mut bad, &tags);
        check_label(&mut bad, "name", &self.name, 128);
        check_label(
            &mut bad,
            "external_workspace_id",
            &self.external_workspace_id,
            256,
        );
        check_label(&mut bad, "external_user_id", &self.external_user_id, 256);
        check_label(
            &mut bad,
            "external_project_id",
            &self.external_project_id,
            256,
        );
        check_label(&mut bad, "template_id", &Some(template_id.clone()), 128);
        let egress_policy = self.network.as_ref().and_then(|n| n.policy.clone());
        if let Some(p) = &egress_policy {
            super::network::check_policy(&mut bad, "network.policy", p);
        }
        if !bad.is_empty() {
            return Err(ApiError::validation(bad));
        }
        let explicit_shape = self.size.is_some()
            || self.cpu_count.is_some()
            || self.memory_mb.is_some()
            || self.disk_size_mb.is_some()
            || self.disk_mb.is_some();
        Ok(CreateParams {
            template_id,
            explicit_shape,
            cpu_count,
            memory_mb,
            disk_size_mb,
            timeout_sec,
            idle_timeout_sec,
            always_on: self.always_on.unwrap_or(false),
            persistent: self.persistent.unwrap_or(false),
            egress: self.network.and_then(|n| n.egress).unwrap_or(true),
            egress_policy,
            env,
            secret_env: secret_keys,
            metadata,
            tags,
            name: self.name,
            external_workspace_id: self.external_workspace_id,
            external_user_id: self.external_user_id,
            external_project_id: self.external_project_id,
        })
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// `false` answers 202 at once, in state `provisioning` (default: 201
    /// once running).
    #[param(value_type = bool, required = false)]
    pub wait: Option<String>,
}

#[utoipa::path(
    post,
    path = "/sandboxes",
    tag = SBX,
    summary = "Create a sandbox",
    params(CreateQuery),
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created, and running", body = SandboxData),
        (status = 202, description = "Accepted (`wait=false`): the sandbox is provisioning.", body = SandboxData),
        E422,
    ),
)]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<CreateQuery>,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<impl IntoResponse> {
    let wait = !matches!(q.wait.as_deref(), Some("false" | "0"));
    let params = body.validate()?;
    let rec = state.create_sandbox(&caller, params, wait).await?;
    let status = if wait {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, data(view(&state, rec))))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only sandboxes in this state.
    #[param(value_type = SandboxState, required = false)]
    pub state: Option<String>,
    /// Alias of `state`.
    #[param(value_type = SandboxState, required = false)]
    pub status: Option<String>,
    /// Comma-separated tags; all must match.
    #[param(value_type = String, required = false)]
    pub tags: Option<String>,
    /// Only this external workspace.
    #[param(value_type = String, required = false)]
    pub external_workspace_id: Option<String>,
    /// Only this external user.
    #[param(value_type = String, required = false)]
    pub external_user_id: Option<String>,
    /// Only this external project.
    #[param(value_type = String, required = false)]
    pub external_project_id: Option<String>,
    /// Only this template.
    #[param(value_type = String, required = false)]
    pub template_id: Option<String>,
    /// Page number, from 1 (default 1).
    #[param(value_type = u32, required = false, minimum = 1)]
    pub page: Option<String>,
    /// Items per page, 1-100 (default 20).
    #[param(value_type = u32, required = false, minimum = 1, maximum = 100)]
    pub page_size: Option<String>,
}

#[utoipa::path(
    get,
    path = "/sandboxes",
    tag = SBX,
    summary = "List sandboxes",
    params(ListQuery),
    responses((status = 200, description = "OK", body = SandboxPage), E422),
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let pg = parse_page(q.page.as_deref(), q.page_size.as_deref())?;
    let st = match q.state.or(q.status).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(SandboxState::parse(&s).ok_or_else(|| {
            ApiError::field(
                "state",
                "must be one of provisioning, running, paused, snapshotting, destroyed, error",
            )
        })?),
    };
    let template_id = q.template_id.filter(|t| !t.is_empty());
    let filter = SandboxFilter {
        state: st,
        tags: q
            .tags
            .map(|t| {
                t.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        external_workspace_id: q.external_workspace_id.filter(|s| !s.is_empty()),
        external_user_id: q.external_user_id.filter(|s| !s.is_empty()),
        external_project_id: q.external_project_id.filter(|s| !s.is_empty()),
        template_id,
    };
    let (items, total) = state.list_sandboxes(&caller, &filter, pg).await?;
    let now = state.now_ms();
    let items: Vec<SandboxView> = items
        .into_iter()
        .map(|r| SandboxView::new(r, now))
        .collect();
    Ok(page(items, pg.page, pg.page_size, total))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}",
    tag = SBX,
    summary = "Get a sandbox",
    params(SandboxId),
    responses((status = 200, description = "OK", body = SandboxData), E404),
)]
async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let rec = state.get_sandbox(&caller, &id).await?;
    Ok(data(view(&state, rec)))
}

#[utoipa::path(
    get,
    path = "/sandboxes/by-name/{name}",
    tag = SBX,
    summary = "Get a sandbox by name",
    params(SandboxName),
    responses((status = 200, description = "OK", body = SandboxData), E404),
)]
async fn by_name(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let rec = state.sandbox_by_name(&caller, &name).await?;
    Ok(data(view(&state, rec)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct PatchBody {
    /// `null` clears the name.
    #[serde(deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub name: Option<Option<String>>,
    #[schema(schema_with = super::openapi::tags)]
    pub tags: Option<Vec<String>>,
    /// Replaces the metadata; at most 16 KiB as JSON.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Resets the deadline.
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_sec: Option<i64>,
    #[schema(minimum = 0, maximum = 86400)]
    pub idle_timeout_sec: Option<i64>,
    pub always_on: Option<bool>,
    #[schema(schema_with = super::openapi::immutable)]
    pub external_workspace_id: Option<serde_json::Value>,
    #[schema(schema_with = super::openapi::immutable)]
    pub external_user_id: Option<serde_json::Value>,
    #[schema(schema_with = super::openapi::immutable)]
    pub external_project_id: Option<serde_json::Value>,
    #[schema(schema_with = super::openapi::immutable)]
    pub template_id: Option<serde_json::Value>,
}

/// Tells "absent" (`None`) from "null" (`Some(None)`).
fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl PatchBody {
    pub fn validate(self) -> ApiResult<PatchParams> {
        let mut bad = Vec::new();
        for (field, v) in [
            ("external_workspace_id", &self.external_workspace_id),
            ("external_user_id", &self.external_user_id),
            ("external_project_id", &self.external_project_id),
            ("template_id", &self.template_id),
        ] {
            if v.is_some() {
                bad.push(FieldError::new(field, "is immutable"));
            }
        }
        if let Some(Some(n)) = &self.name {
            check_label(&mut bad, "name", &Some(n.clone()), 128);
        }
        if let Some(t) = &self.tags {
            check_tags(&mut bad, t);
        }
        if let Some(m) = &self.metadata {
            check_metadata(&mut bad, m);
        }
        let timeout_sec = self
            .timeout_sec
            .map(|v| range(&mut bad, "timeout_sec", Some(v), 1, 86400, 300));
        let idle_timeout_sec = self
            .idle_timeout_sec
            .map(|v| range(&mut bad, "idle_timeout_sec", Some(v), 0, 86400, 0));
        if !bad.is_empty() {
            return Err(ApiError::validation(bad));
        }
        Ok(PatchParams {
            name: self.name,
            tags: self.tags,
            metadata: self.metadata,
            timeout_sec,
            idle_timeout_sec,
            always_on: self.always_on,
        })
    }
}

#[utoipa::path(
    patch,
    path = "/sandboxes/{id}",
    tag = SBX,
    summary = "Update a sandbox",
    params(SandboxId),
    request_body = PatchBody,
    responses((status = 200, description = "OK", body = SandboxData), E404And422),
)]
async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchBody>,
) -> ApiResult<impl IntoResponse> {
    let p = body.validate()?;
    let rec = state.patch_sandbox(&caller, &id, p).await?;
    Ok(data(view(&state, rec)))
}

#[utoipa::path(
    delete,
    path = "/sandboxes/{id}",
    tag = SBX,
    summary = "Destroy a sandbox (idempotent)",
    params(SandboxId),
    responses((status = 200, description = "OK", body = SandboxData), E404),
)]
async fn destroy(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let rec = state.destroy_sandbox(&caller, &id).await?;
    Ok(data(view(&state, rec)))
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/pause",
    tag = SBX,
    summary = "Pause a sandbox: snapshot to disk and stop the VM",
    params(SandboxId),
    responses((status = 200, description = "OK", body = SandboxData), E404),
)]
async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let rec = state.pause_sandbox(&caller, &id).await?;
    Ok(data(view(&state, rec)))
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/resume",
    tag = SBX,
    summary = "Resume a paused sandbox",
    params(SandboxId),
    responses((status = 200, description = "OK", body = SandboxData), E404),
)]
async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let rec = state.resume_sandbox(&caller, &id).await?;
    Ok(data(view(&state, rec)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct ExtendBody {
    /// The new timeout, from now.
    #[schema(value_type = i64, required = true, minimum = 1, maximum = 86400)]
    pub timeout_sec: Option<i64>,
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/extend",
    tag = SBX,
    summary = "Reset the sandbox's deadline",
    params(SandboxId),
    request_body = ExtendBody,
    responses((status = 200, description = "OK", body = SandboxData), E404And422),
)]
async fn extend(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ExtendBody>,
) -> ApiResult<impl IntoResponse> {
    let mut bad = Vec::new();
    let Some(t) = body.timeout_sec else {
        return Err(ApiError::field("timeout_sec", "is required"));
    };
    let t = range(&mut bad, "timeout_sec", Some(t), 1, 86400, 300);
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let rec = state.extend_sandbox(&caller, &id, t).await?;
    Ok(data(view(&state, rec)))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/readiness",
    tag = SBX,
    summary = "Whether the sandbox is ready",
    params(SandboxId),
    responses((status = 200, description = "OK: `{ready, state}`", body = Data), E404),
)]
async fn readiness(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let (ready, st) = state.readiness(&caller, &id).await?;
    Ok(data(json!({ "ready": ready, "state": st })))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Start of the period: RFC 3339 or unix seconds (default: the
    /// beginning).
    #[param(value_type = String, required = false)]
    pub period_start: Option<String>,
    /// End of the period: RFC 3339 or unix seconds (default now).
    #[param(value_type = String, required = false)]
    pub period_end: Option<String>,
    /// Tenant usage only: one total per value of this field.
    #[param(value_type = String, required = false, pattern = "^(|none|sandbox|sandbox_id|external_workspace_id|external_user_id|external_project_id|template|template_id)$")]
    pub group_by: Option<String>,
}

fn period(state: &AppState, q: &UsageQuery) -> ApiResult<(i64, i64)> {
    let mut bad = Vec::new();
    let mut parse = |field: &str, v: &Option<String>, default: i64| match v.as_deref() {
        None | Some("") => default,
        Some(s) => parse_time(s).unwrap_or_else(|| {
            bad.push(FieldError::new(
                field,
                "must be an RFC 3339 time or unix seconds",
            ));
            default
        }),
    };
    let now = state.now_ms();
    let start = parse("period_start", &q.period_start, 0);
    let end = parse("period_end", &q.period_end, now);
    if bad.is_empty() && end < start {
        bad.push(FieldError::new(
            "period_end",
            "must not be before period_start",
        ));
    }
    if bad.is_empty() {
        Ok((start, end))
    } else {
        Err(ApiError::validation(bad))
    }
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/usage",
    tag = USAGE,
    summary = "Usage of one sandbox",
    params(
        SandboxId,
        ("period_start" = Option<String>, Query, description = "Start of the period: RFC 3339 or unix seconds (default: the beginning)."),
        ("period_end" = Option<String>, Query, description = "End of the period: RFC 3339 or unix seconds (default now)."),
    ),
    responses((status = 200, description = "OK", body = Data), E404And422),
)]
async fn sandbox_usage(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<UsageQuery>,
) -> ApiResult<impl IntoResponse> {
    let rec = state.get_sandbox(&caller, &id).await?;
    let (from, to) = period(&state, &q)?;
    let totals = state
        .usage(&caller, Some(&id), from, to, GroupBy::None)
        .await?;
    let u = totals.get("").cloned().unwrap_or_default();
    let mut v = serde_json::to_value(u).map_err(ApiError::internal)?;
    v["sandbox_id"] = json!(rec.id);
    v["state"] = json!(rec.state);
    Ok(data(v))
}

#[utoipa::path(
    get,
    path = "/usage",
    tag = USAGE,
    summary = "Usage of the tenant",
    params(UsageQuery),
    responses((status = 200, description = "OK", body = Data), E422),
)]
async fn tenant_usage(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<UsageQuery>,
) -> ApiResult<impl IntoResponse> {
    let (from, to) = period(&state, &q)?;
    let group = GroupBy::parse(q.group_by.as_deref().unwrap_or(""))
        .ok_or_else(|| {
            ApiError::field(
                "group_by",
                "must be sandbox_id, external_workspace_id, external_user_id, external_project_id or template_id",
            )
        })?;
    let totals = state.usage(&caller, None, from, to, group).await?;
    let groups: Vec<serde_json::Value> = totals
        .into_iter()
        .map(|(k, u)| {
            let mut v = serde_json::to_value(u).unwrap_or_default();
            if group != GroupBy::None {
                v["key"] = json!(if k.is_empty() { None } else { Some(k) });
            }
            v
        })
        .collect();
    Ok(data(json!({
        "period_start": rfc3339(from),
        "period_end": rfc3339(to),
        "group_by": q.group_by,
        "groups": groups,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: serde_json::Value) -> CreateBody {
        serde_json::from_value(v).expect("body")
    }

    #[test]
    fn create_defaults() {
        let p = body(json!({})).validate().expect("valid");
        assert_eq!(p.template_id, "default");
        assert_eq!((p.cpu_count, p.memory_mb, p.disk_size_mb), (1, 1024, 3072));
        assert_eq!((p.timeout_sec, p.idle_timeout_sec), (300, 0));
        assert!(p.egress && !p.always_on && !p.persistent);
    }

    #[test]
    fn create_reports_every_bad_field() {
        let e = body(json!({
            "cpu_count": 9, "memory_mb": 64, "disk_size_mb": 100, "timeout_sec": 0,
            "idle_timeout_sec": 90000, "size": "huge", "env": {"1BAD": "x"},
            "tags": ["a,b"], "metadata": {"big": "x".repeat(17000)}
        }))
        .validate()
        .expect_err("invalid");
        let fields: Vec<&str> = e.details.iter().map(|d| d.field.as_str()).collect();
        for f in [
            "size",
            "cpu_count",
            "memory_mb",
            "disk_size_mb",
            "timeout_sec",
            "idle_timeout_sec",
            "env.1BAD",
            "metadata",
            "tags[0]",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn size_shorthand_and_disk_alias() {
        let p = body(json!({"size": "m", "disk_mb": 512}))
            .validate()
            .expect("valid");
        assert_eq!((p.cpu_count, p.memory_mb, p.disk_size_mb), (2, 2048, 512));
        let p = body(json!({"size": "xl", "cpu_count": 2}))
            .validate()
            .expect("valid");
        assert_eq!((p.cpu_count, p.memory_mb), (2, 8192), "explicit fields win");
    }

    #[test]
    fn secret_env_is_applied_but_marked() {
        let p = body(json!({"env": {"A": "1"}, "secret_env": {"TOKEN": "s"}}))
            .validate()
            .expect("valid");
        assert_eq!(p.env.get("TOKEN").map(String::as_str), Some("s"));
        assert_eq!(p.secret_env, vec!["TOKEN".to_string()]);
    }

    #[test]
    fn patch_rejects_immutable_fields() {
        let b: PatchBody =
            serde_json::from_value(json!({"external_user_id": "u2", "timeout_sec": 5}))
                .expect("body");
        let e = b.validate().expect_err("immutable");
        assert_eq!(e.details[0].field, "external_user_id");
        let b: PatchBody = serde_json::from_value(json!({"name": null})).expect("body");
        assert_eq!(
            b.validate().expect("valid").name,
            Some(None),
            "null clears the name"
        );
    }
}
