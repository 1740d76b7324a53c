//! What events cost the server, through the API: an event's payload is
//! bounded whatever the request quoted, old and excess events are pruned,
//! and a stream whose client left ends (its task with it) within about a
//! heartbeat, however quiet its source is.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestServer;
use hearth_server::core::clock::{Clock, ManualClock, SystemClock};
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

/// The active streams of every kind, from `/metrics`.
async fn active_streams(srv: &TestServer) -> i64 {
    let text = srv
        .client
        .get(srv.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|l| l.starts_with("hearth_sse_streams_active{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum()
}

/// Polls the active stream count until it is `want`, failing at `deadline`.
async fn wait_streams(srv: &TestServer, want: i64, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let n = active_streams(srv).await;
        if n == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{n} streams active after {within:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn streams_of_clients_that_left_end_within_a_heartbeat() {
    let heartbeat = Duration::from_millis(300);
    let srv = TestServer::start_full(
        |c| c.sse_heartbeat_ms = heartbeat.as_millis() as u64,
        Arc::new(SystemClock),
    )
    .await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("id").to_string();
    // A build that sleeps, with nothing in its log meanwhile.
    let work = tempfile::tempdir().expect("workdir");
    let spec = json!({
        "from": "minimal", "workdir": work.path().to_str().expect("utf8"),
        "cpu_count": 1, "memory_mb": 256, "disk_size_mb": 512,
        "steps": [{"run": "sleep 30"}],
    });
    let (st, v) = srv
        .call(
            "POST",
            "/sandbox-templates",
            Some(json!({"name": "quiet", "build_spec": spec})),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let build = v["data"]["build"]["id"]
        .as_str()
        .expect("build id")
        .to_string();
    // Nothing happens on this tenant while the streams are open.
    let paths = [
        "/api/v1/events/stream".to_string(),
        "/api/v1/events?types=nothing.*".to_string(),
        format!("/api/v1/sandboxes/{id}/events"),
        format!("/api/v1/sandbox-template-builds/{build}/logs/stream"),
    ];
    let mut open = Vec::new();
    for i in 0..50 {
        // One connection per stream, as separate clients would have.
        let client = srv.client_with(&srv.admin_key);
        let resp = client
            .get(srv.url(&paths[i % paths.len()]))
            .send()
            .await
            .expect("stream");
        assert_eq!(resp.status(), 200);
        open.push((client, resp));
    }
    let process = {
        let (st, v) = srv
            .call(
                "POST",
                &format!("/sandboxes/{id}/processes"),
                Some(json!({"command": "sleep 60"})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        v["data"]["pid"].as_u64().expect("pid")
    };
    for path in [
        format!("/api/v1/sandboxes/{id}/processes/{process}/stream"),
        format!(
            "/api/v1/sandboxes/{id}/files/watch?path={}",
            work.path().display()
        ),
    ] {
        let client = srv.client_with(&srv.admin_key);
        let resp = client.get(srv.url(&path)).send().await.expect("stream");
        assert_eq!(resp.status(), 200, "{path}");
        open.push((client, resp));
    }
    let client = srv.client_with(&srv.admin_key);
    let resp = client
        .post(srv.url(&format!("/api/v1/sandboxes/{id}/exec/stream")))
        .json(&json!({"command": "sleep 60"}))
        .send()
        .await
        .expect("exec stream");
    assert_eq!(resp.status(), 200);
    open.push((client, resp));
    assert_eq!(active_streams(&srv).await, 53);
    // The clients leave; every stream's task ends within about a
    // heartbeat (a bound of three leaves room for a loaded machine).
    drop(open);
    let took = wait_streams(&srv, 0, heartbeat * 3 + Duration::from_secs(1)).await;
    eprintln!("53 streams ended {took:?} after their clients left");
}
