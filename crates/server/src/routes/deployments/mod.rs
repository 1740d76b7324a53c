//! Deployments: publishing ([`publish`]: `POST /sandboxes/{id}/deploy`
//! and `POST /deployments/{id}/publish`, answered once the new version is
//! healthy and serving, or failed); list, get, patch (scale), delete;
//! versions, rollback and promotion; runtime instances and logs; the start
//! command's environment ([`env`]); custom domains ([`domains`]).

pub mod domains;
pub mod env;
pub mod publish;

use domains::*;
use env::*;
pub use publish::*;

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

use std::collections::BTreeMap;

use crate::core::deployments::domains::{challenge, valid_domain};
use crate::core::deployments::{
    DeployParams, Deployed, Externals, Shape, HEALTH_DEADLINE, MAX_HEALTH_DEADLINE, MAX_REPLICAS,
};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::model::{DeploymentListFilter, DeploymentRecord, DeploymentVersionRecord, DomainRecord};
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
        .routes(routes!(get_env, put_env))
        .routes(routes!(list_domains, add_domain))
        .routes(routes!(verify_domain))
        .routes(routes!(delete_domain))
}

/// A deployment as the API shows it: its active version's start command
/// and its first verified custom domain with it.
async fn view(state: &AppState, d: &DeploymentRecord) -> ApiResult<serde_json::Value> {
    let active = match &d.active_version_id {
        Some(vid) => state.version_of(&d.id, vid).await?,
        None => None,
    };
    Ok(json!({
        "id": d.id,
        "tenant_id": d.tenant_id,
        "name": d.name,
        "slug": d.slug,
        "state": d.state,
        "active_version_id": d.active_version_id,
        "public_url": state.app_url(&d.slug),
        "custom_domain_id": state.custom_domain_of(&d.id),
        "run_command": active.map(|v| v.runtime_command),
        "replicas": d.replicas,
        "instance_ids": d.instances,
        "metadata": d.metadata,
        "external_workspace_id": d.external_workspace_id,
        "external_user_id": d.external_user_id,
        "external_project_id": d.external_project_id,
        "created_at": rfc3339(d.created_at),
        "updated_at": rfc3339(d.updated_at),
    }))
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
        "build_command": v.build_command,
        "build_log": v.build_log,
        "output_path": v.output_path,
        "error": v.error,
        "promoted_at": v.promoted_at.map(rfc3339),
        "created_at": rfc3339(v.created_at),
    })
}

async fn deployed_view(state: &AppState, d: &Deployed) -> ApiResult<serde_json::Value> {
    Ok(json!({
        "deployment": view(state, &d.deployment).await?,
        "version": version_view(&d.version),
        "promoted": d.promoted,
        "custom_domain": d.domain.as_ref().map(domain_view),
    }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only deployments in this state.
    #[param(value_type = String, required = false, max_length = 16)]
    pub state: Option<String>,
    /// Only deployments with this external workspace id.
    #[param(value_type = String, required = false, max_length = 256)]
    pub external_workspace_id: Option<String>,
    #[param(value_type = String, required = false, max_length = 256)]
    pub external_user_id: Option<String>,
    #[param(value_type = String, required = false, max_length = 256)]
    pub external_project_id: Option<String>,
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
    let filter = DeploymentListFilter {
        state: query_text(&mut bad, "state", q.state, 16),
        external_workspace_id: query_text(
            &mut bad,
            "external_workspace_id",
            q.external_workspace_id,
            256,
        ),
        external_user_id: query_text(&mut bad, "external_user_id", q.external_user_id, 256),
        external_project_id: query_text(
            &mut bad,
            "external_project_id",
            q.external_project_id,
            256,
        ),
    };
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let list = state.list_deployments(&caller, &filter).await?;
    let mut out = Vec::with_capacity(list.len());
    for d in &list {
        out.push(view(&state, d).await?);
    }
    Ok(data(out))
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
    Ok(data(
        view(&state, &state.get_deployment(&caller, &id).await?).await?,
    ))
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
    let mut v = view(&state, &d).await?;
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
    Ok(data(deployed_view(&state, &d).await?))
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
    Ok(data(deployed_view(&state, &d).await?))
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

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct PatchDeploymentBody {
    #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.-]+$")]
    pub name: Option<String>,
    /// Replaces the metadata; at most 16 KiB as JSON.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Scales to this many instances (new ones healthy before they serve).
    #[schema(minimum = 1, maximum = 20)]
    pub replicas: Option<i64>,
}

#[utoipa::path(
    patch,
    path = "/deployments/{id}",
    tag = DEPLOY,
    summary = "Rename a deployment, replace its metadata, or scale it",
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
    let replicas = match b.replicas {
        None => None,
        Some(n) if (1..=i64::from(MAX_REPLICAS)).contains(&n) => Some(n as u32),
        Some(_) => {
            bad.push(FieldError::new(
                "replicas",
                format!("must be between 1 and {MAX_REPLICAS}"),
            ));
            None
        }
    };
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let d = state
        .patch_deployment(&caller, &id, b.name, b.metadata, replicas)
        .await?;
    Ok(data(view(&state, &d).await?))
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
    Ok(data(
        view(&state, &state.stop_deployment(&caller, &id).await?).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/deployments/{id}/redeploy",
    tag = DEPLOY,
    summary = "Fresh instances of the active version (with the current env), healthy before they serve",
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
        domain: None,
    };
    Ok(data(deployed_view(&state, &d).await?))
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
        "active": d.instances.contains(&s.id),
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
