//! Deployments: `POST /sandboxes/{id}/deploy` publishes a sandbox (a new
//! deployment, or a new version of one), answered once the new version is
//! healthy and serving (or failed); list, get, delete; versions, rollback
//! and promotion; runtime instances.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Data, DataList, E404And422, SandboxId, DEPLOY, E404, E422};
use super::{data, query_text, ApiJson, ApiQuery, AppState};
use crate::core::clock::rfc3339;
use std::time::Duration;

use crate::core::deployments::{DeployParams, Deployed, HEALTH_DEADLINE, MAX_HEALTH_DEADLINE};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::model::{DeploymentRecord, DeploymentVersionRecord};
use crate::routes::Auth;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(deploy))
        .routes(routes!(list))
        .routes(routes!(get_one, patch, delete))
        .routes(routes!(publish))
        .routes(routes!(stop))
        .routes(routes!(redeploy))
        .routes(routes!(versions))
        .routes(routes!(version))
        .routes(routes!(rollback))
        .routes(routes!(promote))
        .routes(routes!(instances))
        .routes(routes!(instance))
        .routes(routes!(instance_logs))
        .routes(routes!(logs))
}

fn view(state: &AppState, d: &DeploymentRecord) -> serde_json::Value {
    json!({
        "id": d.id,
        "tenant_id": d.tenant_id,
        "name": d.name,
        "slug": d.slug,
        "state": d.state,
        "active_version_id": d.active_version_id,
        "public_url": state.app_url(&d.slug),
        "metadata": d.metadata,
        "created_at": rfc3339(d.created_at),
        "updated_at": rfc3339(d.updated_at),
    })
}

fn version_view(v: &DeploymentVersionRecord) -> serde_json::Value {
    json!({
        "id": v.id,
        "deployment_id": v.deployment_id,
        "version_number": v.version_number,
        "kind": "sandbox_backed",
        "state": v.state,
        "source_sandbox_id": v.source_sandbox_id,
        "runtime_command": v.runtime_command,
        "runtime_port": v.runtime_port,
        "health_check_path": v.health_check_path,
        "error": v.error,
        "promoted_at": v.promoted_at.map(rfc3339),
        "created_at": rfc3339(v.created_at),
    })
}

fn deployed_view(state: &AppState, d: &Deployed) -> serde_json::Value {
    json!({
        "deployment": view(state, &d.deployment),
        "version": version_view(&d.version),
        "promoted": d.promoted,
    })
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct DeployBody {
    /// A new deployment of this name (unique in the tenant)...
    #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.-]+$")]
    pub name: Option<String>,
    /// ...or a new version of this deployment.
    #[schema(min_length = 1, max_length = 64)]
    pub deployment_id: Option<String>,
    /// The port the app listens on in the sandbox.
    #[schema(required = true, minimum = 1, maximum = 65535)]
    pub port: Option<i64>,
    /// The command that starts the app (run in each instance).
    #[schema(
        required = true,
        min_length = 1,
        max_length = 4096,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    )]
    pub start_command: Option<String>,
    /// Alias of `start_command`.
    #[schema(
        min_length = 1,
        max_length = 4096,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    )]
    pub run_command: Option<String>,
    /// Answered 2xx/3xx before the URL switches (default `/`).
    #[schema(min_length = 1, max_length = 1024, pattern = r"^/[!-~]*$")]
    pub health_check_path: Option<String>,
    /// Switch the URL to this version once healthy (default true).
    pub promote: Option<bool>,
    /// Seconds the new instance has to pass its health check, 1-600
    /// (default 90).
    #[schema(minimum = 1, maximum = 600, default = 90)]
    pub health_timeout_sec: Option<i64>,
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/deploy",
    tag = DEPLOY,
    summary = "Publish the sandbox: a new deployment or a new version, serving once healthy",
    description = "Answers `{deployment, version, promoted}` once the new version's instance passed \
                   its health check and serves the deployment's URL, or failed (then `promoted` is \
                   false, the version `failed` with its `error`, and the URL stays on what it served).",
    params(SandboxId),
    request_body = DeployBody,
    responses((status = 201, description = "Published", body = Data), E404And422),
)]
async fn deploy(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<DeployBody>,
) -> ApiResult<impl IntoResponse> {
    let params = b.validate()?;
    let d = state.deploy(&caller, &id, params).await?;
    Ok((StatusCode::CREATED, data(deployed_view(&state, &d))))
}

