//! Event streams: `/sandboxes/{id}/events` and tenant-wide
//! `/events/stream?types=glob,...`. A stream first replays the log after
//! `Last-Event-ID` (or `?after=`), then follows live events; a subscriber
//! that falls behind re-reads from the store, so nothing is skipped.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{also_at, DataList, EventStream, LastEventId, SandboxId, E404, E422, EVENTS};
use super::{data, sse, AppState};
use crate::core::clock::rfc3339;
use crate::core::events::EventFilter;
use crate::core::keys::Caller;
use crate::error::ApiResult;
use crate::model::EventRecord;
use crate::routes::Auth;

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
    /// Comma-separated event type globs, such as `sandbox.*`: at most 32,
    /// each at most 128 bytes.
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
    Auth(caller): Auth,
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
    Auth(caller): Auth,
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
    let filter = EventFilter::new(caller.tenant_id, sandbox, q.types.as_deref())?;
    let after = sse::last_event_id(&headers).or(q.after).unwrap_or(0);
    if wants_json(&headers) {
        let list = state.event_history(&filter, after).await?;
        return Ok(data(list.iter().map(event_json).collect::<Vec<_>>()).into_response());
    }
    let mut events = state.follow_events(filter, after);
    let frames = super::exec::async_stream(&state, "events", move |tx| async move {
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
