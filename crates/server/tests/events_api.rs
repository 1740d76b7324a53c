//! What events cost the server, through the API: an event's payload is
//! bounded whatever the request quoted.

mod common;

use common::TestServer;
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
