//! Router and lifecycle tests against the real server with agents in
//! place of VMs (see `common`): create, exec and destroy, tenants,
//! validation and lists here; idempotency, timers and the event stream in
//! the modules beside it.

mod common;
#[path = "api/events.rs"]
mod events;
#[path = "api/idempotency.rs"]
mod idempotency;
#[path = "api/timers.rs"]
mod timers;

use std::time::Duration;

use common::TestServer;
use serde_json::{json, Value};

async fn body(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let v = resp.json().await.unwrap_or(Value::Null);
    (status, v)
}

#[tokio::test]
async fn create_exec_destroy() {
    let srv = TestServer::start().await;
    let sbx = srv
        .create_sandbox(json!({"env": {"GREETING": "hi"}, "tags": ["t1"]}))
        .await;
    let id = sbx["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("sbx_"));
    assert_eq!(sbx["state"], "running");
    assert_eq!(sbx["status"], "running");
    // The default shape's template snapshot is written at start.
    assert_eq!(sbx["boot_path"], "snapshot");
    assert!(sbx["boot_ms"].as_u64().is_some());
    assert_eq!(sbx["env_keys"], json!(["GREETING"]));
    let remaining = sbx["timeout_remaining_ms"].as_i64().expect("remaining");
    assert!(remaining > 290_000 && remaining <= 300_000, "{remaining}");

    let (st, v) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/exec"),
            Some(json!({"command": "echo $GREETING; echo err >&2; exit 3"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["stdout"], "hi\n");
    assert_eq!(v["data"]["stderr"], "err\n");
    assert_eq!(v["data"]["exit_code"], 3);
    assert_eq!(v["data"]["timed_out"], false);

    let (st, v) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/exec"),
            Some(json!({"command": "sleep 5", "timeout": 1})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["timed_out"], true);
    assert_eq!(v["data"]["exit_code"], -1);

    // Streamed exec: stdout frames then an exit frame.
    let text = srv
        .client
        .post(srv.url(&format!("/api/v1/sandboxes/{id}/exec/stream")))
        .json(&json!({"command": "echo one; echo two"}))
        .send()
        .await
        .expect("stream")
        .text()
        .await
        .expect("text");
    assert!(text.contains("event: stdout"), "{text}");
    assert!(text.contains("\"line\":\"one"), "{text}");
    assert!(text.contains("event: exit"), "{text}");
    assert!(text.contains("\"exit_code\":0"), "{text}");

    let (st, v) = srv.call("DELETE", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(st, 200);
    assert_eq!(v["data"]["state"], "destroyed");
    assert!(v["data"]["destroyed_at"].is_string());
    // Idempotent, and the id stays readable.
    let (st, v) = srv.call("DELETE", &format!("/sandboxes/{id}"), None).await;
    assert_eq!((st, v["data"]["state"].clone()), (200, json!("destroyed")));
    let (st, v) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/exec"),
            Some(json!({"command": "true"})),
        )
        .await;
    assert_eq!(st, 409);
    assert_eq!(v["error"]["code"], "sandbox_not_running");

    // Events were recorded in order.
    let (st, v) = body(
        srv.client
            .get(srv.url(&format!("/api/v1/sandboxes/{id}/events")))
            .header("accept", "application/json")
            .send()
            .await
            .expect("events"),
    )
    .await;
    assert_eq!(st, 200);
    let kinds: Vec<&str> = v["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(kinds.first(), Some(&"sandbox.created"));
    assert_eq!(kinds.get(1), Some(&"sandbox.running"));
    assert!(kinds.contains(&"sandbox.exec.completed"));
    assert_eq!(kinds.last(), Some(&"sandbox.destroyed"));
}

#[tokio::test]
async fn auth_and_tenants() {
    let srv = TestServer::start().await;
    let anon = reqwest::Client::new();
    let (st, v) = srv.call_as(&anon, "GET", "/sandboxes", None).await;
    assert_eq!(st, 401);
    assert_eq!(v["error"]["code"], "unauthorized");
    assert!(v["error"]["request_id"]
        .as_str()
        .expect("rid")
        .starts_with("req_"));
    let (st, _) = srv
        .call_as(&srv.client_with("hk_notakey"), "GET", "/sandboxes", None)
        .await;
    assert_eq!(st, 401);
    let (st, v) = body(anon.get(srv.url("/healthz")).send().await.expect("req")).await;
    assert_eq!((st, v["status"].clone()), (200, json!("ok")));

    // A second tenant's key.
    let (st, v) = srv
        .call(
            "POST",
            "/api-keys",
            Some(json!({"name": "other", "tenant_id": "ten_other"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let other_key = v["data"]["key"].as_str().expect("key").to_string();
    assert!(other_key.starts_with("hk_"));
    let other = srv.client_with(&other_key);

    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("id");
    for (method, path) in [
        ("GET", format!("/api/v1/sandboxes/{id}")),
        ("DELETE", format!("/api/v1/sandboxes/{id}")),
        ("POST", format!("/api/v1/sandboxes/{id}/exec")),
        ("POST", format!("/api/v1/sandboxes/{id}/pause")),
    ] {
        let req = match method {
            "GET" => other.get(srv.url(&path)),
            "DELETE" => other.delete(srv.url(&path)),
            _ => other.post(srv.url(&path)).json(&json!({"command": "true"})),
        };
        let (st, v) = body(req.send().await.expect("req")).await;
        assert_eq!(st, 404, "{method} {path}: {v}");
    }
    let (_, v) = srv.call_as(&other, "GET", "/sandboxes", None).await;
    assert_eq!(v["page"]["total"], 0);
    // The other tenant cannot mint keys elsewhere.
    let (st, _) = srv
        .call_as(
            &other,
            "POST",
            "/api-keys",
            Some(json!({"tenant_id": "ten_default"})),
        )
        .await;
    assert_eq!(st, 403);
    // Revoked keys stop working at once.
    let (_, v) = srv.call_as(&other, "GET", "/api-keys", None).await;
    let key_id = v["data"][0]["id"].as_str().expect("key id").to_string();
    let (st, _) = srv
        .call("DELETE", &format!("/api-keys/{key_id}"), None)
        .await;
    assert_eq!(st, 404, "admin of another tenant does not see the key");
    let second = {
        let (_, v) = srv
            .call_as(&other, "POST", "/api-keys", Some(json!({"name": "second"})))
            .await;
        v["data"]["key"].as_str().expect("key").to_string()
    };
    let (st, _) = srv
        .call_as(
            &srv.client_with(&second),
            "DELETE",
            &format!("/api-keys/{key_id}"),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = srv.call_as(&other, "GET", "/sandboxes", None).await;
    assert_eq!(st, 401);
}

#[tokio::test]
async fn validation_errors_name_fields() {
    let srv = TestServer::start().await;
    let (st, v) = srv
        .call(
            "POST",
            "/sandboxes",
            Some(json!({"cpu_count": 99, "memory_mb": "lots", "template_id": "minimal"})),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["error"]["code"], "validation_error");
    assert_eq!(v["error"]["details"][0]["field"], "memory_mb");

    let (st, v) = srv
        .call(
            "POST",
            "/sandboxes",
            Some(json!({"cpu_count": 99, "timeout_sec": 0, "template_id": "minimal"})),
        )
        .await;
    assert_eq!(st, 422);
    let fields: Vec<&str> = v["error"]["details"]
        .as_array()
        .expect("details")
        .iter()
        .filter_map(|d| d["field"].as_str())
        .collect();
    assert_eq!(fields, ["cpu_count", "timeout_sec"]);

    let (st, v) = srv
        .call("POST", "/sandboxes", Some(json!({"template_id": "nope"})))
        .await;
    assert_eq!(
        (st, v["error"]["details"][0]["field"].clone()),
        (422, json!("template_id"))
    );

    // Unknown fields are ignored (MIOSA clients send extras).
    let sbx = srv
        .create_sandbox(json!({"auto_start": true, "region": "eu", "size": "xs"}))
        .await;
    assert_eq!(sbx["memory_mb"], 512);

    // Malformed JSON and oversized bodies.
    let (st, v) = body(
        srv.client
            .post(srv.url("/api/v1/sandboxes"))
            .header("content-type", "application/json")
            .body("{\"cpu_count\": ")
            .send()
            .await
            .expect("create"),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].clone()),
        (400, json!("bad_request"))
    );
    let big = vec![b' '; 65 << 20];
    let (st, v) = body(
        srv.client
            .post(srv.url("/api/v1/sandboxes"))
            .header("content-type", "application/json")
            .body(big)
            .send()
            .await
            .expect("create"),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].clone()),
        (413, json!("payload_too_large"))
    );
    // The server is still healthy.
    let (st, _) = body(
        srv.client
            .get(srv.url("/healthz"))
            .send()
            .await
            .expect("health"),
    )
    .await;
    assert_eq!(st, 200);

    let (st, v) = srv.call("GET", "/sandboxes/sbx_doesnotexist", None).await;
    assert_eq!(
        (st, v["error"]["code"].clone()),
        (404, json!("sandbox_not_found"))
    );
    let (st, _) = srv.call("GET", "/sandboxes?page_size=500", None).await;
    assert_eq!(st, 422);
}

#[tokio::test]
async fn list_filters_pages_and_names() {
    let srv = TestServer::start().await;
    for i in 0..5 {
        let tags = if i % 2 == 0 {
            json!(["even", "x"])
        } else {
            json!(["odd"])
        };
        srv.create_sandbox(json!({
            "name": format!("box-{i}"),
            "tags": tags,
            "external_workspace_id": if i < 2 { "ws1" } else { "ws2" },
            "always_on": true,
        }))
        .await;
    }
    let get = |q: &str| {
        srv.client
            .get(srv.url(&format!("/api/v1/sandboxes?{q}")))
            .send()
    };
    let (_, v) = body(get("tags=even,x").await.expect("list")).await;
    assert_eq!(v["page"]["total"], 3);
    let (_, v) = body(get("external_workspace_id=ws1").await.expect("list")).await;
    assert_eq!(v["page"]["total"], 2);
    let (_, v) = body(get("page=2&page_size=2").await.expect("list")).await;
    assert_eq!(v["data"].as_array().expect("list").len(), 2);
    assert_eq!(v["page"], json!({"page": 2, "page_size": 2, "total": 5}));
    let (_, v) = body(
        get("state=running&template_id=minimal")
            .await
            .expect("list"),
    )
    .await;
    assert_eq!(v["page"]["total"], 5);
    assert!(v["data"][0]["timeout_remaining_ms"].is_null(), "always_on");

    let (st, v) = srv.call("GET", "/sandboxes/by-name/box-3", None).await;
    assert_eq!(st, 200);
    let id = v["data"]["id"].as_str().expect("id").to_string();
    // Names are unique among live sandboxes.
    let (st, v) = srv
        .call(
            "POST",
            "/sandboxes",
            Some(json!({"name": "box-3", "template_id": "minimal"})),
        )
        .await;
    assert_eq!(st, 409, "{v}");

    // PATCH: mutable fields change, external ids do not.
    let (st, v) = srv.call("PATCH", &format!("/sandboxes/{id}"), Some(json!({"name": "renamed", "metadata": {"k": "v"}, "always_on": false, "timeout_sec": 60}))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["name"], "renamed");
    assert_eq!(v["data"]["metadata"]["k"], "v");
    let remaining = v["data"]["timeout_remaining_ms"]
        .as_i64()
        .expect("remaining");
    assert!(remaining <= 60_000 && remaining > 55_000, "{remaining}");
    let (st, v) = srv
        .call(
            "PATCH",
            &format!("/sandboxes/{id}"),
            Some(json!({"external_workspace_id": "ws9"})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["details"][0]["field"].clone()),
        (422, json!("external_workspace_id"))
    );

    // Extend resets the deadline.
    let (st, v) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/extend"),
            Some(json!({"timeout_sec": 600})),
        )
        .await;
    assert_eq!(st, 200);
    assert!(
        v["data"]["timeout_remaining_ms"]
            .as_i64()
            .expect("remaining")
            > 595_000
    );
    let (_, v) = srv
        .call("GET", &format!("/sandboxes/{id}/readiness"), None)
        .await;
    assert_eq!(v["data"], json!({"ready": true, "state": "running"}));
}
