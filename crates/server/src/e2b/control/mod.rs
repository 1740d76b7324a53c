//! E2B's control API, mounted at `/e2b` (`E2B_API_URL`): the calls the
//! official SDKs make to create, find, time out, pause, resume and kill
//! sandboxes, answered in E2B's shapes (`sandboxID`, `templateID`,
//! `envdVersion`, `envdAccessToken`, `domain`, ...) and mapped onto
//! Hearth's core: [`sandboxes`], [`snapshots`] (and forks), [`network`].
//! Errors are E2B's `{code, message}` with the status Hearth's own API
//! would answer.

mod network;
mod sandboxes;
mod snapshots;

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{from_e2b, to_e2b, Token, ENVD_VERSION};
use crate::core::clock::rfc3339;
use crate::core::keys::Caller;
use crate::model::{SandboxRecord, SandboxState};
use crate::routes::AppState;

/// E2B's default sandbox timeout, seconds.
const DEFAULT_TIMEOUT_SEC: u32 = 300;
/// The most sandboxes one listing answers.
const MAX_LIST: u32 = 1000;

pub fn router() -> Router<AppState> {
    use sandboxes::*;
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
        .route("/sandboxes/{id}/network", put(network::update))
        .route("/sandboxes/{id}/snapshots", post(snapshots::create))
        .route("/sandboxes/{id}/fork", post(snapshots::fork))
        .route("/snapshots", get(snapshots::list))
        .route("/templates/{id}", delete(snapshots::delete))
        .fallback(unsupported)
}

/// Any other call of E2B's API: not supported yet, said so.
async fn unsupported(method: axum::http::Method, uri: axum::http::Uri) -> E2bError {
    E2bError::not_supported(&format!("{method} {}", uri.path()))
}

/// An error in E2B's shape.
#[derive(Debug)]
pub struct E2bError {
    status: StatusCode,
    message: String,
}

impl E2bError {
    fn not_supported(what: &str) -> E2bError {
        E2bError {
            status: StatusCode::NOT_IMPLEMENTED,
            message: format!("{what} is not supported by Hearth's E2B compatibility yet"),
        }
    }

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

/// The sandbox as `POST /sandboxes` and `connect` answer it.
fn sandbox_view(state: &AppState, caller: &Caller, r: &SandboxRecord) -> Value {
    json!({
        "templateID": r.template_id,
        "alias": r.template_id,
        "sandboxID": to_e2b(&r.id),
        "clientID": "hearth",
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": envd_token(state, caller, r),
        "trafficAccessToken": traffic_token(state, r),
        "domain": sandbox_domain(state),
    })
}

/// `status` with the sandbox in [`sandbox_view`]'s shape.
fn answer(status: StatusCode, state: &AppState, caller: &Caller, r: &SandboxRecord) -> Response {
    (status, Json(sandbox_view(state, caller, r))).into_response()
}

/// The sandbox's envd token, for a caller that may run commands and read
/// and write files (envd does all that with it): keys, and scoped tokens
/// that hold those scopes.
fn envd_token(state: &AppState, caller: &Caller, r: &SandboxRecord) -> Option<String> {
    use crate::routes::scopes::{EXEC, FILES_READ, FILES_WRITE};
    let may = [EXEC, FILES_READ, FILES_WRITE]
        .iter()
        .all(|s| caller.has_scope(s));
    may.then(|| Token::Envd.of(state, &r.id))
}

/// The token that opens the sandbox's ports, when they are not public.
fn traffic_token(state: &AppState, r: &SandboxRecord) -> Option<String> {
    let public = r.tags.iter().any(|t| t == super::PUBLIC_PORTS_TAG);
    (!public).then(|| Token::Traffic.of(state, &r.id))
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
fn listed_view(state: &AppState, r: &SandboxRecord, detail: Option<&Caller>) -> Value {
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
    if let Some(caller) = detail {
        v["envdAccessToken"] = json!(envd_token(state, caller, r));
        v["trafficAccessToken"] = json!(traffic_token(state, r));
        v["domain"] = json!(sandbox_domain(state));
    }
    v
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

/// One page of `items` from `next_token` (an offset), at most `limit`;
/// the next page's token in `x-next-token`.
fn paginate(items: Vec<Value>, limit: Option<u32>, next_token: Option<&str>) -> Response {
    let limit = limit.unwrap_or(MAX_LIST).clamp(1, MAX_LIST) as usize;
    let skip: usize = next_token.and_then(|t| t.parse().ok()).unwrap_or(0);
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(skip).take(limit).collect();
    let end = skip.saturating_add(page.len());
    let mut resp = Json(Value::Array(page)).into_response();
    if end < total {
        resp.headers_mut()
            .insert("x-next-token", axum::http::HeaderValue::from(end));
    }
    resp
}

fn body_of<T: Default + serde::de::DeserializeOwned>(body: &[u8]) -> E2bResult<T> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| E2bError::bad_request(format!("invalid body: {e}")))
}
