//! The sandbox calls: create (from a template or a snapshot), list, get,
//! kill, timeouts, pause, resume and connect.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::network::NetworkConfig;
use super::{
    answer, body_of, e2b_state, from_e2b, listed_view, paginate, sandbox, E2bError, E2bResult,
    DEFAULT_TIMEOUT_SEC, MAX_LIST,
};
use crate::core::keys::Caller;
use crate::model::{SandboxRecord, SandboxState};
use crate::routes::sandboxes::create::{CreateBody, NetworkBody};
use crate::routes::{AppState, Auth};
use crate::store::{Page, SandboxFilter};

/// `POST /sandboxes` (and `/v2/sandboxes`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: Option<String>,
    timeout: Option<u32>,
    auto_pause: Option<bool>,
    metadata: Option<BTreeMap<String, String>>,
    env_vars: Option<BTreeMap<String, String>>,
    #[serde(rename = "allow_internet_access")]
    allow_internet_access: Option<bool>,
    network: Option<NetworkConfig>,
    /// E2B features Hearth does not have: refused when given.
    auto_resume: Option<Value>,
    mcp: Option<Value>,
    volume_mounts: Option<Value>,
    iam: Option<Value>,
}

impl NewSandbox {
    /// The first field given that Hearth does not serve.
    fn unsupported(&self) -> Option<&'static str> {
        let given = |v: &Option<Value>| v.as_ref().is_some_and(|v| !v.is_null());
        [
            ("autoResume", &self.auto_resume),
            ("mcp", &self.mcp),
            ("volumeMounts", &self.volume_mounts),
            ("iam", &self.iam),
        ]
        .into_iter()
        .find(|(_, v)| given(v))
        .map(|(name, _)| name)
    }
}

/// The Hearth template an E2B template name means: `base` is the default.
fn template_of(name: Option<String>) -> String {
    match name.as_deref() {
        None | Some("" | "base") => "default".into(),
        Some(t) => t.to_string(),
    }
}

pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    req: axum::extract::Request,
) -> E2bResult<Response> {
    let (parts, body) = req.into_parts();
    let body = crate::routes::read_limited(body, state.config.max_json_body_bytes).await?;
    let b: NewSandbox = body_of(&body)?;
    if let Some(field) = b.unsupported() {
        return Err(E2bError::not_supported(&format!("{field} on create")));
    }
    let metadata = b.metadata.map(|m| {
        m.into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect::<serde_json::Map<_, _>>()
    });
    let timeout = b.timeout.unwrap_or(DEFAULT_TIMEOUT_SEC);
    if let Some(snapshot) = b.template_id.as_deref().filter(|t| t.starts_with("snap_")) {
        // It starts where the snapshot's files are.
        if let Some(there) =
            crate::cluster::place::to_snapshot_node(&state, snapshot, parts, body).await?
        {
            return Ok(there);
        }
        if b.env_vars.as_ref().is_some_and(|e| !e.is_empty()) {
            return Err(E2bError::bad_request(
                "envVars: a sandbox started from a snapshot keeps the snapshot's environment",
            ));
        }
        let rec = super::snapshots::start(&state, &caller, snapshot, timeout, metadata).await?;
        return Ok(answer(StatusCode::CREATED, &state, &caller, &rec));
    }
    let network = b.network.unwrap_or_default();
    let internet = b
        .allow_internet_access
        .or(network.allow_internet_access)
        .unwrap_or(true);
    let policy = network.policy(internet)?;
    // E2B's ports are public unless the sandbox says otherwise.
    let tags = match network.allow_public_traffic {
        Some(false) => vec![],
        _ => vec![super::super::PUBLIC_PORTS_TAG.to_string()],
    };
    let create = CreateBody {
        template_id: Some(template_of(b.template_id)),
        timeout_sec: Some(i64::from(timeout)),
        // A timeout pauses instead of killing.
        persistent: b.auto_pause,
        env: b.env_vars,
        metadata,
        tags: Some(tags),
        network: Some(NetworkBody {
            // No internet and no rules: no network at all, as before.
            egress: Some(internet || policy.is_some()),
            policy,
        }),
        ..CreateBody::default()
    };
    let mut params = create.validate()?;
    let placed = crate::cluster::place::create(&state, &mut params, None, parts, body).await?;
    if let Some(forwarded) = placed {
        return Ok(forwarded);
    }
    let rec = state.create_sandbox(&caller, params, true).await?;
    if rec.state != SandboxState::Running {
        return Err(E2bError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!(
                "the sandbox did not start: {}",
                rec.last_error().unwrap_or(rec.state.as_str())
            ),
        });
    }
    Ok(answer(StatusCode::CREATED, &state, &caller, &rec))
}

