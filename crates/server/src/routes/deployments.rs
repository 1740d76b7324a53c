//! Deployments: `POST /sandboxes/{id}/deploy` publishes a sandbox (a new
//! deployment, or a new version of one), answered once the new version is
//! healthy and serving (or failed); list, get, patch (scale), delete;
//! versions, rollback and promotion; runtime instances and logs; the start
//! command's environment; custom domains.

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

fn domain_view(d: &DomainRecord) -> serde_json::Value {
    let (name, value) = challenge(d);
    json!({
        "id": d.id,
        "deployment_id": d.deployment_id,
        "domain": d.domain,
        "state": d.state,
        "verification": { "type": "TXT", "name": name, "value": value },
        "has_certificate": d.certificate_pem.is_some(),
        "created_at": rfc3339(d.created_at),
        "verified_at": d.verified_at.map(rfc3339),
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

/// Declares a publish body: its own fields, then those every publish
/// takes (`POST /sandboxes/{id}/deploy` and `POST
/// /deployments/{id}/publish` share them; one declaration keeps their
/// schemas the same).
macro_rules! publish_body {
    ($(#[$meta:meta])* pub struct $name:ident { $($own:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default, Deserialize, ToSchema)]
        #[serde(default)]
        pub struct $name {
            $($own)*
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
            /// Answer once the version serves or failed (default true); false:
            /// 202 at once (the snapshot taken), the build and roll-out going on
            /// (poll the version).
            pub wait: Option<bool>,
            /// Run once at publish in a clone of the sandbox (its output is kept
            /// as the version's `build_log`); a non-zero exit fails the version.
            #[schema(
                min_length = 1,
                max_length = 4096,
                pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
            )]
            pub build_command: Option<String>,
            /// The directory the build and start commands run in (absolute).
            #[schema(min_length = 1, max_length = 4096, pattern = r"^/[^\u0000]*$")]
            pub output_path: Option<String>,
            /// Instances serving the deployment, load-balanced (default 1, or the
            /// deployment's count; at most 20 and the tenant's `replicas` quota).
            #[schema(minimum = 1, maximum = 20)]
            pub replicas: Option<i64>,
            /// A custom domain to serve too, once verified (see
            /// `/deployments/{id}/domains`).
            #[schema(
                min_length = 3,
                max_length = 253,
                pattern = r"^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]([a-z0-9-]*[a-z0-9])?$",
                example = "app.example.com"
            )]
            pub custom_domain: Option<String>,
            /// The instances' shape. Instances restore the version's memory
            /// snapshot, so they take the source sandbox's shape: a different one
            /// is refused (422) with what it is.
            pub resources: Option<DeployResources>,
            /// A new deployment's external ids (default: the sandbox's).
            #[schema(max_length = 256)]
            pub external_workspace_id: Option<String>,
            #[schema(max_length = 256)]
            pub external_user_id: Option<String>,
            #[schema(max_length = 256)]
            pub external_project_id: Option<String>,
        }
    };
}

publish_body! {
    /// `POST /sandboxes/{id}/deploy`: a new deployment (`name`) or a new
    /// version of one (`deployment_id`).
    pub struct DeployBody {
        /// A new deployment of this name (unique in the tenant)...
        #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.-]+$")]
        pub name: Option<String>,
        /// ...or a new version of this deployment.
        #[schema(min_length = 1, max_length = 64)]
        pub deployment_id: Option<String>,
        /// A new deployment's name under the apps domain
        /// (`<domain>.apps.<proxy domain>`; default random).
        #[schema(
            min_length = 3,
            max_length = 63,
            pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
        )]
        pub domain: Option<String>,
    }
}

/// `resources` of a publish: each field, when given, must be the source
/// sandbox's.
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(default)]
pub struct DeployResources {
    #[schema(minimum = 1, maximum = 4294967295_u64)]
    pub cpu_count: Option<u32>,
    #[schema(minimum = 1, maximum = 4294967295_u64)]
    pub memory_mb: Option<u32>,
    #[schema(minimum = 1, maximum = 4294967295_u64)]
    pub disk_size_mb: Option<u32>,
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
    responses(
        (status = 201, description = "Published (or failed: `promoted` false)", body = Data),
        (status = 202, description = "`wait: false`: the snapshot is taken, the build and roll-out go on", body = Data),
        E404And422,
    ),
)]
async fn deploy(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<DeployBody>,
) -> ApiResult<impl IntoResponse> {
    let params = b.validate(&state.config.preview.domain)?;
    published(&state, &caller, &id, params).await
}

/// Publishes `source`: 201 with what it did, or 202 when not waited for.
async fn published(
    state: &AppState,
    caller: &crate::core::keys::Caller,
    source: &str,
    params: DeployParams,
) -> ApiResult<axum::response::Response> {
    let status = match params.wait {
        true => StatusCode::CREATED,
        false => StatusCode::ACCEPTED,
    };
    let d = state.deploy(caller, source, params).await?;
    Ok((status, data(deployed_view(state, &d).await?)).into_response())
}

