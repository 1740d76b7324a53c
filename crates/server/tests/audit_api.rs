//! The audit log through the HTTP API: every mutating action is there
//! (who, what, which resource, request id, address, outcome), denied
//! attempts too, reads are not; commands are masked with the vault's
//! values; pages follow a cursor, export is NDJSON, and another tenant
//! reads none of it.

mod common;

use common::TestServer;
use serde_json::{json, Value};

const VALUE: &str = "tok-audit-7c1e9a55f0d24b8e";

async fn log(srv: &TestServer, client: &reqwest::Client, query: &str) -> Value {
    let (st, v) = srv
        .call_as(client, "GET", &format!("/audit-log{query}"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    v
}

fn types(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn mutations_and_denials_are_logged_reads_are_not_and_values_never() {
    let srv = TestServer::start().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("id").to_string();
    let (st, v) = srv
        .call(
            "POST",
            "/egress/secrets",
            Some(json!({"name": "api", "value": VALUE, "expose_as_env": "API", "resource_id": id})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    // The value typed into a command is masked in the log.
    let (st, v) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/exec"),
            Some(json!({"command": format!("echo {VALUE} >/dev/null")})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, _) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/fs/write"),
            Some(json!({"path": "/workspace/a.txt", "content": "x"})),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = srv.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(st, 200);
    let (st, v) = srv
        .call(
            "POST",
            "/tokens/scoped",
            Some(json!({"user_id": "u", "workspace_id": "w", "scopes": ["sandboxes:read"]})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let tok = srv.client_with(v["token"].as_str().expect("token"));
    let token_id = v["id"].as_str().expect("id").to_string();
    // Denied: a token without the scope.
    let (st, _) = srv
        .call_as(&tok, "POST", "/sandboxes", Some(json!({})))
        .await;
    assert_eq!(st, 403);

    let v = log(&srv, &srv.client, "").await;
    assert_eq!(
        types(&v),
        [
            "sandbox.create",
            "secret.create",
            "sandbox.exec",
            "file.write",
            "token.mint",
            "sandbox.create"
        ],
        "{v}"
    );
    let e = &v["data"];
    assert_eq!(e[0]["resource_type"], "sandbox");
    assert_eq!(e[0]["resource_id"], id.as_str());
    assert_eq!(e[0]["actor_type"], "api_key");
    assert_eq!(e[0]["outcome"], "ok");
    assert_eq!(e[0]["ip"], "127.0.0.1");
    assert!(
        e[0]["request_id"]
            .as_str()
            .is_some_and(|r| r.starts_with("req_")),
        "{v}"
    );
    assert_eq!(e[2]["details"]["command"], "echo *** >/dev/null", "{v}");
    assert_eq!(e[2]["details"]["exit_code"], 0);
    let denied = &e[5];
    assert_eq!(denied["outcome"], "denied");
    assert_eq!(denied["error_code"], "forbidden");
    assert_eq!(denied["actor_type"], "scoped_token");
    assert_eq!(denied["actor_id"], token_id.as_str());
    assert!(!v.to_string().contains(VALUE), "no value in the log");

    // Filters, pages, export.
    let v = log(&srv, &srv.client, "?type=sandbox.exec").await;
    assert_eq!(types(&v), ["sandbox.exec"]);
    let v = log(&srv, &srv.client, &format!("?resource_id={id}")).await;
    assert_eq!(types(&v).len(), 3, "create, exec, write: {v}");
    let v = log(&srv, &srv.client, &format!("?actor_id={token_id}")).await;
    assert_eq!(types(&v), ["sandbox.create"]);
    let first = log(&srv, &srv.client, "?limit=4").await;
    assert_eq!(types(&first).len(), 4);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let rest = log(&srv, &srv.client, &format!("?limit=4&after={cursor}")).await;
    assert_eq!(types(&rest), ["token.mint", "sandbox.create"]);
    assert!(rest["next_cursor"].is_null(), "{rest}");
    let ndjson = srv
        .client
        .get(srv.url("/api/v1/audit-log/export"))
        .send()
        .await
        .expect("export");
    assert_eq!(ndjson.headers()["content-type"], "application/x-ndjson");
    let text = ndjson.text().await.expect("text");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON entry per line"))
        .collect();
    assert_eq!(lines.len(), 6, "{text}");
    let (st, v) = srv.call("GET", "/audit-log?limit=0", None).await;
    assert_eq!(
        (st, v["error"]["details"][0]["field"].clone()),
        (422, json!("limit"))
    );

    // Another tenant reads only its own.
    let other = srv.stranger().await;
    let v = log(&srv, &other, "").await;
    assert_eq!(v["data"], json!([]), "{v}");
    // ...and its own actions land in its own log.
    let (st, _) = srv
        .call_as(&other, "DELETE", &format!("/sandboxes/{id}"), None)
        .await;
    assert_eq!(st, 404);
    let v = log(&srv, &other, "").await;
    assert_eq!(types(&v), ["sandbox.destroy"]);
    assert_eq!(v["data"][0]["outcome"], "error");
    assert_eq!(v["data"][0]["error_code"], "not_found");
}