impl DeployBody {
    fn validate(self) -> ApiResult<DeployParams> {
        let b = self;
        let mut bad = Vec::new();
        let port = match b.port {
            Some(p) if (1..=65535).contains(&p) => p as u16,
            _ => {
                bad.push(FieldError::new("port", "is required, 1-65535"));
                0
            }
        };
        let bad_command = |c: &str| c.trim().is_empty() || c.len() > 4096 || c.contains('\0');
        if b.run_command.as_deref().is_some_and(bad_command) {
            bad.push(FieldError::new("run_command", "1-4096 bytes without NUL"));
        }
        let command = b.start_command.or(b.run_command).unwrap_or_default();
        if bad_command(&command) {
            bad.push(FieldError::new(
                "start_command",
                "is required: 1-4096 bytes without NUL",
            ));
        }
        let health = b.health_check_path.unwrap_or_else(|| "/".into());
        if !health.starts_with('/')
            || health.len() > 1024
            || !health.bytes().all(|c| c.is_ascii_graphic())
        {
            bad.push(FieldError::new(
                "health_check_path",
                "an absolute path of printable ASCII, at most 1024 bytes",
            ));
        }
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 128
                && n.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
        };
        match (&b.name, &b.deployment_id) {
            (Some(n), _) if !name_ok(n) => {
                bad.push(FieldError::new("name", "1-128 letters, digits, _, - and ."))
            }
            (_, Some(d)) if d.is_empty() || d.len() > 64 => {
                bad.push(FieldError::new("deployment_id", "1-64 characters"))
            }
            (None, None) => bad.push(FieldError::new(
                "name",
                "name a new deployment, or give deployment_id",
            )),
            _ => {}
        }
        let max = MAX_HEALTH_DEADLINE.as_secs() as i64;
        let health_deadline = match b.health_timeout_sec {
            None => HEALTH_DEADLINE,
            Some(s) if (1..=max).contains(&s) => Duration::from_secs(s as u64),
            Some(_) => {
                bad.push(FieldError::new(
                    "health_timeout_sec",
                    format!("must be between 1 and {max}"),
                ));
                HEALTH_DEADLINE
            }
        };
        if !bad.is_empty() {
            return Err(ApiError::validation(bad));
        }
        Ok(DeployParams {
            name: b.name,
            deployment_id: b.deployment_id,
            port,
            run_command: command,
            health_check_path: health,
            promote: b.promote.unwrap_or(true),
            health_deadline,
        })
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only deployments in this state.
    #[param(value_type = String, required = false, max_length = 16)]
    pub state: Option<String>,
}

#[utoipa::path(
    get,
    path = "/deployments",
    tag = DEPLOY,
    summary = "The tenant's deployments, newest first (at most 1000)",
    params(ListQuery),
    responses((status = 200, description = "OK", body = DataList), E422),
)]
async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let mut bad = Vec::new();
    let st = query_text(&mut bad, "state", q.state, 16);
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let list = state.list_deployments(&caller, st.as_deref()).await?;
    Ok(data(
        list.iter().map(|d| view(&state, d)).collect::<Vec<_>>(),
    ))
}

#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DeploymentId {
    /// Deployment id (`dep_...`).
    pub id: String,
}

#[utoipa::path(
    get,
    path = "/deployments/{id}",
    tag = DEPLOY,
    summary = "One deployment",
    params(DeploymentId),
    responses((status = 200, description = "OK", body = Data), E404),
)]
async fn get_one(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(data(view(
        &state,
        &state.get_deployment(&caller, &id).await?,
    )))
}

#[utoipa::path(
    delete,
    path = "/deployments/{id}",
    tag = DEPLOY,
    summary = "Stop and delete a deployment: its instances, versions and their snapshots",
    params(DeploymentId),
    responses((status = 200, description = "OK: the deleted deployment", body = Data), E404),
)]
async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let d = state.delete_deployment(&caller, &id).await?;
    let mut v = view(&state, &d);
    v["deleted"] = json!(true);
    Ok(data(v))
}

#[utoipa::path(
    get,
    path = "/deployments/{id}/versions",
    tag = DEPLOY,
    summary = "A deployment's versions, newest first",
    params(DeploymentId),
    responses((status = 200, description = "OK", body = DataList), E404),
)]
async fn versions(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let list = state.list_versions(&caller, &id).await?;
    Ok(data(list.iter().map(version_view).collect::<Vec<_>>()))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct RollbackBody {
    /// The version to serve again (default: the one promoted before the
    /// active one).
    #[schema(min_length = 1, max_length = 64)]
    pub version_id: Option<String>,
}

#[utoipa::path(
    post,
    path = "/deployments/{id}/rollback",
    tag = DEPLOY,
    summary = "Serve an earlier version again (started and healthy before the switch)",
    params(DeploymentId),
    request_body = RollbackBody,
    responses((status = 200, description = "OK: `{deployment, version, promoted}`", body = Data), E404And422),
)]
async fn rollback(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<RollbackBody>,
) -> ApiResult<impl IntoResponse> {
    if b.version_id
        .as_ref()
        .is_some_and(|v| v.is_empty() || v.len() > 64)
    {
        return Err(ApiError::field("version_id", "1-64 characters"));
    }
    let d = state
        .rollback_deployment(&caller, &id, b.version_id.as_deref())
        .await?;
    Ok(data(deployed_view(&state, &d)))
}