impl DeployBody {
    fn validate(self, proxy_domain: &str) -> ApiResult<DeployParams> {
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
        if b.build_command.as_deref().is_some_and(bad_command) {
            bad.push(FieldError::new("build_command", "1-4096 bytes without NUL"));
        }
        if b.output_path
            .as_deref()
            .is_some_and(|p| !p.starts_with('/') || p.len() > 4096 || p.contains('\0'))
        {
            bad.push(FieldError::new(
                "output_path",
                "an absolute path of at most 4096 bytes without NUL",
            ));
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
        if let Some(slug) = &b.domain {
            let ok = (3..=63).contains(&slug.len())
                && slug
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !slug.starts_with('-')
                && !slug.ends_with('-');
            if !ok {
                bad.push(FieldError::new(
                    "domain",
                    "3-63 lower-case letters, digits and -, not at either end",
                ));
            } else if b.deployment_id.is_some() {
                bad.push(FieldError::new(
                    "domain",
                    "names a new deployment's URL; a deployment keeps its own",
                ));
            }
        }
        if let Some(r) = &b.resources {
            for (name, v) in [
                ("cpu_count", r.cpu_count),
                ("memory_mb", r.memory_mb),
                ("disk_size_mb", r.disk_size_mb),
            ] {
                if v == Some(0) {
                    bad.push(FieldError::new(
                        format!("resources.{name}"),
                        "must be at least 1",
                    ));
                }
            }
        }
        if let Some(d) = &b.custom_domain {
            if let Err(why) = valid_domain(d, proxy_domain) {
                bad.push(FieldError::new("custom_domain", format!("must be {why}")));
            }
        }
        for (field, v) in [
            ("external_workspace_id", &b.external_workspace_id),
            ("external_user_id", &b.external_user_id),
            ("external_project_id", &b.external_project_id),
        ] {
            if v.as_deref()
                .is_some_and(|v| v.len() > 256 || v.chars().any(char::is_control))
            {
                bad.push(FieldError::new(
                    field,
                    "at most 256 bytes without control characters",
                ));
            }
        }
        if !bad.is_empty() {
            return Err(ApiError::validation(bad));
        }
        Ok(DeployParams {
            name: b.name,
            deployment_id: b.deployment_id,
            port,
            run_command: command,
            health_check_path: health,
            build_command: b.build_command,
            output_path: b.output_path,
            replicas,
            external: Externals {
                workspace_id: b.external_workspace_id,
                user_id: b.external_user_id,
                project_id: b.external_project_id,
            },
            slug: b.domain,
            custom_domain: b.custom_domain,
            resources: b.resources.map(|r| Shape {
                cpu_count: r.cpu_count,
                memory_mb: r.memory_mb,
                disk_size_mb: r.disk_size_mb,
            }),
            promote: b.promote.unwrap_or(true),
            wait: b.wait.unwrap_or(true),
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

publish_body! {
    /// `POST /deployments/{id}/publish`: the source (the deployment is the
    /// path's).
    pub struct PublishBody {
        /// The sandbox whose snapshot becomes the new version.
        #[schema(required = true, min_length = 1, max_length = 64)]
        pub source_sandbox_id: String,
    }
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
            wait: p.wait,
            build_command: p.build_command,
            output_path: p.output_path,
            replicas: p.replicas,
            domain: None,
            custom_domain: p.custom_domain,
            resources: p.resources,
            external_workspace_id: p.external_workspace_id,
            external_user_id: p.external_user_id,
            external_project_id: p.external_project_id,
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
    responses(
        (status = 201, description = "`{deployment, version, promoted}`", body = Data),
        (status = 202, description = "`wait: false`: the snapshot is taken, the build and roll-out go on", body = Data),
        E404And422,
    ),
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
    let params = DeployBody::from((id, b)).validate(&state.config.preview.domain)?;
    published(&state, &caller, &source, params).await
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

/// The start command's environment: at most this many variables...
const MAX_ENV_VARS: usize = 200;
/// ...and this many bytes of names and values together.
const MAX_ENV_BYTES: usize = 128 * 1024;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct EnvBody {
    /// Replaces the environment (at most 200 variables, 128 KiB).
    #[schema(required = true, schema_with = crate::routes::openapi::shell_env)]
    pub env: Option<BTreeMap<String, String>>,
}

fn env_view(d: &DeploymentRecord) -> axum::Json<serde_json::Value> {
    data(json!({ "deployment_id": d.id, "env": d.env }))
}

#[utoipa::path(
    get,
    path = "/deployments/{id}/env",
    tag = DEPLOY,
    summary = "The environment the start command gets",
    params(DeploymentId),
    responses((status = 200, description = "`{deployment_id, env}`", body = Data), E404),
)]
async fn get_env(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(env_view(&state.get_deployment(&caller, &id).await?))
}

#[utoipa::path(
    put,
    path = "/deployments/{id}/env",
    tag = DEPLOY,
    summary = "Replace the start command's environment",
    description = "Instances started from now on get it: a publish, `redeploy` (restarts every \
                   instance without downtime), a scale-up or a replacement.",
    params(DeploymentId),
    request_body = EnvBody,
    responses((status = 200, description = "`{deployment_id, env}`", body = Data), E404And422),
)]
async fn put_env(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<EnvBody>,
) -> ApiResult<impl IntoResponse> {
    let Some(env) = b.env else {
        return Err(ApiError::field(
            "env",
            "is required (an object; {} clears it)",
        ));
    };
    let mut bad = Vec::new();
    crate::validate::check_env(&mut bad, "env", &env);
    let bytes: usize = env.iter().map(|(k, v)| k.len() + v.len()).sum();
    if env.len() > MAX_ENV_VARS || bytes > MAX_ENV_BYTES {
        bad.push(FieldError::new(
            "env",
            format!("at most {MAX_ENV_VARS} variables and {MAX_ENV_BYTES} bytes"),
        ));
    }
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    Ok(env_view(
        &state.put_deployment_env(&caller, &id, env).await?,
    ))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct DomainBody {
    /// The host name (lower case), e.g. `app.example.com`.
    #[schema(
        required = true,
        min_length = 3,
        max_length = 253,
        pattern = r"^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]([a-z0-9-]*[a-z0-9])?$",
        example = "app.example.com"
    )]
    pub domain: String,
    /// A PEM certificate chain valid for the domain: served by the TLS
    /// listener for that name once verified (empty: none).
    #[schema(max_length = 65536)]
    pub certificate_pem: Option<String>,
    /// The certificate's PEM private key (sealed at rest, never shown).
    #[schema(max_length = 16384)]
    pub private_key_pem: Option<String>,
}

#[utoipa::path(
    post,
    path = "/deployments/{id}/domains",
    tag = DEPLOY,
    summary = "Add a custom domain (served once verified)",
    description = "Answers the domain, `pending`, with the TXT record to create \
                   (`verification.name` holding `verification.value`); then `POST \
                   .../domains/{did}/verify`.",
    params(DeploymentId),
    request_body = DomainBody,
    responses((status = 201, description = "The domain", body = Data), E404And422),
)]
async fn add_domain(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<DomainBody>,
) -> ApiResult<impl IntoResponse> {
    let domain = b.domain.trim_end_matches('.').to_string();
    if let Err(why) = valid_domain(&domain, &state.config.preview.domain) {
        return Err(ApiError::field("domain", format!("must be {why}")));
    }
    let given = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let certificate = match (given(b.certificate_pem), given(b.private_key_pem)) {
        (None, None) => None,
        (Some(chain), Some(key)) => {
            if chain.len() > 65536 || key.len() > 16384 {
                return Err(ApiError::field(
                    "certificate_pem",
                    "a chain of at most 64 KiB and a key of at most 16 KiB",
                ));
            }
            crate::proxy::listener::check_certificate(&domain, chain.as_bytes(), key.as_bytes())
                .map_err(|why| ApiError::field("certificate_pem", why))?;
            Some((chain, key.into_bytes()))
        }
        _ => {
            return Err(ApiError::field(
                "private_key_pem",
                "give certificate_pem and private_key_pem together",
            ))
        }
    };
    let d = state.add_domain(&caller, &id, &domain, certificate).await?;
    Ok((StatusCode::CREATED, data(domain_view(&d))))
}

