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

use super::{data, sse, AppState};
use crate::core::clock::rfc3339;
use crate::core::events::EventFilter;
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
    let filter = EventFilter {
        tenant_id: caller.tenant_id,
        sandbox_id: sandbox,
        globs,
    };
    if wants_json(&headers) {
        let list = state.event_history(&filter, after).await?;
        return Ok(data(list.iter().map(event_json).collect::<Vec<_>>()).into_response());
    }
    let mut events = state.follow_events(filter, after);
    let frames = super::exec::async_stream(move |tx| async move {
        loop {
            let e = tokio::select! {
                e = events.next() => e,
                () = tx.closed() => return,
            };
            let Some(e) = e else { return };
            if tx
                .send(Ok(sse::frame(&e.kind, Some(e.seq), event_json(&e))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    Ok(sse::response(frames, sse::heartbeat_of(&state)).into_response())
}
