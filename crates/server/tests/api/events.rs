//! The event stream: resuming from `Last-Event-ID`, heartbeats, and
//! type filters a hostile caller might send.

use super::*;

#[tokio::test]
async fn event_stream_resumes_from_last_event_id() {
    let srv = TestServer::start().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("id").to_string();
    // Read the first frames of the live tenant-wide stream.
    let resp = srv
        .client
        .get(srv.url("/api/v1/events/stream?types=sandbox.*"))
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut seen = String::new();
    use futures_util::StreamExt;
    while !seen.contains("sandbox.running") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("frame in time")
            .expect("chunk")
            .expect("bytes");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let created_id: i64 = seen
        .lines()
        .skip_while(|l| *l != "event: sandbox.created")
        .find_map(|l| l.strip_prefix("id: "))
        .expect("id line")
        .parse()
        .expect("seq");
    drop(stream);
    // Resume after the created event: the next frame is running.
    let resp = srv
        .client
        .get(srv.url(&format!("/api/v1/sandboxes/{id}/events")))
        .header("last-event-id", created_id.to_string())
        .send()
        .await
        .expect("stream");
    let mut stream = resp.bytes_stream();
    let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("frame")
        .expect("chunk")
        .expect("bytes");
    let text = String::from_utf8_lossy(&chunk);
    assert!(text.starts_with("event: sandbox.running"), "{text}");
    assert!(text.contains("\"type\":\"sandbox.running\""), "{text}");
}

#[tokio::test]
async fn sse_streams_send_heartbeats() {
    let srv = TestServer::start_with(|c| c.sse_heartbeat_ms = 200).await;
    let resp = srv
        .client
        .get(srv.url("/api/v1/events/stream?types=nothing.*"))
        .send()
        .await
        .expect("stream");
    assert_eq!(
        resp.headers()["content-type"].to_str().expect("ct"),
        "text/event-stream"
    );
    use futures_util::StreamExt;
    let mut s = resp.bytes_stream();
    let chunk = tokio::time::timeout(Duration::from_secs(3), s.next())
        .await
        .expect("heartbeat in time")
        .expect("chunk")
        .expect("bytes");
    assert_eq!(String::from_utf8_lossy(&chunk), ": heartbeat\n\n");
}

/// One request of tens of thousands of `*` used to overflow the server's
/// stack (every tenant down); a glob of 16 stars took about a second per
/// stored event. Now the globs are bounded (422 naming the limit) and
/// matched without recursion.
#[tokio::test]
async fn hostile_event_type_globs_are_refused_or_cheap() {
    let srv = TestServer::start().await;
    srv.create_sandbox(json!({})).await;
    let stars = "*".repeat(50_000);
    let started = std::time::Instant::now();
    let (st, v) = srv
        .call("GET", &format!("/events?types={stars}"), None)
        .await;
    assert_eq!(
        (st, v["error"]["details"][0]["field"].clone()),
        (422, json!("types")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("128 bytes"),
        "{v}"
    );
    // The longest allowed glob, all stars but one byte that never matches,
    // against every stored event: answered at once.
    let worst = format!("{}x", "*".repeat(127));
    let (st, v) = body(
        srv.client
            .get(srv.url(&format!("/api/v1/events?types={worst}")))
            .header("accept", "application/json")
            .send()
            .await
            .expect("events"),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"], json!([]));
    let many = vec!["sandbox.*"; 33].join(",");
    let (st, v) = srv
        .call("GET", &format!("/events?types={many}"), None)
        .await;
    assert_eq!(st, 422, "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The server is still up for everyone.
    let (st, _) = srv.call("GET", "/sandboxes", None).await;
    assert_eq!(st, 200);
}