#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct VersionPath {
    /// Deployment id (`dep_...`).
    pub id: String,
    /// Version id (`dpv_...`).
    pub vid: String,
}

#[utoipa::path(
    post,
    path = "/deployments/{id}/versions/{vid}/promote",
    tag = DEPLOY,
    summary = "Serve this version (started and healthy before the switch)",
    params(VersionPath),
    responses((status = 200, description = "OK: `{deployment, version, promoted}`", body = Data), E404),
)]
async fn promote(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, vid)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let d = state.rollback_deployment(&caller, &id, Some(&vid)).await?;
    Ok(data(deployed_view(&state, &d)))
}

#[utoipa::path(
    get,
    path = "/deployments/{id}/runtime-instances",
    tag = DEPLOY,
    summary = "The sandboxes serving a deployment (and any draining)",
    params(DeploymentId),
    responses((status = 200, description = "OK", body = DataList), E404),
)]
async fn instances(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let d = state.get_deployment(&caller, &id).await?;
    let list = state.deployment_instances(&caller, &id).await?;
    Ok(data(
        list.iter()
            .map(|s| instance_view(&d, s))
            .collect::<Vec<_>>(),
    ))
}

/// `POST /deployments/{id}/publish`: the source, then what a deploy takes
/// (the deployment is the path's).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct PublishBody {
    /// The sandbox whose snapshot becomes the new version.
    #[schema(required = true, min_length = 1, max_length = 64)]
    pub source_sandbox_id: String,
    #[schema(required = true, minimum = 1, maximum = 65535)]
    pub port: Option<i64>,
    #[schema(
        required = true,
        min_length = 1,
        max_length = 4096,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    )]
    pub start_command: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 4096,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    )]
    pub run_command: Option<String>,
    #[schema(min_length = 1, max_length = 1024, pattern = r"^/[!-~]*$")]
    pub health_check_path: Option<String>,
    pub promote: Option<bool>,
    #[schema(minimum = 1, maximum = 600, default = 90)]
    pub health_timeout_sec: Option<i64>,
}

impl From<(String, PublishBody)> for DeployBody {
    fn from((deployment_id, p): (String, PublishBody)) -> DeployBody {
        DeployBody {
            name: None,
            deployment_id: Some(deployment_id),
            port: p.port,
            start_command: p.start_command,
            run_command: p.run_command,
            health_check_path: p.health_check_path,
            promote: p.promote,
            health_timeout_sec: p.health_timeout_sec,
        }
    }
}

#[utoipa::path(
    post,
    path = "/deployments/{id}/publish",
    tag = DEPLOY,
    summary = "Publish a sandbox as a new version of this deployment",
    params(DeploymentId),
    request_body = PublishBody,
    responses((status = 201, description = "`{deployment, version, promoted}`", body = Data), E404And422),
)]
async fn publish(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<PublishBody>,
) -> ApiResult<impl IntoResponse> {
    if b.source_sandbox_id.is_empty() || b.source_sandbox_id.len() > 64 {
        return Err(ApiError::field("source_sandbox_id", "is required"));
    }
    let source = b.source_sandbox_id.clone();
    let params = DeployBody::from((id, b)).validate()?;
    let d = state.deploy(&caller, &source, params).await?;
    Ok((StatusCode::CREATED, data(deployed_view(&state, &d))))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct PatchDeploymentBody {
    #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.-]+$")]
    pub name: Option<String>,
    /// Replaces the metadata; at most 16 KiB as JSON.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[utoipa::path(
    patch,
    path = "/deployments/{id}",
    tag = DEPLOY,
    summary = "Rename a deployment or replace its metadata",
    params(DeploymentId),
    request_body = PatchDeploymentBody,
    responses((status = 200, description = "OK", body = Data), E404And422),
)]
async fn patch(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<PatchDeploymentBody>,
) -> ApiResult<impl IntoResponse> {
    let mut bad = Vec::new();
    if let Some(n) = &b.name {
        if n.is_empty()
            || n.len() > 128
            || !n
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
        {
            bad.push(FieldError::new("name", "1-128 letters, digits, _, - and ."));
        }
    }
    if let Some(m) = &b.metadata {
        if serde_json::to_string(m).map_or(0, |s| s.len()) > 16 * 1024 {
            bad.push(FieldError::new(
                "metadata",
                "must be at most 16 KiB of JSON",
            ));
        }
    }
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let d = state
        .patch_deployment(&caller, &id, b.name, b.metadata)
        .await?;
    Ok(data(view(&state, &d)))
}

