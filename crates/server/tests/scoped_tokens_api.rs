//! Scoped tokens through the HTTP API: a token does what its scopes allow
//! on the sandboxes it sees, and nothing else (403 naming the scope, 404
//! for sandboxes out of its reach); it works for REST, SSE and the preview
//! proxy; revoking it, or the key that minted it, is 401 from the next
//! request and ends its streams.

mod common;

use std::time::Duration;

use common::previews::{client_for, host_of, preview, start_app};
use common::TestServer;
use serde_json::{json, Value};

async fn mint(srv: &TestServer, client: &reqwest::Client, body: Value) -> (u16, Value) {
    srv.call_as(client, "POST", "/tokens/scoped", Some(body))
        .await
}

fn token_of(v: &Value) -> String {
    v["token"].as_str().expect("token").to_string()
}

#[tokio::test]
async fn a_token_does_what_its_scopes_allow_on_what_it_sees_and_nothing_else() {
    let srv = TestServer::start().await;
    let x = srv.create_sandbox(json!({})).await;
    let x = x["id"].as_str().expect("id").to_string();
    let y = srv.create_sandbox(json!({})).await;
    let y = y["id"].as_str().expect("id").to_string();

    let (st, v) = mint(
        &srv,
        &srv.client,
        json!({"user_id": "u1", "workspace_id": "w1", "expires_in_seconds": 600,
               "scopes": ["sandboxes:exec", "sandboxes:read"], "sandbox_ids": [x]}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["scopes"], json!(["sandboxes:exec", "sandboxes:read"]));
    assert!(v["expires_at"].is_string() && v["id"].is_string(), "{v}");
    let token = token_of(&v);
    let tok = srv.client_with(&token);

    // Exec on its sandbox.
    let (st, r) = srv
        .call_as(
            &tok,
            "POST",
            &format!("/sandboxes/{x}/exec"),
            Some(json!({"command": "echo hi"})),
        )
        .await;
    assert_eq!(
        (st, r["data"]["stdout"].clone()),
        (200, json!("hi\n")),
        "{r}"
    );
    // Out of scope: 403 naming the scope.
    for (method, path, body, scope) in [
        (
            "POST",
            "/sandboxes".to_string(),
            Some(json!({})),
            "sandboxes:create",
        ),
        (
            "DELETE",
            format!("/sandboxes/{x}"),
            None,
            "sandboxes:destroy",
        ),
        (
            "POST",
            format!("/sandboxes/{x}/fs/write"),
            Some(json!({"path": "/workspace/a", "content": "x"})),
            "sandboxes:files:write",
        ),
        (
            "POST",
            format!("/sandboxes/{x}/snapshots"),
            Some(json!({})),
            "snapshots:write",
        ),
    ] {
        let (st, v) = srv.call_as(&tok, method, &path, body).await;
        assert_eq!(st, 403, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "forbidden");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(scope), "{method} {path}: {msg}");
    }
    // Routes closed to tokens whatever their scopes.
    for (method, path) in [
        ("POST", "/api-keys".to_string()),
        ("GET", "/api-keys".to_string()),
        ("POST", "/tokens/scoped".to_string()),
        ("GET", "/egress/secrets".to_string()),
        ("GET", "/quotas".to_string()),
        ("GET", "/audit-log".to_string()),
        ("GET", "/deployments".to_string()),
        // Even on its own sandbox, publishing is not a token's to do.
        ("POST", format!("/sandboxes/{x}/deploy")),
    ] {
        let (st, v) = srv
            .call_as(
                &tok,
                method,
                &path,
                Some(json!({"user_id": "a", "workspace_id": "b"})),
            )
            .await;
        assert_eq!(st, 403, "{method} {path}: {v}");
    }
    // Another sandbox of the tenant is not there for it.
    let (st, _) = srv
        .call_as(&tok, "GET", &format!("/sandboxes/{y}"), None)
        .await;
    assert_eq!(st, 404);
    let (st, _) = srv
        .call_as(
            &tok,
            "POST",
            &format!("/sandboxes/{y}/exec"),
            Some(json!({"command": "true"})),
        )
        .await;
    assert_eq!(st, 404);
    let (st, v) = srv.call_as(&tok, "GET", "/sandboxes", None).await;
    assert_eq!(st, 200, "{v}");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, [x.as_str()]);

    // Its event stream ends when it is revoked; then every request is 401.
    let stream = tok
        .get(srv.url(&format!("/api/v1/sandboxes/{x}/events")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("events");
    assert_eq!(stream.status(), 200);
    let token_id = v_id(&srv).await;
    let (st, v) = srv
        .call("DELETE", &format!("/tokens/scoped/{token_id}"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    let mut stream = stream;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the revoked token's stream ends");
    let (st, v) = srv
        .call_as(&tok, "GET", &format!("/sandboxes/{x}"), None)
        .await;
    assert_eq!(st, 401, "{v}");
    let (_, v) = srv.call("GET", "/tokens/scoped", None).await;
    assert_eq!(v["data"][0]["revoked"], true, "{v}");
    assert!(
        !v.to_string().contains(&token),
        "no plain token in the list"
    );
}

/// The id of the newest token.
async fn v_id(srv: &TestServer) -> String {
    let (_, v) = srv.call("GET", "/tokens/scoped", None).await;
    v["data"][0]["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn an_unpinned_token_sees_only_its_users_sandboxes_and_dies_with_its_key() {
    let srv = TestServer::start().await;
    let admins = srv.create_sandbox(json!({})).await;
    let admins = admins["id"].as_str().expect("id").to_string();
    // A non-admin key mints it.
    let (st, v) = srv
        .call("POST", "/api-keys", Some(json!({"name": "app"})))
        .await;
    assert_eq!(st, 201, "{v}");
    let (app_id, app) = (
        v["data"]["id"].as_str().expect("id").to_string(),
        srv.client_with(v["data"]["key"].as_str().expect("key")),
    );
    let (st, v) = mint(
        &srv,
        &app,
        json!({"user_id": "u2", "workspace_id": "w2",
               "scopes": ["sandboxes:create", "sandboxes:read", "previews:write"]}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let tok = srv.client_with(&token_of(&v));
    // What it creates carries its user and workspace, whatever it asks.
    let (st, v) = srv
        .call_as(
            &tok,
            "POST",
            "/sandboxes",
            Some(json!({"external_user_id": "someone-else"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["data"]["external_user_id"], "u2");
    assert_eq!(v["data"]["external_workspace_id"], "w2");
    let mine = v["data"]["id"].as_str().expect("id").to_string();
    let (_, v) = srv
        .call_as(&tok, "GET", "/sandboxes?external_user_id=other", None)
        .await;
    let ids: Vec<&str> = v["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, [mine.as_str()], "a filter cannot widen what it sees");
    let (st, _) = srv
        .call_as(&tok, "GET", &format!("/sandboxes/{admins}"), None)
        .await;
    assert_eq!(st, 404);

    // The preview proxy takes it for its sandbox's private preview, not
    // for another's.
    let (port, _) = start_app().await;
    let p = preview(&srv, &mine, port, "private").await;
    let other = preview(&srv, &admins, port, "private").await;
    let (_, v) = srv.call_as(&app, "GET", "/tokens/scoped", None).await;
    let prefix = v["data"][0]["prefix"].as_str().unwrap_or("");
    assert!(
        prefix.starts_with("hk_st_"),
        "a token goes where a key goes: {v}"
    );
    let url = p["url"].as_str().expect("url");
    let c = client_for(&host_of(url), srv.preview_addr);
    let bearer = tok_bearer(&srv, &app).await;
    let resp = c
        .get(format!("{url}/x"))
        .header("authorization", &bearer)
        .send()
        .await
        .expect("proxy");
    assert_eq!(resp.status(), 200);
    let other_url = other["url"].as_str().expect("url");
    let c2 = client_for(&host_of(other_url), srv.preview_addr);
    let resp = c2
        .get(format!("{other_url}/x"))
        .header("authorization", &bearer)
        .send()
        .await
        .expect("proxy");
    assert_ne!(resp.status(), 200, "not another user's preview");

    // Revoking the key that minted it revokes it.
    let (st, v) = srv
        .call("DELETE", &format!("/api-keys/{app_id}"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, _) = srv.call_as(&tok, "GET", "/sandboxes", None).await;
    assert_eq!(st, 401);
}

/// A fresh token of `app` (user u2) as an `Authorization` value.
async fn tok_bearer(srv: &TestServer, app: &reqwest::Client) -> String {
    let (st, v) = mint(
        srv,
        app,
        json!({"user_id": "u2", "workspace_id": "w2", "scopes": ["sandboxes:read"]}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    format!("Bearer {}", token_of(&v))
}

#[tokio::test]
async fn bad_mints_get_422_and_other_tenants_cannot_touch_a_token() {
    let srv = TestServer::start().await;
    for (body, field) in [
        (json!({"workspace_id": "w"}), "user_id"),
        (
            json!({"user_id": "u", "workspace_id": "w", "expires_in_seconds": 86401}),
            "expires_in_seconds",
        ),
        (
            json!({"user_id": "u", "workspace_id": "w", "scopes": ["root"]}),
            "scopes[0]",
        ),
    ] {
        let (st, v) = mint(&srv, &srv.client, body.clone()).await;
        assert_eq!(st, 422, "{body}: {v}");
        assert_eq!(v["error"]["details"][0]["field"], field, "{v}");
    }
    let (st, v) = mint(
        &srv,
        &srv.client,
        json!({"user_id": "u", "workspace_id": "w", "sandbox_ids": ["sbx_nope"]}),
    )
    .await;
    assert_eq!(st, 404, "pinning a sandbox that is not yours: {v}");
    let (st, v) = mint(
        &srv,
        &srv.client,
        json!({"user_id": "u", "workspace_id": "w"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        v["scopes"].as_array().map(Vec::len),
        Some(9),
        "every scope by default"
    );
    let id = v["id"].as_str().expect("id").to_string();

    let other = srv.stranger().await;
    let (st, _) = srv
        .call_as(&other, "DELETE", &format!("/tokens/scoped/{id}"), None)
        .await;
    assert_eq!(st, 404);
    let (_, v) = srv.call_as(&other, "GET", "/tokens/scoped", None).await;
    assert_eq!(v["data"], json!([]));
}
