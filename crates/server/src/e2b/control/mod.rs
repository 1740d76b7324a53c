//! E2B's control API, mounted at `/e2b` (`E2B_API_URL`): the calls the
//! official SDKs make to create, find, time out, pause, resume and kill
//! sandboxes, answered in E2B's shapes (`sandboxID`, `templateID`,
//! `envdVersion`, `envdAccessToken`, `domain`, ...) and mapped onto
//! Hearth's core. Errors are E2B's `{code, message}` with the status
//! Hearth's own API would answer.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{access_token, from_e2b, to_e2b, ENVD_VERSION};
use crate::core::clock::rfc3339;
use crate::core::keys::Caller;
use crate::model::{SandboxRecord, SandboxState};
use crate::routes::sandboxes::create::{CreateBody, NetworkBody};
use crate::routes::{AppState, Auth};
use crate::store::{Page, SandboxFilter};

/// E2B's default sandbox timeout, seconds.
const DEFAULT_TIMEOUT_SEC: u32 = 300;
/// The most sandboxes one listing answers.
const MAX_LIST: u32 = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sandboxes", get(list_v1).post(create))
        .route("/v2/sandboxes", get(list_v2).post(create))
        .route("/sandboxes/{id}", get(get_one).delete(kill))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/refreshes", post(refresh))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/metrics", get(metrics))
        .route("/sandboxes/{id}/logs", get(logs))
        .route("/v2/sandboxes/{id}/logs", get(logs))
        .fallback(unsupported)
}

/// Any other call of E2B's API: not supported yet, said so.
async fn unsupported(method: axum::http::Method, uri: axum::http::Uri) -> E2bError {
    E2bError {
        status: StatusCode::NOT_IMPLEMENTED,
        message: format!(
            "{method} {} is not supported by Hearth's E2B compatibility yet",
            uri.path()
        ),
    }
}

/// An error in E2B's shape.
#[derive(Debug)]
pub struct E2bError {
    status: StatusCode,
    message: String,
}

