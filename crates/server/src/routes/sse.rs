//! Server-sent events as API.md frames them: `event: <type>`, `id: <n>`,
//! `data: <json with "type">`, and a `: heartbeat` comment on idle streams.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, KeepAliveStream, Sse};
use futures_util::Stream;

/// One SSE frame; `data` gets `"type": kind` added when it is an object.
pub fn frame(kind: &str, id: Option<i64>, mut data: serde_json::Value) -> Event {
    if let Some(obj) = data.as_object_mut() {
        obj.entry("type")
            .or_insert_with(|| serde_json::Value::String(kind.to_string()));
    }
    let mut ev = Event::default().event(kind).data(data.to_string());
    if let Some(id) = id {
        ev = ev.id(id.to_string());
    }
    ev
}

/// Wraps a stream of frames with heartbeats every `heartbeat`.
pub fn response<S>(stream: S, heartbeat: Duration) -> Sse<KeepAliveStream<S>>
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    Sse::new(stream).keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat"))
}

/// The `Last-Event-ID` header as a sequence number.
pub fn last_event_id(headers: &http::HeaderMap) -> Option<i64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

pub fn heartbeat_of(core: &crate::core::Core) -> Duration {
    Duration::from_millis(core.config.sse_heartbeat_ms)
}
