//! The served OpenAPI document against the checked-in file, the router and
//! the served sandbox object (see `routes::openapi`). The document is
//! generated from the same handler list as the router; these tests hold
//! the checked-in file to both. Its request schemas are held to the
//! handlers' checks by `openapi_bounds.rs`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::TestServer;
use serde_json::{json, Value};

const FILE: &str = include_str!("../openapi.json");

fn checked_in() -> Value {
    serde_json::from_str(FILE).expect("openapi.json is JSON")
}

/// Whether an answer is the router's own "no such route": the fallback
/// (404 `not_found` "route not found") or 405.
async fn unrouted(resp: reqwest::Response) -> Option<String> {
    let status = resp.status().as_u16();
    match status {
        405 => Some("405 Method Not Allowed".into()),
        // Only a 404 is read: the fallback is a short JSON body, while a
        // 200 may be an endless event stream (dropped unread).
        404 => {
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            let fallback =
                v["error"]["code"] == "not_found" && v["error"]["message"] == "route not found";
            fallback.then(|| format!("404 fallback: {v}"))
        }
        _ => None,
    }
}

#[tokio::test]
async fn served_document_is_the_checked_in_file() {
    let srv = TestServer::start().await;
    let want = checked_in();
    // Public: no key needed.
    let anon = reqwest::Client::new();
    for path in ["/openapi.json", "/api/v1/openapi.json"] {
        let resp = anon.get(srv.url(path)).send().await.expect("get");
        assert_eq!(resp.status(), 200, "{path}");
        let ctype = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(ctype.starts_with("application/json"), "{path}: {ctype}");
        let text = resp.text().await.expect("body");
        assert!(text == FILE, "{path} is not byte for byte openapi.json");
        let got: Value = serde_json::from_str(&text).expect("served JSON");
        assert_eq!(got, want, "{path}");
    }
    assert!(
        want == hearth_server::routes::openapi::document(),
        "openapi.json is stale: UPDATE_OPENAPI=1 cargo test -p hearth-server --lib openapi"
    );
}

/// One request per documented (method, path); none may meet the router's
/// fallback or a 405.
#[tokio::test]
async fn every_documented_route_is_routed() {
    let srv = TestServer::start().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("sandbox id").to_string();

    let doc = checked_in();
    let mut ops: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            ops.push((method.to_ascii_uppercase(), path.clone()));
        }
    }
    assert!(ops.len() > 40, "only {} operations documented", ops.len());
    // Every other route first, against a running sandbox; then pause,
    // resume, and destroy last.
    let rank = |(method, path): &(String, String)| match (method.as_str(), path.as_str()) {
        ("POST", "/api/v1/sandboxes/{id}/pause") => 1,
        ("POST", "/api/v1/sandboxes/{id}/resume") => 2,
        ("DELETE", "/api/v1/sandboxes/{id}") => 3,
        _ => 0,
    };
    ops.sort_by_key(rank);

    let mut missing = Vec::new();
    for (method, template) in &ops {
        let path: String = template
            .split('/')
            .map(|seg| match seg {
                "{id}" => id.as_str(),
                "{pid}" => "1",
                "{path}" => "tmp/x",
                s if s.starts_with('{') => "x",
                s => s,
            })
            .collect::<Vec<_>>()
            .join("/");
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let send = srv.client.request(m, srv.url(&path)).send();
        let resp = tokio::time::timeout(Duration::from_secs(60), send)
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer in 60 s"))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        if let Some(why) = unrouted(resp).await {
            missing.push(format!("{method} {template}: {why}"));
        }
    }
    assert!(
        missing.is_empty(),
        "documented but not routed:\n{}",
        missing.join("\n")
    );

    // The check itself tells an unrouted path from a routed one.
    let resp = srv
        .client
        .get(srv.url("/api/v1/no-such-route"))
        .send()
        .await
        .expect("get");
    assert!(unrouted(resp).await.is_some(), "fallback not recognized");
    let resp = srv
        .client
        .patch(srv.url("/api/v1/api-keys"))
        .send()
        .await
        .expect("patch");
    assert!(unrouted(resp).await.is_some(), "405 not recognized");
}

/// The `Sandbox` schema names exactly the fields the server sends.
#[tokio::test]
async fn sandbox_schema_matches_the_served_object() {
    let srv = TestServer::start().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let sent: BTreeSet<&str> = sbx
        .as_object()
        .expect("sandbox object")
        .keys()
        .map(String::as_str)
        .collect();
    let doc = checked_in();
    let documented: BTreeSet<&str> = doc["components"]["schemas"]["Sandbox"]["properties"]
        .as_object()
        .expect("Sandbox schema")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(sent, documented, "served sandbox vs the Sandbox schema");
}
