//! Deadlines and state changes in time: `timeout_sec` and
//! `idle_timeout_sec` on a controlled clock, concurrent pauses, and a VM
//! that dies under the server.

use super::*;

async fn wait_state(srv: &TestServer, id: &str, want: &str, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (_, v) = srv.call("GET", &format!("/sandboxes/{id}"), None).await;
        if v["data"]["state"] == want {
            return v["data"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never became {want}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deadlines on a controlled clock: nothing here waits for real seconds.
#[tokio::test]
async fn timeouts_and_idle_timeouts_fire() {
    use hearth_server::core::clock::{Clock, ManualClock};
    let clock = std::sync::Arc::new(ManualClock::new(1_700_000_000_000));
    let srv = TestServer::start_with_clock(clock.clone() as std::sync::Arc<dyn Clock>).await;
    let a = srv.create_sandbox(json!({"timeout_sec": 1})).await;
    let b = srv
        .create_sandbox(json!({"timeout_sec": 1, "persistent": true}))
        .await;
    let c = srv
        .create_sandbox(json!({"idle_timeout_sec": 2, "timeout_sec": 600}))
        .await;
    let d = srv
        .create_sandbox(json!({"timeout_sec": 1, "always_on": true}))
        .await;
    let e = srv
        .create_sandbox(json!({"idle_timeout_sec": 2, "timeout_sec": 600, "persistent": true}))
        .await;
    let id = |v: &Value| v["id"].as_str().expect("id").to_string();
    clock.advance(1_000);
    srv.core.poke_timers();
    wait_state(&srv, &id(&a), "destroyed", Duration::from_secs(5)).await;
    let paused = wait_state(&srv, &id(&b), "paused", Duration::from_secs(5)).await;
    assert!(paused["paused_at"].is_string());
    // Activity keeps c (and e) awake past the idle timeout: 4 x 0.7 s > 2 s.
    for _ in 0..4 {
        clock.advance(700);
        srv.core.poke_timers();
        for s in [&c, &e] {
            let (st, _) = srv
                .call(
                    "POST",
                    &format!("/sandboxes/{}/exec", id(s)),
                    Some(json!({"command": "true"})),
                )
                .await;
            assert_eq!(st, 200, "idle timeout fired despite activity");
        }
    }
    // Then idle: c, abandoned, is destroyed; e, persistent, is paused.
    clock.advance(2_000);
    srv.core.poke_timers();
    wait_state(&srv, &id(&c), "destroyed", Duration::from_secs(5)).await;
    wait_state(&srv, &id(&e), "paused", Duration::from_secs(5)).await;
    let (_, v) = srv
        .call("GET", &format!("/sandboxes/{}", id(&d)), None)
        .await;
    assert_eq!(v["data"]["state"], "running", "always_on never times out");
    // The audit log names the system as who destroyed a and paused b.
    let (_, v) = srv.call("GET", "/audit-log", None).await;
    let system: Vec<(String, String)> = v["data"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["actor_type"] == "system")
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_string(),
                e["resource_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(system.contains(&("sandbox.destroy".into(), id(&a))), "{v}");
    assert!(system.contains(&("sandbox.pause".into(), id(&b))), "{v}");
    assert!(system.contains(&("sandbox.destroy".into(), id(&c))), "{v}");
    assert!(system.contains(&("sandbox.pause".into(), id(&e))), "{v}");

    // Resume a paused sandbox: snapshot boot path, exec works again.
    let (st, v) = srv
        .call("POST", &format!("/sandboxes/{}/resume", id(&b)), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["boot_path"], "snapshot");
    let (_, v) = body(
        srv.client
            .get(srv.url(&format!("/api/v1/sandboxes/{}/events", id(&b))))
            .header("accept", "application/json")
            .send()
            .await
            .expect("events"),
    )
    .await;
    let kinds: Vec<&str> = v["data"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(kinds.contains(&"sandbox.timeout"), "{kinds:?}");
    assert!(kinds.contains(&"sandbox.paused"), "{kinds:?}");
    assert!(kinds.contains(&"sandbox.resumed"), "{kinds:?}");

    // Usage: b ran, was paused, runs again.
    let (st, v) = srv
        .call("GET", &format!("/sandboxes/{}/usage", id(&b)), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert!(
        v["data"]["runtime_sec"].as_f64().expect("runtime") >= 1.0,
        "{v}"
    );
    assert!(
        v["data"]["paused_disk_mb_ms"].as_u64().expect("disk") > 0,
        "{v}"
    );
    let (st, v) = srv.call("GET", "/usage?group_by=sandbox_id", None).await;
    assert_eq!(st, 200, "{v}");
    // a, b, c, d and e each have their usage.
    assert_eq!(v["data"]["groups"].as_array().expect("groups").len(), 5);
}

#[tokio::test]
async fn concurrent_pauses_are_serialized_and_dead_vms_become_errors() {
    let srv = TestServer::start().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("id").to_string();
    let pause = || {
        srv.client
            .post(srv.url(&format!("/api/v1/sandboxes/{id}/pause")))
            .send()
    };
    let (a, b) = tokio::join!(pause(), pause());
    let (sa, va) = body(a.expect("a")).await;
    let (sb, vb) = body(b.expect("b")).await;
    assert_eq!((sa, sb), (200, 200), "{va} {vb}");
    assert_eq!(va["data"]["state"], "paused");
    assert_eq!(vb["data"]["state"], "paused");
    let (st, v) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/exec"),
            Some(json!({"command": "true"})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].clone()),
        (409, json!("sandbox_not_running"))
    );
    let (st, v) = srv
        .call("POST", &format!("/sandboxes/{id}/resume"), None)
        .await;
    assert_eq!(st, 200, "{v}");

    // Kill the "VMM" (the fake VM is the agent process: the command's
    // parent): the sandbox goes to error within 2 s.
    let _ = srv
        .client
        .post(srv.url(&format!("/api/v1/sandboxes/{id}/exec")))
        .json(&json!({"command": "kill -9 $PPID"}))
        .send()
        .await;
    let errored = wait_state(&srv, &id, "error", Duration::from_secs(2)).await;
    assert!(
        errored["metadata"]["last_error"]
            .as_str()
            .expect("last_error")
            .contains("exited unexpectedly"),
        "{errored}"
    );
}

#[tokio::test]
async fn timers_follow_a_controlled_clock() {
    use hearth_server::core::clock::{Clock, ManualClock};
    let clock = std::sync::Arc::new(ManualClock::new(1_700_000_000_000));
    let srv = TestServer::start_with_clock(clock.clone() as std::sync::Arc<dyn Clock>).await;
    let a = srv.create_sandbox(json!({"timeout_sec": 3600})).await;
    let b = srv
        .create_sandbox(json!({"timeout_sec": 3600, "idle_timeout_sec": 600, "persistent": true}))
        .await;
    let id = |v: &Value| v["id"].as_str().expect("id").to_string();
    assert_eq!(a["timeout_remaining_ms"], 3_600_000, "exact at creation");
    // Ten minutes pass: b idles out, a has exactly 50 minutes left.
    clock.advance(600_000);
    srv.core.poke_timers();
    wait_state(&srv, &id(&b), "paused", Duration::from_secs(5)).await;
    let (_, v) = srv
        .call("GET", &format!("/sandboxes/{}", id(&a)), None)
        .await;
    assert_eq!(v["data"]["timeout_remaining_ms"], 3_000_000);
    assert_eq!(v["data"]["state"], "running");
    // The rest of the hour: a is destroyed.
    clock.advance(3_000_000);
    srv.core.poke_timers();
    wait_state(&srv, &id(&a), "destroyed", Duration::from_secs(5)).await;

    // Metrics saw all of it.
    let text = srv
        .client
        .get(srv.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("hearth_sandboxes{state=\"paused\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("hearth_sandboxes{state=\"destroyed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("hearth_boot_duration_seconds_count 2"),
        "{text}"
    );
    assert!(text.contains("route=\"/api/v1/sandboxes\""), "{text}");
}
