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

/// Counts one stream's task in `hearth_sse_streams_active{kind}` from
/// creation until it is dropped.
#[derive(Debug)]
pub struct LiveStream {
    core: super::AppState,
    kind: &'static str,
}

impl LiveStream {
    pub fn new(core: &super::AppState, kind: &'static str) -> LiveStream {
        core.metrics.stream_started(kind);
        LiveStream {
            core: core.clone(),
            kind,
        }
    }
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.core.metrics.stream_ended(self.kind);
    }
}

/// Makes a connection whose client vanished (no FIN, no RST: a laptop
/// closed, a network gone) fail soon after the next heartbeat: data left
/// unacknowledged for `max(heartbeat, 20 s)` aborts it, the stream's body
/// is dropped and its task ends. Without it the kernel retransmits for
/// about 15 minutes while the task waits. A client that closes its socket
/// is noticed at once anyway (the server reads the connection's EOF).
pub fn abort_unacknowledged<S: std::os::fd::AsFd>(socket: &S, heartbeat: Duration) {
    let ms = heartbeat.max(Duration::from_secs(20)).as_millis();
    let ms = u32::try_from(ms).unwrap_or(u32::MAX);
    if let Err(e) =
        nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::TcpUserTimeout, &ms)
    {
        tracing::debug!(error = %e, "TCP_USER_TIMEOUT not set");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_vanished_client_times_out_after_a_heartbeat() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let get = || {
            nix::sys::socket::getsockopt(&server, nix::sys::socket::sockopt::TcpUserTimeout)
                .expect("getsockopt")
        };
        assert_eq!(get(), 0, "the kernel's default: none");
        abort_unacknowledged(&server, Duration::from_secs(15));
        assert_eq!(get(), 20_000);
        abort_unacknowledged(&server, Duration::from_secs(60));
        assert_eq!(get(), 60_000);
    }
}