impl E2bError {
    fn bad_request(message: impl Into<String>) -> E2bError {
        E2bError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<crate::core::error::Error> for E2bError {
    fn from(e: crate::core::error::Error) -> E2bError {
        let status = crate::error::status_of(e.kind);
        let message = match e.details.is_empty() {
            true => e.message,
            false => format!(
                "{}: {}",
                e.message,
                e.details
                    .iter()
                    .map(|d| format!("{} {}", d.field, d.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
        E2bError { status, message }
    }
}

impl From<crate::error::ApiError> for E2bError {
    fn from(e: crate::error::ApiError) -> E2bError {
        let mut message = e.message;
        for d in &e.details {
            message.push_str(&format!("; {}: {}", d.field, d.message));
        }
        E2bError {
            status: e.status,
            message,
        }
    }
}

impl IntoResponse for E2bError {
    fn into_response(self) -> Response {
        let body = json!({ "code": self.status.as_u16(), "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

type E2bResult<T> = Result<T, E2bError>;

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
}

/// The Hearth template an E2B template name means: `base` is the default.
fn template_of(name: Option<String>) -> String {
    match name.as_deref() {
        None | Some("" | "base") => "default".into(),
        Some(t) => t.to_string(),
    }
}

/// The sandbox as `POST /sandboxes` and `connect` answer it.
fn sandbox_view(state: &AppState, r: &SandboxRecord) -> Value {
    json!({
        "templateID": r.template_id,
        "alias": r.template_id,
        "sandboxID": to_e2b(&r.id),
        "clientID": "hearth",
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": access_token(state, &r.id),
        "domain": sandbox_domain(state),
    })
}

/// The domain port URLs are under: `get_host(port)` is
/// `<port>-<sandboxID>.<domain>`, served by the proxy (with its port when
/// not the scheme's default).
fn sandbox_domain(state: &AppState) -> String {
    let url = state.app_url("x");
    let host = url.split("://").nth(1).unwrap_or("");
    host.strip_prefix("x.apps.").unwrap_or(host).to_string()
}

fn e2b_state(s: SandboxState) -> &'static str {
    match s {
        SandboxState::Paused => "paused",
        _ => "running",
    }
}

/// The sandbox as listings and `GET /sandboxes/{id}` answer it.
fn listed_view(state: &AppState, r: &SandboxRecord, detail: bool) -> Value {
    let started = r.started_at.unwrap_or(r.created_at);
    let end = r
        .deadline_at
        .unwrap_or_else(|| started + i64::from(r.timeout_sec.max(DEFAULT_TIMEOUT_SEC)) * 1000);
    let metadata: BTreeMap<String, String> = r
        .metadata
        .iter()
        .map(|(k, v)| {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            (k.clone(), v)
        })
        .collect();
    let mut v = json!({
        "templateID": r.template_id,
        "alias": r.template_id,
        "sandboxID": to_e2b(&r.id),
        "clientID": "hearth",
        "startedAt": rfc3339(started),
        "endAt": rfc3339(end),
        "cpuCount": r.cpu_count,
        "memoryMB": r.memory_mb,
        "diskSizeMB": r.disk_size_mb,
        "metadata": metadata,
        "state": e2b_state(r.state),
        "envdVersion": ENVD_VERSION,
    });
    if detail {
        v["envdAccessToken"] = json!(access_token(state, &r.id));
        v["domain"] = json!(sandbox_domain(state));
    }
    v
}

async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    body: axum::body::Bytes,
) -> E2bResult<Response> {
    let b: NewSandbox = body_of(&body)?;
    let metadata = b.metadata.map(|m| {
        m.into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect::<serde_json::Map<_, _>>()
    });
    let create = CreateBody {
        template_id: Some(template_of(b.template_id)),
        timeout_sec: Some(i64::from(b.timeout.unwrap_or(DEFAULT_TIMEOUT_SEC))),
        // A timeout pauses instead of killing.
        persistent: b.auto_pause,
        env: b.env_vars,
        metadata,
        tags: Some(vec![super::PUBLIC_PORTS_TAG.to_string()]),
        network: b.allow_internet_access.map(|allow| NetworkBody {
            egress: Some(allow),
            policy: None,
        }),
        ..CreateBody::default()
    };
    let params = create.validate()?;
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
    Ok((StatusCode::CREATED, Json(sandbox_view(&state, &rec))).into_response())
}

/// A sandbox of the caller's by its E2B id.
async fn sandbox(state: &AppState, caller: &Caller, id: &str) -> E2bResult<SandboxRecord> {
    let rec = state.get_sandbox(caller, &from_e2b(id)).await?;
    if rec.state == SandboxState::Destroyed || rec.deployment_id.is_some() {
        return Err(E2bError {
            status: StatusCode::NOT_FOUND,
            message: format!("sandbox {id} not found"),
        });
    }
    Ok(rec)
}

async fn get_one(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> E2bResult<Json<Value>> {
    let rec = sandbox(&state, &caller, &id).await?;
    Ok(Json(listed_view(&state, &rec, true)))
}

async fn kill(
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

fn body_of<T: Default + serde::de::DeserializeOwned>(body: &[u8]) -> E2bResult<T> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| E2bError::bad_request(format!("invalid body: {e}")))
}

async fn set_timeout(
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

async fn refresh(
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

async fn pause(
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

async fn resume(
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
    Ok((StatusCode::CREATED, Json(sandbox_view(&state, &rec))).into_response())
}

async fn connect(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> E2bResult<Response> {
    let b: TimeoutBody = body_of(&body)?;
    let (status, rec) = wake(&state, &caller, &id, b.timeout).await?;
    Ok((status, Json(sandbox_view(&state, &rec))).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ListQuery {
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
async fn listing(
    state: &AppState,
    caller: &Caller,
    q: ListQuery,
    default_states: &[&str],
) -> E2bResult<(Vec<Value>, Option<String>)> {
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
    let matching: Vec<&SandboxRecord> = all
        .iter()
        .filter(|r| r.state != SandboxState::Destroyed && r.deployment_id.is_none())
        .filter(|r| states.iter().any(|s| s == e2b_state(r.state)))
        .filter(|r| {
            wanted
                .iter()
                .all(|(k, v)| r.metadata.get(k).and_then(Value::as_str) == Some(v.as_str()))
        })
        .collect();
    let limit = q.limit.unwrap_or(MAX_LIST).clamp(1, MAX_LIST) as usize;
    let skip: usize = q
        .next_token
        .as_deref()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let page: Vec<Value> = matching
        .iter()
        .skip(skip)
        .take(limit)
        .map(|r| listed_view(state, r, false))
        .collect();
    let next = (skip + page.len() < matching.len()).then(|| (skip + page.len()).to_string());
    Ok((page, next))
}

async fn list_v1(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<ListQuery>,
) -> E2bResult<Json<Value>> {
    let (list, _) = listing(&state, &caller, q, &["running"]).await?;
    Ok(Json(Value::Array(list)))
}

async fn list_v2(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<ListQuery>,
) -> E2bResult<Response> {
    let (list, next) = listing(&state, &caller, q, &["running", "paused"]).await?;
    let mut resp = Json(Value::Array(list)).into_response();
    if let Some(t) = next.and_then(|t| HeaderValue::from_str(&t).ok()) {
        resp.headers_mut().insert("x-next-token", t);
    }
    Ok(resp)
}

async fn metrics(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> E2bResult<Json<Value>> {
    sandbox(&state, &caller, &id).await?;
    // Per-sandbox CPU and memory samples are not collected.
    Ok(Json(json!([])))
}

async fn logs(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> E2bResult<Json<Value>> {
    sandbox(&state, &caller, &id).await?;
    Ok(Json(json!({ "logs": [], "logEntries": [] })))
}
