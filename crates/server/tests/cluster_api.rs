//! Any node answers for any sandbox (fake VMM, both stores): two API
//! servers on one store, the sandbox on one, every kind of request through
//! the other (REST, SSE, a terminal's WebSocket, a preview through its
//! proxy, E2B's API), forwarded with the caller's credential. Attacks: a
//! forged forwarding header buys nothing, a stranger's key is refused by
//! the owner, a revocation on one node holds on the other.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::previews::{client_for, host_of, preview, start_app};
use common::{wait_until, TestServer};
use futures_util::{SinkExt, StreamExt};
use hearth_server::ServerConfig;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn fast(c: &mut ServerConfig) {
    c.cluster.heartbeat_ms = 100;
    c.cluster.lost_after_ms = 5_000;
}

/// A node labelled `region=<name>`, so that a create can ask for it.
fn in_region(name: &'static str) -> impl FnOnce(&mut ServerConfig) {
    move |c| {
        fast(c);
        c.cluster.labels.insert("region".into(), name.into());
    }
}

/// Two nodes on one store and a sandbox that B runs.
async fn two_nodes() -> (TestServer, TestServer, String) {
    let a = TestServer::start_with(fast).await;
    let b = TestServer::join(&a, in_region("b")).await;
    let sbx = b.create_sandbox(json!({"region": "b"})).await;
    let id = sbx["id"].as_str().expect("id").to_string();
    assert_eq!(sbx["node_id"].as_str(), Some(b.core.node_id()));
    assert!(a.core.handle(&id).is_none(), "A must not run it");
    (a, b, id)
}

