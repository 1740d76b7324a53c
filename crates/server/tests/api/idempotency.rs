//! Idempotent creates: concurrent and repeated keys, a reused key with
//! another body, and the 24-hour window on a controlled clock.

use super::*;

#[tokio::test]
async fn idempotency_replays_and_conflicts() {
    let srv = TestServer::start().await;
    let send = |key: &'static str, body: Value| {
        srv.client
            .post(srv.url("/api/v1/sandboxes"))
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let b = json!({"template_id": "minimal", "name": "idem"});
    // Concurrent duplicates create one sandbox.
    let (r1, r2) = tokio::join!(send("k1", b.clone()), send("k1", b.clone()));
    let (s1, v1) = body(r1.expect("1")).await;
    let (s2, v2) = body(r2.expect("2")).await;
    assert_eq!((s1, s2), (201, 201), "{v1} {v2}");
    assert_eq!(v1["data"]["id"], v2["data"]["id"]);
    let (_, list) = srv.call("GET", "/sandboxes", None).await;
    assert_eq!(list["page"]["total"], 1);
    // Same key, different body.
    let (st, v) = body(
        send("k1", json!({"template_id": "minimal"}))
            .await
            .expect("3"),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].clone()),
        (409, json!("idempotency_key_reused"))
    );
    // The key in the body works too.
    let b2 = json!({"template_id": "minimal", "idempotency_key": "k2"});
    let (_, a) = srv.call("POST", "/sandboxes", Some(b2.clone())).await;
    let (_, c) = srv.call("POST", "/sandboxes", Some(b2.clone())).await;
    assert_eq!(a["data"]["id"], c["data"]["id"]);
}

/// The documentation: "The platform deduplicates creates with the same key
/// within a 24-hour window": a retry just inside the window replays the
/// first create; one just past it creates anew (on a controlled clock).
#[tokio::test]
async fn idempotency_keys_last_24_hours() {
    use hearth_server::core::clock::{Clock, ManualClock};
    let clock = std::sync::Arc::new(ManualClock::new(1_700_000_000_000));
    let srv = TestServer::start_with_clock(clock.clone() as std::sync::Arc<dyn Clock>).await;
    async fn create(srv: &TestServer, key: &str) -> String {
        let body = json!({"template_id": "minimal", "idempotency_key": key, "always_on": true});
        let (st, v) = srv.call("POST", "/sandboxes", Some(body)).await;
        assert_eq!(st, 201, "{v}");
        v["data"]["id"].as_str().expect("id").to_string()
    }
    let first = create(&srv, "day").await;
    clock.advance(24 * 3600 * 1000 - 1_000);
    assert_eq!(
        create(&srv, "day").await,
        first,
        "a retry inside 24 h replays"
    );
    clock.advance(2_000);
    let later = create(&srv, "day").await;
    assert_ne!(later, first, "a key older than 24 h creates a new sandbox");
    // And the new create is what the key replays from now on.
    assert_eq!(create(&srv, "day").await, later);
}
