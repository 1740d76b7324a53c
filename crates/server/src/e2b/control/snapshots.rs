//! E2B's snapshots and forks on Hearth's: `POST /sandboxes/{id}/snapshots`
//! takes a snapshot (memory and disk), `GET /snapshots` lists them, a
//! create whose `templateID` is a snapshot's id starts a sandbox from it
//! (even after its sandbox was killed), `DELETE /templates/{id}` deletes
//! one, and `POST /sandboxes/{id}/fork` snapshots once and starts `count`
//! sandboxes from it, each answered on its own.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{body_of, from_e2b, paginate, sandbox, sandbox_view, E2bError, E2bResult, MAX_LIST};
use crate::core::keys::Caller;
use crate::core::snapshots::ForkOverrides;
use crate::model::{SandboxRecord, SnapshotRecord, SnapshotStatus};
use crate::routes::{AppState, Auth};

/// E2B's default lifetime of a fork, seconds.
const FORK_TIMEOUT_SEC: u32 = 15;
/// The most forks one call starts.
const MAX_FORKS: u32 = 20;

fn info(s: &SnapshotRecord) -> Value {
    json!({
        "snapshotID": s.id,
        "names": s.comment.iter().collect::<Vec<_>>(),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SnapshotBody {
    name: Option<String>,
    /// `false`: the filesystem only (not served: Hearth's snapshots keep
    /// memory too).
    memory: Option<bool>,
}

/// `POST /sandboxes/{id}/snapshots`.
pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> E2bResult<Response> {
    let b: SnapshotBody = body_of(&body)?;
    if b.memory == Some(false) {
        return Err(E2bError::not_supported("a filesystem-only snapshot"));
    }
    let rec = sandbox(&state, &caller, &id).await?;
    let snap = state.create_snapshot(&caller, &rec.id, b.name).await?;
    Ok((StatusCode::CREATED, Json(info(&snap))).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListQuery {
    #[serde(rename = "sandboxID")]
    sandbox_id: Option<String>,
    /// A snapshot's name or id.
    name: Option<String>,
    limit: Option<u32>,
    #[serde(rename = "nextToken")]
    next_token: Option<String>,
}

/// `GET /snapshots`: the caller's ready snapshots, of one sandbox or all.
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<ListQuery>,
) -> E2bResult<Response> {
    let all = match q.sandbox_id.as_deref() {
        Some(id) => state.list_snapshots(&caller, &from_e2b(id)).await?,
        None => state.tenant_snapshots(&caller, MAX_LIST).await?,
    };
    let wanted = |s: &SnapshotRecord| match q.name.as_deref() {
        Some(n) => s.id == n || s.comment.as_deref() == Some(n),
        None => true,
    };
    let matching: Vec<Value> = all
        .iter()
        .filter(|s| s.status == SnapshotStatus::Ready && wanted(s))
        .map(info)
        .collect();
    Ok(paginate(matching, q.limit, q.next_token.as_deref()))
}

/// `DELETE /templates/{id}`: E2B deletes snapshots as templates.
pub async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> E2bResult<StatusCode> {
    if !id.starts_with("snap_") {
        return Err(E2bError::not_supported("deleting a template"));
    }
    let snap = state.find_snapshot(&caller, &id).await?;
    state
        .delete_snapshot(&caller, &snap.sandbox_id, &snap.id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new sandbox from one of the caller's snapshots (create with a
/// snapshot's id as its template).
pub async fn start(
    state: &AppState,
    caller: &Caller,
    snapshot: &str,
    timeout: u32,
    metadata: Option<serde_json::Map<String, Value>>,
) -> E2bResult<SandboxRecord> {
    let snap = state.find_snapshot(caller, snapshot).await?;
    let overrides = ForkOverrides {
        name: None,
        timeout_sec: Some(timeout),
        metadata,
    };
    Ok(state
        .fork_sandbox(caller, &snap.sandbox_id, Some(&snap.id), overrides)
        .await?)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ForkBody {
    timeout: Option<u32>,
    count: Option<u32>,
}

/// `POST /sandboxes/{id}/fork`: one snapshot, `count` sandboxes from it;
/// each entry of the answer is a sandbox or the error that stopped it.
pub async fn fork(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> E2bResult<Response> {
    let b: ForkBody = body_of(&body)?;
    let count = b.count.unwrap_or(1);
    if !(1..=MAX_FORKS).contains(&count) {
        return Err(E2bError::bad_request(format!(
            "count must be between 1 and {MAX_FORKS}"
        )));
    }
    let rec = sandbox(&state, &caller, &id).await?;
    let snap = state
        .create_snapshot(&caller, &rec.id, Some("fork".into()))
        .await?;
    let mut results = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let overrides = ForkOverrides {
            name: None,
            timeout_sec: Some(b.timeout.unwrap_or(FORK_TIMEOUT_SEC).max(1)),
            metadata: None,
        };
        let forked = state
            .fork_sandbox(&caller, &rec.id, Some(&snap.id), overrides)
            .await;
        results.push(match forked {
            Ok(r) => json!({ "sandbox": sandbox_view(&state, &caller, &r) }),
            Err(e) => {
                let e = E2bError::from(e);
                json!({ "error": { "code": e.status.as_u16(), "message": e.message } })
            }
        });
    }
    Ok((StatusCode::CREATED, Json(results)).into_response())
}