async fn audit_of(srv: &TestServer, id: &str, kind: &str) -> Vec<Value> {
    let (st, v) = srv
        .call(
            "GET",
            &format!("/audit-log?resource_id={id}&type={kind}"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    v["data"].as_array().expect("entries").clone()
}

#[tokio::test]
async fn any_node_answers_for_a_sandbox_another_runs() {
    let (a, b, id) = two_nodes().await;

    // REST: exec and files through A run on B.
    let (st, v) = a
        .call(
            "POST",
            &format!("/sandboxes/{id}/exec"),
            Some(json!({"command": "echo forwarded; exit 4"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["data"]["stdout"].clone(), v["data"]["exit_code"].clone()),
        (json!("forwarded\n"), json!(4))
    );
    // (The fake VM's agent runs on this host: a scratch directory.)
    let scratch = tempfile::tempdir().expect("scratch");
    let file = scratch.path().join("via-a.txt").display().to_string();
    let (st, v) = a
        .call(
            "POST",
            &format!("/sandboxes/{id}/files"),
            Some(json!({"path": file, "content": B64.encode("written through A")})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = b
        .call(
            "GET",
            &format!("/sandboxes/{id}/files/read?path={file}"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let content = B64
        .decode(v["data"]["content"].as_str().expect("content"))
        .expect("base64");
    assert_eq!(content, b"written through A");

    // The owner audits the request once, the forwarder not at all.
    let execs = audit_of(&b, &id, "sandbox.exec").await;
    assert_eq!(execs.len(), 1, "{execs:?}");
    assert_eq!(execs[0]["ip"], "127.0.0.1");

    // SSE through A, streamed.
    let text = a
        .client
        .post(a.url(&format!("/api/v1/sandboxes/{id}/exec/stream")))
        .json(&json!({"command": "echo one; sleep 0.2; echo two"}))
        .send()
        .await
        .expect("stream")
        .text()
        .await
        .expect("text");
    assert!(text.contains("\"line\":\"one"), "{text}");
    assert!(text.contains("\"line\":\"two"), "{text}");
    assert!(text.contains("\"exit_code\":0"), "{text}");

    // A terminal's WebSocket through A.
    let (_, mut ws) = a.terminal_ws(&id, &a.admin_key).await;
    ws.send(Message::binary(b"echo $((6*7))-over-ws\n".to_vec()))
        .await
        .expect("send");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = ws.next().await {
            if let Message::Binary(b) = msg.expect("frame") {
                out.push_str(&String::from_utf8_lossy(&b));
                if out.contains("42-over-ws") {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no terminal output through A: {out:?}"));
    drop(ws);

    // A preview made through A, fetched through A's proxy: B's proxy
    // serves it, and the app sees the client as it would with one node.
    let (port, seen) = start_app().await;
    let p = preview(&a, &id, port, "public").await;
    let url = p["url"].as_str().expect("url").to_string();
    let host = host_of(&url);
    let resp = client_for(&host, a.preview_addr)
        .post(format!("http://{host}:{}/hello", a.preview_addr.port()))
        .header("x-forwarded-for", "203.0.113.9")
        .body(vec![1u8; 70_000])
        .send()
        .await
        .expect("preview through A");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.expect("body"),
        "app saw POST /hello with 70000 body bytes"
    );
    {
        let seen = seen.lock().expect("seen");
        let h: std::collections::HashMap<_, _> = seen[0].1.iter().cloned().collect();
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert!(
            !h.contains_key("hearth-forwarded-by"),
            "the internal header reached the app: {h:?}"
        );
    }

    // E2B's API through A: pause runs on B; Hearth's resume through A too.
    let e2b_id = id.replace('_', "-");
    let resp = a
        .client
        .post(a.url(&format!("/e2b/sandboxes/{e2b_id}/pause")))
        .send()
        .await
        .expect("e2b pause");
    assert_eq!(resp.status(), 204);
    assert_eq!(
        b.core.handle(&id).map(|h| h.record().state.as_str()),
        Some("paused")
    );
    let (st, v) = a
        .call("POST", &format!("/sandboxes/{id}/resume"), None)
        .await;
    assert_eq!((st, v["data"]["state"].clone()), (200, json!("running")));

    // The tenant's event stream on A carries what B emitted.
    let resp = a
        .client
        .get(a.url("/api/v1/events/stream?types=sandbox.resumed"))
        .send()
        .await
        .expect("events");
    let mut body = resp.bytes_stream();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        let mut text = String::new();
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
            if text.contains(&id) {
                return text;
            }
        }
        text
    })
    .await
    .expect("B's event on A's stream");
    assert!(got.contains("sandbox.resumed"), "{got}");

    // Destroy through A; A holds nothing of it.
    let (st, v) = a.call("DELETE", &format!("/sandboxes/{id}"), None).await;
    assert_eq!((st, v["data"]["state"].clone()), (200, json!("destroyed")));
    assert!(b.core.handle(&id).is_none());
}

#[tokio::test]
async fn forwarding_cannot_be_forged_or_used_across_tenants() {
    let (a, b, id) = two_nodes().await;
    let exec = format!("/api/v1/sandboxes/{id}/exec");
    let now = chrono::Utc::now().timestamp_millis();

    // A forged header on a request to A: A does not take it for a node's
    // and forwards as usual (taken at its word, A would answer for a
    // sandbox it does not run).
    let forged = format!("{} {now} 198.51.100.7 AAAA", b.core.node_id());
    let resp = a
        .client
        .post(a.url(&exec))
        .header("hearth-forwarded-by", &forged)
        .json(&json!({"command": "echo still-forwarded"}))
        .send()
        .await
        .expect("exec");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["data"]["stdout"], "still-forwarded\n");
    // Straight to the owner, it buys no client address either.
    let resp = b
        .client
        .post(b.url(&exec))
        .header("hearth-forwarded-by", &forged)
        .header("x-forwarded-for", "198.51.100.7")
        .json(&json!({"command": "true"}))
        .send()
        .await
        .expect("exec");
    assert_eq!(resp.status(), 200);
    let ips: Vec<Value> = audit_of(&b, &id, "sandbox.exec")
        .await
        .iter()
        .map(|e| e["ip"].clone())
        .collect();
    assert_eq!(ips, vec![json!("127.0.0.1"); 2], "{ips:?}");

    // A stranger's key through A: the owner refuses it (404), a bad key
    // never leaves A (401).
    let stranger = a.stranger().await;
    let (st, v) = a
        .call_as(
            &stranger,
            "POST",
            &format!("/sandboxes/{id}/exec"),
            Some(json!({"command": "id"})),
        )
        .await;
    assert_eq!(st, 404, "{v}");
    let resp = reqwest::Client::new()
        .post(a.url(&exec))
        .bearer_auth("hk_not_a_key")
        .json(&json!({"command": "id"}))
        .send()
        .await
        .expect("exec");
    assert_eq!(resp.status(), 401);

    // A key revoked on A stops working on B within a heartbeat or two,
    // though B had it cached.
    let (key_id, key) = a.tenant_key("short-lived").await;
    let mine = reqwest::Client::new();
    let get = |srv: &TestServer| {
        mine.get(srv.url("/api/v1/sandboxes"))
            .bearer_auth(&key)
            .send()
    };
    assert_eq!(get(&b).await.expect("get").status(), 200);
    let (st, v) = a.call("DELETE", &format!("/api-keys/{key_id}"), None).await;
    assert_eq!(st, 200, "{v}");
    wait_until(Duration::from_secs(5), "revocation reaches B", || async {
        (get(&b).await.expect("get").status() == 401).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_node_that_cannot_be_reached_is_named() {
    let a = TestServer::start_with(fast).await;
    // C advertises an address where nothing listens.
    let c = TestServer::join(&a, |c| {
        in_region("c")(c);
        c.cluster.node_url = Some("http://127.0.0.1:9".into());
    })
    .await;
    let sbx = c.create_sandbox(json!({"region": "c"})).await;
    let id = sbx["id"].as_str().expect("id");
    let (st, v) = a
        .call(
            "POST",
            &format!("/sandboxes/{id}/exec"),
            Some(json!({"command": "true"})),
        )
        .await;
    assert_eq!(st, 502, "{v}");
    assert_eq!(v["error"]["code"], "node_unreachable");
    let msg = v["error"]["message"].as_str().expect("message");
    assert!(msg.contains(c.core.node_id()), "{msg}");
    // The sandbox's record is answered from the store meanwhile; reads of
    // the guest are not.
    let (st, v) = a.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(
        (st, v["data"]["state"].clone()),
        (200, json!("running")),
        "{v}"
    );
    let (st, v) = a
        .call("GET", &format!("/sandboxes/{id}/files?path=/tmp"), None)
        .await;
    assert_eq!(
        (st, v["error"]["code"].clone()),
        (502, json!("node_unreachable")),
        "{v}"
    );
}

/// Small nodes with no overcommit, so that placement shows.
fn small(c: &mut ServerConfig) {
    fast(c);
    c.cluster.vcpus = 4;
    c.cluster.memory_mb = 8_192;
    c.cluster.disk_mb = 100_000;
    c.cluster.cpu_overcommit_percent = 100;
    c.cluster.memory_overcommit_percent = 100;
    c.cluster.disk_overcommit_percent = 100;
}

async fn create_via(srv: &TestServer, body: Value) -> (u16, Value) {
    let mut body = body;
    body["template_id"] = json!("minimal");
    body["disk_size_mb"] = json!(1024);
    srv.call("POST", "/sandboxes", Some(body)).await
}

#[tokio::test]
async fn creates_spread_across_nodes_and_never_overcommit_one() {
    let a = TestServer::start_with(small).await;
    let b = TestServer::join(&a, small).await;
    let c = TestServer::join(&a, |cfg| {
        small(cfg);
        cfg.cluster.labels.insert("region".into(), "eu-test".into());
    })
    .await;
    let ids = [a.core.node_id(), b.core.node_id(), c.core.node_id()];

    // Six creates through A: two on each node.
    let mut on = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..6 {
        let (st, v) = create_via(&a, json!({"cpu_count": 1, "memory_mb": 512})).await;
        assert_eq!(st, 201, "{v}");
        *on.entry(v["data"]["node_id"].as_str().expect("node").into())
            .or_default() += 1;
    }
    assert_eq!(
        on.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{on:?}"
    );
    assert!(ids.iter().all(|id| on.contains_key(*id)), "{on:?}");

    // The region asked for wins while it has room.
    let (st, v) = create_via(
        &a,
        json!({"cpu_count": 1, "memory_mb": 512, "region": "eu-test"}),
    )
    .await;
    assert_eq!(
        (st, v["data"]["node_id"].as_str()),
        (201, Some(ids[2])),
        "{v}"
    );

    // A placed create is idempotent where it came in: the replay names the
    // same sandbox, and no second one is made.
    let create = |key: &'static str| {
        a.client
            .post(a.url("/api/v1/sandboxes"))
            .header("idempotency-key", key)
            .json(&json!({"template_id": "minimal", "cpu_count": 1, "memory_mb": 512, "disk_size_mb": 1024}))
            .send()
    };
    let first: Value = create("place-once")
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let again = create("place-once").await.expect("create");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.expect("json");
    assert_eq!(first["data"]["id"], again["data"]["id"]);

    // 8 vCPUs used of 12: of eight concurrent 1-vCPU creates, at most four
    // fit (fewer when some are refused in the instant a sandbox just made
    // counts by both its record and its promise); then the rest of the
    // room fills one create at a time, to exactly 12: no promise is left
    // holding room.
    let (_, before) = a.call("GET", "/nodes", None).await;
    let racers = (0..8).map(|_| create_via(&b, json!({"cpu_count": 1, "memory_mb": 512})));
    let results = futures_util::future::join_all(racers).await;
    let mut made = results.iter().filter(|(st, _)| *st == 201).count();
    let refused: Vec<&Value> = results
        .iter()
        .filter(|(st, _)| *st == 503)
        .map(|(_, v)| v)
        .collect();
    assert!(
        made <= 4 && made + refused.len() == 8,
        "nodes before: {before}\n{results:?}"
    );
    loop {
        let (st, v) = create_via(&a, json!({"cpu_count": 1, "memory_mb": 512})).await;
        match st {
            201 => made += 1,
            503 => break,
            _ => panic!("{st} {v}"),
        }
    }
    assert_eq!(made, 4, "the racers and the rest filled the room exactly");
    let e = &refused[0]["error"];
    assert_eq!(e["code"], "no_capacity");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("1 vCPUs")),
        "{e}"
    );
    let (_, v) = a.call("GET", "/nodes", None).await;
    for n in v["data"].as_array().expect("nodes") {
        assert_eq!(n["load"]["vcpus"], 4, "a node overcommitted: {n}");
    }

    // A drained node takes nothing: with B drained and a sandbox gone
    // from it, the next create still cannot land there.
    let (st, _) = a
        .call("POST", &format!("/nodes/{}/drain", ids[1]), None)
        .await;
    assert_eq!(st, 200);
    let (_, list) = a.call("GET", "/sandboxes?page_size=100", None).await;
    let on_b = list["data"]
        .as_array()
        .expect("list")
        .iter()
        .find(|s| s["node_id"] == ids[1])
        .expect("a sandbox on B")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (st, _) = a.call("DELETE", &format!("/sandboxes/{on_b}"), None).await;
    assert_eq!(st, 200);
    let (st, v) = create_via(&a, json!({"cpu_count": 1, "memory_mb": 512})).await;
    assert_eq!(st, 503, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("vCPUs")),
        "{v}"
    );
}

#[tokio::test]
async fn a_paused_sandbox_on_a_draining_node_resumes_on_another() {
    let (a, b, id) = two_nodes().await;
    let (st, v) = a
        .call("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    assert_eq!(
        (st, v["data"]["state"].clone()),
        (200, json!("paused")),
        "{v}"
    );
    assert!(b.core.paused_dir(&id).exists());

    // The snapshot routes answer nodes only: a tenant's key, or none, sees
    // nothing there.
    let internal = format!("/internal/v1/sandboxes/{id}/paused");
    for client in [&b.client, &reqwest::Client::new()] {
        let resp = client.get(b.url(&internal)).send().await.expect("get");
        assert_eq!(resp.status(), 404);
    }

    let (st, _) = a
        .call("POST", &format!("/nodes/{}/drain", b.core.node_id()), None)
        .await;
    assert_eq!(st, 200);
    let (st, v) = a
        .call("POST", &format!("/sandboxes/{id}/resume"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["state"], "running");
    assert_eq!(v["data"]["node_id"].as_str(), Some(a.core.node_id()), "{v}");
    assert!(a.core.handle(&id).is_some(), "A runs it now");
    assert!(b.core.handle(&id).is_none(), "B let it go");
    assert!(!b.core.paused_dir(&id).exists(), "B's copy is deleted");
    // It answers through B too (forwarded to A now).
    let (st, v) = b
        .call(
            "POST",
            &format!("/sandboxes/{id}/exec"),
            Some(json!({"command": "echo moved"})),
        )
        .await;
    assert_eq!(
        (st, v["data"]["stdout"].clone()),
        (200, json!("moved\n")),
        "{v}"
    );
}

#[tokio::test]
async fn a_node_with_another_sealing_key_refuses_to_join() {
    let a = TestServer::start_with(fast).await;
    let dir = tempfile::tempdir().expect("dir");
    let mut config = a.core.config.clone();
    config.data_dir = dir.path().join("data");
    config.secrets_key_file = None;
    config.cluster.node_id = None;
    if config.database_url.is_none() {
        config.database = Some(a.core.config.database_path());
    }
    std::fs::create_dir_all(&config.data_dir).expect("data dir");
    let store = hearth_server::store::open(&config).await.expect("store");
    let vmm = std::sync::Arc::new(common::FakeVmm {
        knobs: std::sync::Arc::default(),
    });
    let core = hearth_server::core::Core::new(
        config,
        store,
        vmm,
        std::sync::Arc::new(common::FakeTemplates),
        std::sync::Arc::new(hearth_server::core::clock::SystemClock),
    )
    .expect("core");
    let e = core.start().await.expect_err("a stranger's key");
    let msg = e.to_string();
    assert!(
        msg.contains("sealing key") && msg.contains(a.core.node_id()),
        "{msg}"
    );
}

#[tokio::test]
async fn forks_snapshots_and_deployments_work_through_any_node() {
    let (a, b, id) = two_nodes().await;
    let b_id = b.core.node_id().to_string();

    // A fork asked of A runs where its source's snapshot is: on B.
    let (st, v) = a.call("POST", &format!("/sandboxes/{id}/fork"), None).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["data"]["node_id"].as_str(), Some(b_id.as_str()), "{v}");

    // A snapshot outlives its sandbox on B's disk; an E2B create from it
    // through A starts on B.
    let (st, v) = a
        .call(
            "POST",
            &format!("/sandboxes/{id}/snapshots"),
            Some(json!({"name": "keep"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let snap = v["data"]["id"].as_str().expect("snapshot id").to_string();
    let (st, _) = a.call("DELETE", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(st, 200);
    let resp = a
        .client
        .post(a.url("/e2b/sandboxes"))
        .json(&json!({"templateID": snap}))
        .send()
        .await
        .expect("e2b create");
    let status = resp.status();
    let v: Value = resp.json().await.expect("json");
    assert_eq!(status, 201, "{v}");
    let started = v["sandboxID"]
        .as_str()
        .expect("sandboxID")
        .replace('-', "_");
    assert!(b.core.handle(&started).is_some(), "not started on B: {v}");

    // A deployment of B's sandbox, through A: its instance runs on B, and
    // its URL answers through A's proxy as well as B's.
    let (port, _) = start_app().await;
    let (st, v) = a
        .call(
            "POST",
            &format!("/sandboxes/{started}/deploy"),
            Some(json!({"name": "web", "port": port, "start_command": "true", "health_check_path": "/healthz"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let url = v["data"]["deployment"]["public_url"]
        .as_str()
        .expect("url")
        .to_string();
    let host = host_of(&url);
    for proxy in [a.preview_addr, b.preview_addr] {
        let resp = client_for(&host, proxy)
            .get(format!("http://{host}:{}/page", proxy.port()))
            .send()
            .await
            .expect("app");
        assert_eq!(resp.status(), 200, "through {proxy}");
        assert_eq!(
            resp.text().await.expect("body"),
            "app saw GET /page with 0 body bytes"
        );
    }
}

#[tokio::test]
async fn a_lost_nodes_paused_sandbox_resumes_from_its_copy() {
    let copies = |region: Option<&'static str>| {
        move |c: &mut ServerConfig| {
            c.cluster.heartbeat_ms = 100;
            c.cluster.lost_after_ms = 800;
            c.cluster.replicate_paused = true;
            if let Some(r) = region {
                c.cluster.labels.insert("region".into(), r.into());
            }
        }
    };
    let a = TestServer::start_with(copies(None)).await;
    let b = TestServer::join(&a, copies(Some("b"))).await;
    let a_id = a.core.node_id().to_string();
    let on_b = |v: Value| v["id"].as_str().expect("id").to_string();
    let id = on_b(b.create_sandbox(json!({"region": "b"})).await);
    let other = on_b(b.create_sandbox(json!({"region": "b"})).await);

    // Each pause is copied to A; a resume forgets the copy.
    for sbx in [&id, &other] {
        let (st, v) = a
            .call("POST", &format!("/sandboxes/{sbx}/pause"), None)
            .await;
        assert_eq!(st, 200, "{v}");
        wait_until(Duration::from_secs(10), "the copy on A", || async {
            (a.core.replica_of(sbx).await.expect("replica").as_deref() == Some(a_id.as_str()))
                .then_some(())
        })
        .await;
        assert!(a.core.replica_dir(sbx).exists());
    }
    let (st, v) = a
        .call("POST", &format!("/sandboxes/{other}/resume"), None)
        .await;
    assert_eq!(
        (st, v["data"]["node_id"].as_str()),
        (200, Some(b.core.node_id()))
    );
    wait_until(
        Duration::from_secs(10),
        "the stale copy deleted",
        || async { (!a.core.replica_dir(&other).exists()).then_some(()) },
    )
    .await;
    assert_eq!(a.core.replica_of(&other).await.expect("replica"), None);

    // B falls silent: its paused sandbox resumes on A, from the copy.
    b.core.shutdown();
    wait_until(Duration::from_secs(10), "A sees B lost", || async {
        use hearth_server::core::nodes::peers::Owner;
        (a.core.sandbox_owner(&id).await.expect("owner") == Owner::Here).then_some(())
    })
    .await;
    let (_, v) = a.call("GET", "/nodes", None).await;
    assert!(
        v["data"]
            .as_array()
            .expect("nodes")
            .iter()
            .any(|n| n["id"] == b.core.node_id() && n["state"] == "lost"),
        "{v}"
    );
    let (st, v) = a
        .call("POST", &format!("/sandboxes/{id}/resume"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["data"]["state"].clone(), v["data"]["node_id"].as_str()),
        (json!("running"), Some(a_id.as_str())),
        "{v}"
    );
    assert!(a.core.handle(&id).is_some());
    assert!(
        !a.core.replica_dir(&id).exists(),
        "the copy became its snapshot"
    );
    // B's running sandbox went to error, as lost nodes' do.
    let (_, v) = a.call("GET", &format!("/sandboxes/{other}"), None).await;
    assert_eq!(v["data"]["state"], "error", "{v}");
}

#[tokio::test]
async fn a_paused_sandbox_resumes_where_there_is_room() {
    let in_b = |c: &mut ServerConfig| {
        small(c);
        c.cluster.labels.insert("region".into(), "b".into());
    };
    let a = TestServer::start_with(small).await;
    let b = TestServer::join(&a, in_b).await;
    let two_on_b = json!({"cpu_count": 2, "memory_mb": 512, "region": "b"});
    let (st, v) = create_via(&a, two_on_b.clone()).await;
    assert_eq!(
        (st, v["data"]["node_id"].as_str()),
        (201, Some(b.core.node_id())),
        "{v}"
    );
    let x = v["data"]["id"].as_str().expect("id").to_string();
    let (st, _) = a.call("POST", &format!("/sandboxes/{x}/pause"), None).await;
    assert_eq!(st, 200);
    // Its vCPUs given back, B fills up again.
    for _ in 0..2 {
        let (st, v) = create_via(&a, two_on_b.clone()).await;
        assert_eq!(
            (st, v["data"]["node_id"].as_str()),
            (201, Some(b.core.node_id())),
            "{v}"
        );
    }
    let (st, v) = a
        .call("POST", &format!("/sandboxes/{x}/resume"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["data"]["state"].clone(), v["data"]["node_id"].as_str()),
        (json!("running"), Some(a.core.node_id())),
        "B is full: the sandbox moves to A"
    );
    let (_, v) = a.call("GET", "/nodes", None).await;
    for n in v["data"].as_array().expect("nodes") {
        assert!(n["load"]["vcpus"].as_u64() <= Some(4), "overcommitted: {n}");
    }
}
