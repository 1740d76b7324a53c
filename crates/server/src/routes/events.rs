//! Event streams: `/sandboxes/{id}/events` and tenant-wide
//! `/events/stream?types=glob,...`. A stream first replays the log after
//! `Last-Event-ID` (or `?after=`), then follows live events; a subscriber
//! that falls behind re-reads from the store, so nothing is skipped.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::{data, sse, AppState};
use crate::core::clock::rfc3339;
use crate::core::events::matches_types;
use crate::core::keys::Caller;
use crate::error::ApiResult;
use crate::model::EventRecord;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sandboxes/{id}/events", get(sandbox_events))
        .route("/events/stream", get(tenant_events))
        .route("/events", get(tenant_events))
}

#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    pub types: Option<String>,
    pub after: Option<i64>,
}

/// The wire form: `{type, id, sandbox_id, ts, data, seq}`.
pub fn event_json(e: &EventRecord) -> serde_json::Value {
    serde_json::json!({
        "type": e.kind,
        "id": e.id,
        "seq": e.seq,
        "sandbox_id": e.sandbox_id,
        "ts": rfc3339(e.ts),
        "data": e.data,
    })
}

fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("application/json") && !accept.contains("text/event-stream")
}

async fn sandbox_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Response> {
    state.get_sandbox(&caller, &id).await?;
    stream(state, caller, Some(id), headers, q).await
}

async fn tenant_events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Response> {
    stream(state, caller, None, headers, q).await
}

const PAGE: u32 = 500;

async fn stream(
    state: AppState,
    caller: Caller,
    sandbox: Option<String>,
    headers: HeaderMap,
    q: EventsQuery,
) -> ApiResult<Response> {
    let globs: Vec<String> = q
        .types
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let after = sse::last_event_id(&headers).or(q.after).unwrap_or(0);
    if wants_json(&headers) {
        let list = state
            .store
            .events_after(&caller.tenant_id, sandbox.as_deref(), after, PAGE)
            .await?;
        let list: Vec<_> = list
            .iter()
            .filter(|e| matches_types(&globs, &e.kind))
            .map(event_json)
            .collect();
        return Ok(data(list).into_response());
    }
    let mut live = state.events.subscribe();
    let core = state.clone();
    let frames = super::exec::async_stream(move |tx| async move {
        let mut last = after;
        let send = |e: &EventRecord| sse::frame(&e.kind, Some(e.seq), event_json(e));
        // Replay, then follow; after a lag, replay again from `last`.
        'replay: loop {
            loop {
                let batch = match core
                    .store
                    .events_after(&caller.tenant_id, sandbox.as_deref(), last, PAGE)
                    .await
                {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "event replay failed");
                        return;
                    }
                };
                let n = batch.len();
                for e in &batch {
                    last = e.seq;
                    if matches_types(&globs, &e.kind) && tx.send(Ok(send(e))).await.is_err() {
                        return;
                    }
                }
                if n < PAGE as usize {
                    break;
                }
            }
            loop {
                match live.recv().await {
                    Ok(e) => {
                        if e.seq <= last
                            || e.tenant_id != caller.tenant_id
                            || sandbox
                                .as_deref()
                                .is_some_and(|s| e.sandbox_id.as_deref() != Some(s))
                        {
                            continue;
                        }
                        last = e.seq;
                        if matches_types(&globs, &e.kind) && tx.send(Ok(send(&e))).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => continue 'replay,
                    Err(RecvError::Closed) => return,
                }
            }
        }
    });
    Ok(sse::response(frames, sse::heartbeat_of(&state)).into_response())
}
