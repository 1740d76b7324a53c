//! Snapshots, restore and fork: `/sandboxes/{id}/snapshots[/{sid}]`,
//! `/sandboxes/{id}/restore/{sid}` (`{as_new: true}` makes a new sandbox)
//! and `/sandboxes/{id}/fork`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json;

use super::sandboxes::SandboxView;
use super::{data, ApiJson, AppState};
use crate::core::clock::rfc3339;
use crate::core::keys::Caller;
use crate::core::snapshots::ForkOverrides;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::model::SnapshotRecord;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sandboxes/{id}/snapshots", post(create).get(list))
        .route(
            "/sandboxes/{id}/snapshots/{sid}",
            get(get_one).delete(remove),
        )
        .route("/sandboxes/{id}/restore/{sid}", post(restore))
        .route("/sandboxes/{id}/fork", post(fork))
}

pub fn view(s: &SnapshotRecord) -> serde_json::Value {
    json!({
        "id": s.id,
        "sandbox_id": s.sandbox_id,
        "status": s.status.as_str(),
        "comment": s.comment,
        "size_bytes": s.size_bytes,
        "error": s.error,
        "created_at": rfc3339(s.created_at),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateBody {
    pub comment: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<impl IntoResponse> {
    if body.comment.as_ref().is_some_and(|c| c.len() > 1024) {
        return Err(ApiError::field("comment", "must be at most 1024 bytes"));
    }
    let snap = state.create_snapshot(&caller, &id, body.comment).await?;
    Ok((StatusCode::CREATED, data(view(&snap))))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let list = state.list_snapshots(&caller, &id).await?;
    Ok(data(list.iter().map(view).collect::<Vec<_>>()))
}

async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, sid)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    Ok(data(view(&state.get_snapshot(&caller, &id, &sid).await?)))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, sid)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let snap = state.delete_snapshot(&caller, &id, &sid).await?;
    Ok(data(json!({ "id": snap.id, "deleted": true })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RestoreBody {
    pub as_new: bool,
}

async fn restore(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, sid)): Path<(String, String)>,
    ApiJson(body): ApiJson<RestoreBody>,
) -> ApiResult<axum::response::Response> {
    let now = state.now_ms();
    if body.as_new {
        let rec = state
            .fork_sandbox(&caller, &id, Some(&sid), ForkOverrides::default())
            .await?;
        return Ok((StatusCode::CREATED, data(SandboxView::new(rec, now))).into_response());
    }
    let rec = state.restore_snapshot(&caller, &id, &sid).await?;
    Ok(data(SandboxView::new(rec, state.now_ms())).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ForkBody {
    pub snapshot_id: Option<String>,
    pub name: Option<String>,
    pub timeout_sec: Option<i64>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

async fn fork(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ForkBody>,
) -> ApiResult<impl IntoResponse> {
    let mut bad = Vec::new();
    if let Some(n) = &body.name {
        if n.is_empty() || n.len() > 128 || n.chars().any(char::is_control) {
            bad.push(FieldError::new("name", "must be 1-128 characters"));
        }
    }
    let timeout_sec = match body.timeout_sec {
        None => None,
        Some(t) if (1..=86400).contains(&t) => Some(t as u32),
        Some(_) => {
            bad.push(FieldError::new(
                "timeout_sec",
                "must be between 1 and 86400",
            ));
            None
        }
    };
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let rec = state
        .fork_sandbox(
            &caller,
            &id,
            body.snapshot_id.as_deref().filter(|s| !s.is_empty()),
            ForkOverrides {
                name: body.name,
                timeout_sec,
                metadata: body.metadata,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        data(SandboxView::new(rec, state.now_ms())),
    ))
}