pub async fn get_one(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> E2bResult<Json<Value>> {
    let rec = sandbox(&state, &caller, &id).await?;
    Ok(Json(listed_view(&state, &rec, Some(&caller))))
}

pub async fn kill(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> E2bResult<StatusCode> {
    sandbox(&state, &caller, &id).await?;
    state.destroy_sandbox(&caller, &from_e2b(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TimeoutBody {
    timeout: Option<u32>,
    duration: Option<u32>,
}

pub async fn set_timeout(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> E2bResult<StatusCode> {
    let b: TimeoutBody = body_of(&body)?;
    let secs = b
        .timeout
        .ok_or_else(|| E2bError::bad_request("timeout is required"))?;
    sandbox(&state, &caller, &id).await?;
    state
        .extend_sandbox(&caller, &from_e2b(&id), secs.max(1))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn refresh(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> E2bResult<StatusCode> {
    let b: TimeoutBody = body_of(&body)?;
    sandbox(&state, &caller, &id).await?;
    let secs = b.duration.unwrap_or(60).max(1);
    state.extend_sandbox(&caller, &from_e2b(&id), secs).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn pause(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> E2bResult<StatusCode> {
    let rec = sandbox(&state, &caller, &id).await?;
    if rec.state == SandboxState::Paused {
        return Err(E2bError {
            status: StatusCode::CONFLICT,
            message: format!("sandbox {id} is already paused"),
        });
    }
    state.pause_sandbox(&caller, &rec.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Resumes a paused sandbox (and sets its timeout when given); the
/// status says whether it was paused.
async fn wake(
    state: &AppState,
    caller: &Caller,
    id: &str,
    timeout: Option<u32>,
) -> E2bResult<(StatusCode, SandboxRecord)> {
    let rec = sandbox(state, caller, id).await?;
    let resumed = rec.state.can_resume();
    let mut rec = match resumed {
        true => state.resume_sandbox(caller, &rec.id).await?,
        false => rec,
    };
    if let Some(t) = timeout {
        rec = state.extend_sandbox(caller, &rec.id, t.max(1)).await?;
    }
    let status = match resumed {
        true => StatusCode::CREATED,
        false => StatusCode::OK,
    };
    Ok((status, rec))
}

pub async fn resume(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> E2bResult<Response> {
    let b: TimeoutBody = body_of(&body)?;
    let rec = sandbox(&state, &caller, &id).await?;
    if !rec.state.can_resume() {
        return Err(E2bError {
            status: StatusCode::CONFLICT,
            message: format!("sandbox {id} is not paused"),
        });
    }
    let (_, rec) = wake(&state, &caller, &id, b.timeout).await?;
    Ok(answer(StatusCode::CREATED, &state, &caller, &rec))
}

pub async fn connect(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> E2bResult<Response> {
    let b: TimeoutBody = body_of(&body)?;
    let (status, rec) = wake(&state, &caller, &id, b.timeout).await?;
    Ok(answer(status, &state, &caller, &rec))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListQuery {
    /// `key=value&key2=value2`, URL-encoded.
    metadata: Option<String>,
    /// `running`, `paused` or both, comma-separated (v2).
    state: Option<String>,
    limit: Option<u32>,
    #[serde(rename = "nextToken")]
    next_token: Option<String>,
}

/// The caller's sandboxes that match `q`'s metadata and states, and the
/// token of the next page (v2).
/// The caller's sandboxes that match `q`'s metadata and states, one page
/// of them (the next page's token in `x-next-token`).
async fn listing(
    state: &AppState,
    caller: &Caller,
    q: ListQuery,
    default_states: &[&str],
) -> E2bResult<Response> {
    let wanted: BTreeMap<String, String> = q
        .metadata
        .as_deref()
        .map(|m| form_urlencoded::parse(m.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let states: Vec<String> = match q.state.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => s.split(',').map(|x| x.trim().to_string()).collect(),
        None => default_states.iter().map(|s| s.to_string()).collect(),
    };
    let (all, _) = state
        .list_sandboxes(
            caller,
            &SandboxFilter::default(),
            Page {
                page: 1,
                page_size: MAX_LIST,
            },
        )
        .await?;
    let matching: Vec<Value> = all
        .iter()
        .filter(|r| r.state != SandboxState::Destroyed && r.deployment_id.is_none())
        .filter(|r| states.iter().any(|s| s == e2b_state(r.state)))
        .filter(|r| {
            wanted
                .iter()
                .all(|(k, v)| r.metadata.get(k).and_then(Value::as_str) == Some(v.as_str()))
        })
        .map(|r| listed_view(state, r, None))
        .collect();
    Ok(paginate(matching, q.limit, q.next_token.as_deref()))
}

pub async fn list_v1(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<ListQuery>,
) -> E2bResult<Response> {
    listing(&state, &caller, q, &["running"]).await
}

pub async fn list_v2(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<ListQuery>,
) -> E2bResult<Response> {
    listing(&state, &caller, q, &["running", "paused"]).await
}

pub async fn metrics(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> E2bResult<Json<Value>> {
    sandbox(&state, &caller, &id).await?;
    // Per-sandbox CPU and memory samples are not collected.
    Ok(Json(json!([])))
}

pub async fn logs(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> E2bResult<Json<Value>> {
    sandbox(&state, &caller, &id).await?;
    Ok(Json(json!({ "logs": [], "logEntries": [] })))
}
