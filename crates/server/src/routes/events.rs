//! Event streams: `/sandboxes/{id}/events` and tenant-wide
//! `/events/stream?types=glob,...`. A stream first replays the log after
//! `Last-Event-ID` (or `?after=`), then follows live events; a subscriber
//! that falls behind re-reads from the store, so nothing is skipped.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{also_at, DataList, EventStream, LastEventId, SandboxId, E404, E422, EVENTS};
use super::{data, sse, AppState};
use crate::core::clock::rfc3339;
use crate::core::events::matches_types;
use crate::core::keys::Caller;
use crate::error::ApiResult;
use crate::model::EventRecord;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sandbox_events))
        .routes(routes!(tenant_events))
        .routes(also_at(
            routes!(tenant_events),
            "/events",
            "Events of the tenant",
        ))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Comma-separated event type globs, such as `sandbox.*`.
    #[param(value_type = String, required = false)]
    pub types: Option<String>,
    /// Send only events after this id (`Last-Event-ID` wins).
    #[param(value_type = i64, required = false)]
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

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/events",
    tag = EVENTS,
    summary = "Events of one sandbox",
    params(SandboxId, EventsQuery, LastEventId),
    responses(
        (status = 200, description = "Server-sent events; with `Accept: application/json` alone, the events so far as a list",
            content((EventStream = "text/event-stream"), (DataList = "application/json"))),
        E404,
        E422,
    ),
)]
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

#[utoipa::path(
    get,
    path = "/events/stream",
    tag = EVENTS,
    summary = "Events of the tenant",
    params(EventsQuery, LastEventId),
    responses(
        (status = 200, description = "Server-sent events; with `Accept: application/json` alone, the events so far as a list",
            content((EventStream = "text/event-stream"), (DataList = "application/json"))),
        E422,
    ),
)]
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
