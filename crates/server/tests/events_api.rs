//! What events cost the server, through the API: an event's payload is
//! bounded whatever the request quoted, and old and excess events are
//! pruned.

mod common;

use std::sync::Arc;

use common::TestServer;
use hearth_server::core::clock::{Clock, ManualClock};
use serde_json::{json, Value};

/// The events of `path` (`/events`, `/sandboxes/{id}/events`) as a list.
async fn events(srv: &TestServer, path: &str) -> Vec<Value> {
    let resp = srv
        .client
        .get(srv.url(&format!("/api/v1{path}")))
        .header("accept", "application/json")
        .send()
        .await
        .expect("events");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    v["data"].as_array().expect("list").clone()
}

#[tokio::test]
async fn an_event_quotes_at_most_a_few_kib_of_a_command() {
    let srv = TestServer::start().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("id");
    // 100 KB fits in one argument of `sh -c`; the event used to store it
    // whole (and a 64 MiB body's command as well).
    let command = format!("true {}", "x".repeat(100_000));
    for path in ["exec", "exec/stream"] {
        let resp = srv
            .client
            .post(srv.url(&format!("/api/v1/sandboxes/{id}/{path}")))
            .json(&json!({ "command": command }))
            .send()
            .await
            .expect("exec");
        assert_eq!(resp.status(), 200, "{path}");
        resp.bytes().await.expect("answer");
    }
    let started: Vec<Value> = events(&srv, &format!("/sandboxes/{id}/events"))
        .await
        .into_iter()
        .filter(|e| e["type"] == "sandbox.exec.started")
        .collect();
    assert_eq!(started.len(), 2);
    for e in &started {
        let quoted = e["data"]["command"].as_str().expect("command");
        assert!(quoted.starts_with("true xxx"), "{quoted}");
        assert!(quoted.ends_with('…'), "{quoted}");
        assert!(quoted.len() <= 4096 + 3, "{}", quoted.len());
        assert_eq!(e["data"]["truncated"], true, "{e}");
        let whole = serde_json::to_vec(&e["data"]).expect("json").len();
        assert!(whole <= 16 * 1024, "{whole}");
    }
    // A short command is quoted whole, with no mark.
    let (st, _) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/exec"),
            Some(json!({"command": "echo short"})),
        )
        .await;
    assert_eq!(st, 200);
    let last = events(
        &srv,
        &format!("/sandboxes/{id}/events?types=sandbox.exec.started"),
    )
    .await
    .pop()
    .expect("event");
    assert_eq!(last["data"], json!({"command": "echo short"}));
}

#[tokio::test]
async fn old_events_and_events_past_the_limits_are_pruned() {
    let day = 24 * 3600 * 1000;
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let srv = TestServer::start_full(
        |c| {
            c.events.retention_days = 7;
            c.events.max_rows_per_tenant = 6;
            c.events.max_rows = 7;
        },
        clock.clone() as Arc<dyn Clock>,
    )
    .await;
    let exec = |id: String| {
        let srv = &srv;
        async move {
            let (st, v) = srv
                .call(
                    "POST",
                    &format!("/sandboxes/{id}/exec"),
                    Some(json!({"command": "true"})),
                )
                .await;
            assert_eq!(st, 200, "{v}");
        }
    };
    // Day 0: a sandbox (created, running) and an exec (started, completed).
    // Always on: no deadline of its own fires while the clock jumps.
    let old = srv.create_sandbox(json!({"always_on": true})).await;
    let old_id = old["id"].as_str().expect("id").to_string();
    exec(old_id.clone()).await;
    assert_eq!(events(&srv, "/events").await.len(), 4);
    // Eight days later, two execs: the day-0 events are past retention.
    clock.advance(8 * day);
    exec(old_id.clone()).await;
    exec(old_id.clone()).await;
    assert_eq!(srv.core.prune_events().await, 4);
    let left = events(&srv, "/events").await;
    assert_eq!(left.len(), 4);
    assert!(left.iter().all(|e| e["type"] != "sandbox.created"));
    // More than six of the tenant's: its oldest go.
    exec(old_id.clone()).await;
    exec(old_id.clone()).await;
    assert_eq!(srv.core.prune_events().await, 2);
    let left = events(&srv, "/events").await;
    assert_eq!(left.len(), 6);
    // Another tenant's two events count towards the total of seven, not
    // against this tenant's six: the oldest go, whoever's they are.
    let other = srv.stranger().await;
    let (st, v) = srv
        .call_as(
            &other,
            "POST",
            "/sandboxes",
            Some(json!({"template_id": "minimal", "always_on": true})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let seq_of_first_kept = left[1]["seq"].as_i64().expect("seq");
    assert_eq!(srv.core.prune_events().await, 1);
    let left = events(&srv, "/events").await;
    assert_eq!(left.len(), 5);
    assert_eq!(left[0]["seq"].as_i64(), Some(seq_of_first_kept));
    // Resuming from a pruned id resumes at the oldest kept event.
    let resumed = events(&srv, "/events?after=1").await;
    assert_eq!(
        resumed.first().map(|e| e["seq"].clone()),
        Some(json!(seq_of_first_kept))
    );
}