#[utoipa::path(
    get,
    path = "/deployments/{id}/domains",
    tag = DEPLOY,
    summary = "A deployment's custom domains",
    params(DeploymentId),
    responses((status = 200, description = "OK", body = DataList), E404),
)]
async fn list_domains(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let list = state.list_domains(&caller, &id).await?;
    Ok(data(list.iter().map(domain_view).collect::<Vec<_>>()))
}

#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DomainPath {
    /// Deployment id (`dep_...`).
    pub id: String,
    /// Domain id (`dom_...`).
    pub did: String,
}

#[utoipa::path(
    post,
    path = "/deployments/{id}/domains/{did}/verify",
    tag = DEPLOY,
    summary = "Check the domain's TXT record; verified domains are served",
    description = "409 `domain_not_verified` naming the record and what was found, or \
                   `domain_taken` when another deployment holds the domain verified.",
    params(DomainPath),
    responses((status = 200, description = "The domain, `verified`", body = Data), E404),
)]
async fn verify_domain(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, did)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    Ok(data(domain_view(
        &state.verify_domain(&caller, &id, &did).await?,
    )))
}

#[utoipa::path(
    delete,
    path = "/deployments/{id}/domains/{did}",
    tag = DEPLOY,
    summary = "Remove a custom domain (no longer served)",
    params(DomainPath),
    responses((status = 200, description = "The removed domain", body = Data), E404),
)]
async fn delete_domain(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, did)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let d = state.delete_domain(&caller, &id, &did).await?;
    let mut v = domain_view(&d);
    v["deleted"] = json!(true);
    Ok(data(v))
}
