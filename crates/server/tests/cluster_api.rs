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
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn fast(c: &mut ServerConfig) {
    c.cluster.heartbeat_ms = 100;
    c.cluster.lost_after_ms = 5_000;
}

/// Two nodes on one store and a sandbox that B runs.
async fn two_nodes() -> (TestServer, TestServer, String) {
    let a = TestServer::start_with(fast).await;
    let b = TestServer::join(&a, fast).await;
    let sbx = b.create_sandbox(json!({})).await;
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
    let (st, v) = a
        .call(
            "POST",
            &format!("/sandboxes/{id}/terminals"),
            Some(json!({"cols": 80, "rows": 24, "shell": "/bin/sh"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let tid = v["data"]["id"].as_str().expect("terminal id");
    let url = a
        .url(&format!("/api/v1/sandboxes/{id}/terminals/{tid}/ws"))
        .replacen("http://", "ws://", 1);
    let mut req = url.into_client_request().expect("ws request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", a.admin_key).parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("ws through A");
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
        fast(c);
        c.cluster.node_url = Some("http://127.0.0.1:9".into());
    })
    .await;
    let sbx = c.create_sandbox(json!({})).await;
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
}