#[utoipa::path(
    post,
    path = "/deployments/{id}/stop",
    tag = DEPLOY,
    summary = "Stop serving: the instances go, versions stay (redeploy serves again)",
    params(DeploymentId),
    responses((status = 200, description = "OK", body = Data), E404),
)]
async fn stop(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(data(view(
        &state,
        &state.stop_deployment(&caller, &id).await?,
    )))
}

#[utoipa::path(
    post,
    path = "/deployments/{id}/redeploy",
    tag = DEPLOY,
    summary = "A fresh instance of the active version, healthy before it serves",
    params(DeploymentId),
    responses((status = 200, description = "`{deployment, version, promoted}`", body = Data), E404),
)]
async fn redeploy(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let (deployment, version, promoted) = state.redeploy(&caller, &id).await?;
    let d = Deployed {
        deployment,
        version,
        promoted,
    };
    Ok(data(deployed_view(&state, &d)))
}

#[utoipa::path(
    get,
    path = "/deployments/{id}/versions/{vid}",
    tag = DEPLOY,
    summary = "One version",
    params(VersionPath),
    responses((status = 200, description = "OK", body = Data), E404),
)]
async fn version(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, vid)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    Ok(data(version_view(
        &state.get_version(&caller, &id, &vid).await?,
    )))
}

#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct InstancePath {
    /// Deployment id (`dep_...`).
    pub id: String,
    /// Runtime instance id (a sandbox id).
    pub iid: String,
}

fn instance_view(d: &DeploymentRecord, s: &crate::model::SandboxRecord) -> serde_json::Value {
    json!({
        "id": s.id,
        "deployment_id": d.id,
        "version_id": s.metadata.get("version_id"),
        "state": s.state,
        "active": d.active_instance_id.as_deref() == Some(s.id.as_str()),
        "boot_path": s.boot_path,
        "created_at": rfc3339(s.created_at),
    })
}

#[utoipa::path(
    get,
    path = "/deployments/{id}/runtime-instances/{iid}",
    tag = DEPLOY,
    summary = "One runtime instance",
    params(InstancePath),
    responses((status = 200, description = "OK", body = Data), E404),
)]
async fn instance(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, iid)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let d = state.get_deployment(&caller, &id).await?;
    let s = state.get_instance(&caller, &id, &iid).await?;
    Ok(data(instance_view(&d, &s)))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Lines of each stream, 1-10000 (default 200).
    #[param(value_type = u32, required = false, minimum = 1, maximum = 10000)]
    pub lines: Option<String>,
}

fn parse_lines(v: Option<&str>) -> ApiResult<usize> {
    match v.map(str::trim) {
        None | Some("") => Ok(200),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| ApiError::field("lines", "must be an integer 1-10000")),
    }
}

fn logs_view(stdout: String, stderr: String) -> axum::Json<serde_json::Value> {
    data(json!({ "stdout": stdout, "stderr": stderr }))
}

#[utoipa::path(
    get,
    path = "/deployments/{id}/logs",
    tag = DEPLOY,
    summary = "The serving instance's start-command output (last lines of each stream)",
    params(DeploymentId, LogsQuery),
    responses((status = 200, description = "`{stdout, stderr}`", body = Data), E404And422),
)]
async fn logs(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> ApiResult<impl IntoResponse> {
    let lines = parse_lines(q.lines.as_deref())?;
    let (out, err) = state.deployment_logs(&caller, &id, None, lines).await?;
    Ok(logs_view(out, err))
}

#[utoipa::path(
    get,
    path = "/deployments/{id}/runtime-instances/{iid}/logs",
    tag = DEPLOY,
    summary = "One instance's start-command output",
    params(InstancePath, LogsQuery),
    responses((status = 200, description = "`{stdout, stderr}`", body = Data), E404And422),
)]
async fn instance_logs(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, iid)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> ApiResult<impl IntoResponse> {
    let lines = parse_lines(q.lines.as_deref())?;
    let (out, err) = state
        .deployment_logs(&caller, &id, Some(&iid), lines)
        .await?;
    Ok(logs_view(out, err))
}
