//! `/sandboxes`: create, list, get, by-name, PATCH, destroy, pause, resume,
//! extend, readiness, and usage (per sandbox and tenant-wide).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
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
use super::{data, double_option, page, parse_page, query_text, ApiJson, ApiQuery, AppState};
use crate::core::clock::{parse_time, rfc3339};
use crate::core::keys::idempotency::MAX_KEY_LEN;
use crate::core::sandboxes::{CreateParams, PatchParams};
use crate::core::usage::GroupBy;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::model::{BootPath, SandboxFilter, SandboxRecord, SandboxState};
use crate::routes::Auth;
use crate::validate::{check_env, check_label, range};

pub mod create;
#[cfg(test)]
mod tests;
mod usage;

pub use create::*;
use usage::*;

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
    /// The node that runs it (see `GET /nodes`).
    #[schema(required = true)]
    node_id: Option<String>,
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
            env_keys: r.env_keys(),
            network: json!({ "egress": r.egress }),
            boot_path: r.boot_path.map(|b| b.as_str()),
            created_at: rfc3339(r.created_at),
            started_at: r.started_at.map(rfc3339),
            paused_at: r.paused_at.map(rfc3339),
            destroyed_at: r.destroyed_at.map(rfc3339),
            node_id: r.node_id,
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

/// Longest external id (workspace, user, project) and template filter.
const MAX_EXTERNAL_ID: usize = 256;
/// Longest `tags=` filter: 50 tags of 64 bytes and their commas.
const MAX_TAGS_QUERY_BYTES: usize = 50 * 65;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only sandboxes in this state.
    #[param(value_type = SandboxState, required = false)]
    pub state: Option<String>,
    /// Alias of `state`.
    #[param(value_type = SandboxState, required = false)]
    pub status: Option<String>,
    /// Comma-separated tags (at most 50, each 1-64 bytes); all must match.
    #[param(value_type = String, required = false)]
    pub tags: Option<String>,
    /// Only this external workspace.
    #[param(value_type = String, required = false, max_length = 256)]
    pub external_workspace_id: Option<String>,
    /// Only this external user.
    #[param(value_type = String, required = false, max_length = 256)]
    pub external_user_id: Option<String>,
    /// Only this external project.
    #[param(value_type = String, required = false, max_length = 256)]
    pub external_project_id: Option<String>,
    /// Only this template.
    #[param(value_type = String, required = false, max_length = 256)]
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
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
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
    let mut bad = Vec::new();
    let tags: Vec<String> = query_text(&mut bad, "tags", q.tags, MAX_TAGS_QUERY_BYTES)
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    check_tags(&mut bad, &tags);
    let filter = SandboxFilter {
        state: st,
        tags,
        external_workspace_id: query_text(
            &mut bad,
            "external_workspace_id",
            q.external_workspace_id,
            MAX_EXTERNAL_ID,
        ),
        external_user_id: query_text(
            &mut bad,
            "external_user_id",
            q.external_user_id,
            MAX_EXTERNAL_ID,
        ),
        external_project_id: query_text(
            &mut bad,
            "external_project_id",
            q.external_project_id,
            MAX_EXTERNAL_ID,
        ),
        template_id: query_text(&mut bad, "template_id", q.template_id, MAX_EXTERNAL_ID),
        ids: None,
        deployment: None,
    };
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
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
    Auth(caller): Auth,
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
    Auth(caller): Auth,
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
    Auth(caller): Auth,
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
    Auth(caller): Auth,
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
    Auth(caller): Auth,
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
    Auth(caller): Auth,
    Path(id): Path<String>,
    req: axum::extract::Request,
) -> ApiResult<axum::response::Response> {
    // A draining node sends its paused sandboxes elsewhere to resume.
    if let Some(moved) = crate::cluster::moves::resume(&state, &caller, &id, req).await? {
        return Ok(moved);
    }
    let rec = state.resume_sandbox(&caller, &id).await?;
    Ok(data(view(&state, rec)).into_response())
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
    Auth(caller): Auth,
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
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let (ready, st) = state.readiness(&caller, &id).await?;
    Ok(data(json!({ "ready": ready, "state": st })))
}
