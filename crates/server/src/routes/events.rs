//! Event streams: `/sandboxes/{id}/events` and tenant-wide
//! `/events/stream?types=glob,...`. A stream first replays the log after
//! `Last-Event-ID` (or `?after=`), then follows live events; a subscriber
//! that falls behind re-reads from the store, so nothing is skipped.

use axum::extract::{Path, State};
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
use crate::error::{ApiError, ApiResult};
use crate::model::EventRecord;
use crate::routes::{ApiQuery, Auth};

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
    #[param(value_type = u64, required = false)]
    pub after: Option<String>,
}

/// `?after=`: an event id, 0 (everything) when absent.
fn parse_after(after: Option<&str>) -> ApiResult<i64> {
    match after.map(str::trim) {
        None | Some("") => Ok(0),
        Some(s) => {
            s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::field("after", format!("must be an integer 0-{}", i64::MAX))
            })
        }
    }
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
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Response> {
    // Bad input is refused before the lookup, as everywhere.
    let (filter, after) = parse(&caller, Some(id.clone()), &headers, &q)?;
    state.get_sandbox(&caller, &id).await?;
    stream(state, &caller, filter, after, &headers).await
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
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Response> {
    let (filter, after) = parse(&caller, None, &headers, &q)?;
    stream(state, &caller, filter, after, &headers).await
}

/// The filter and the id to start after, from the query and
/// `Last-Event-ID` (which wins over `?after=`).
fn parse(
    caller: &Caller,
    sandbox: Option<String>,
    headers: &HeaderMap,
    q: &EventsQuery,
) -> ApiResult<(EventFilter, i64)> {
    let filter = EventFilter::new(caller.tenant_id.clone(), sandbox, q.types.as_deref())?;
    let after = match sse::last_event_id(headers) {
        Some(id) => id,
        None => parse_after(q.after.as_deref())?,
    };
    Ok((filter, after))
}

async fn stream(
    state: AppState,
    caller: &Caller,
    filter: EventFilter,
    after: i64,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    if wants_json(headers) {
        let list = state.event_history(&filter, after).await?;
        return Ok(data(list.iter().map(event_json).collect::<Vec<_>>()).into_response());
    }
    let mut events = state.follow_events(filter, after);
    let frames = super::exec::async_stream(&state, caller, "events", move |tx| async move {
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
