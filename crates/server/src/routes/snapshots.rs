//! Snapshots, restore and fork: `/sandboxes/{id}/snapshots[/{sid}]`,
//! `/sandboxes/{id}/restore/{sid}` (`{as_new: true}` makes a new sandbox)
//! and `/sandboxes/{id}/fork`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Data, DataList, E404And422, SandboxData, SandboxId, SnapshotId, E404, SNAP};
use super::sandboxes::SandboxView;
use super::{data, ApiJson, AppState};
use crate::core::clock::rfc3339;
use crate::core::snapshots::ForkOverrides;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::model::SnapshotRecord;
use crate::routes::Auth;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one, remove))
        .routes(routes!(restore))
        .routes(routes!(fork))
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

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = SnapshotCreateBody)]
#[serde(default)]
pub struct CreateBody {
    /// At most 1024 bytes.
    #[schema(max_length = 1024)]
    pub comment: Option<String>,
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/snapshots",
    tag = SNAP,
    summary = "Snapshot a running sandbox (it keeps running)",
    params(SandboxId),
    request_body = CreateBody,
    responses((status = 201, description = "Created", body = Data), E404And422),
)]
async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<impl IntoResponse> {
    if body.comment.as_ref().is_some_and(|c| c.len() > 1024) {
        return Err(ApiError::field("comment", "must be at most 1024 bytes"));
    }
    let snap = state.create_snapshot(&caller, &id, body.comment).await?;
    Ok((StatusCode::CREATED, data(view(&snap))))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/snapshots",
    tag = SNAP,
    summary = "List a sandbox's snapshots",
    params(SandboxId),
    responses((status = 200, description = "OK", body = DataList), E404),
)]
async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let list = state.list_snapshots(&caller, &id).await?;
    Ok(data(list.iter().map(view).collect::<Vec<_>>()))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/snapshots/{sid}",
    tag = SNAP,
    summary = "Get a snapshot",
    params(SandboxId, SnapshotId),
    responses((status = 200, description = "OK", body = Data), E404),
)]
async fn get_one(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, sid)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    Ok(data(view(&state.get_snapshot(&caller, &id, &sid).await?)))
}

#[utoipa::path(
    delete,
    path = "/sandboxes/{id}/snapshots/{sid}",
    tag = SNAP,
    summary = "Delete a snapshot",
    params(SandboxId, SnapshotId),
    responses((status = 200, description = "OK", body = Data), E404),
)]
async fn remove(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, sid)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let snap = state.delete_snapshot(&caller, &id, &sid).await?;
    Ok(data(json!({ "id": snap.id, "deleted": true })))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct RestoreBody {
    /// Make a new sandbox from the snapshot (201) instead of rolling this
    /// one back.
    pub as_new: bool,
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/restore/{sid}",
    tag = SNAP,
    summary = "Roll the sandbox back to a snapshot (or, with as_new, make a new sandbox)",
    params(SandboxId, SnapshotId),
    request_body = RestoreBody,
    responses(
        (status = 200, description = "OK: the sandbox, rolled back", body = SandboxData),
        (status = 201, description = "Created (`as_new`): the new sandbox", body = SandboxData),
        E404And422,
    ),
)]
async fn restore(
    State(state): State<AppState>,
    Auth(caller): Auth,
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

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct ForkBody {
    /// Fork from this snapshot; absent: a snapshot of the running source
    /// is taken first.
    pub snapshot_id: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: Option<String>,
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_sec: Option<i64>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/fork",
    tag = SNAP,
    summary = "A new sandbox from a snapshot of this one",
    params(SandboxId),
    request_body = ForkBody,
    responses((status = 201, description = "Created", body = SandboxData), E404And422),
)]
async fn fork(
    State(state): State<AppState>,
    Auth(caller): Auth,
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
