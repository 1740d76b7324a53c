//! The secrets vault through the HTTP API, with real agent processes: a
//! bound secret is in every command's env and nowhere else (not in any
//! answer, the sandbox's env, its events, or the data directory), masked
//! in output; rotation and unbinding apply to the next command; a per-call
//! secret reaches that call only; another tenant sees and uses nothing.

mod common;

use common::at_rest::{contains, files_under};
use common::{wait_until, TestServer};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const VALUE: &str = "sk-live-4f9a1c77e2b34d0a9c51-vault";
const ROTATED: &str = "sk-live-rotated-0b7e55aa91c4-vault";

fn sha(v: &str) -> String {
    Sha256::digest(v.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs `command` in `id` (with per-call `secrets`); its stdout.
async fn run(srv: &TestServer, id: &str, command: &str, secrets: &[&str]) -> (u16, Value) {
    srv.call(
        "POST",
        &format!("/sandboxes/{id}/exec"),
        Some(json!({ "command": command, "secrets": secrets })),
    )
    .await
}

async fn stdout(srv: &TestServer, id: &str, command: &str, secrets: &[&str]) -> String {
    let (st, v) = run(srv, id, command, secrets).await;
    assert_eq!(st, 200, "{command}: {v}");
    v["data"]["stdout"].as_str().expect("stdout").to_string()
}

/// The digest of `$API_TOKEN` in the guest ("-" when unset): proves the
/// value is there without printing it.
const DIGEST: &str =
    "if [ -n \"${API_TOKEN+x}\" ]; then printf %s \"$API_TOKEN\" | sha256sum | cut -d' ' -f1; else echo -; fi";

#[tokio::test]
async fn a_bound_secret_reaches_commands_and_nothing_else() {
    let srv = TestServer::start().await;
    let a = srv.create_sandbox(json!({"env": {"PLAIN": "p"}})).await;
    let a = a["id"].as_str().expect("id").to_string();
    let b = srv.create_sandbox(json!({})).await;
    let b = b["id"].as_str().expect("id").to_string();

    let (st, v) = srv
        .call(
            "POST",
            "/egress/secrets",
            Some(json!({
                "name": "openai", "value": VALUE, "type": "api_key", "scope": "user",
                "expose_as_env": "API_TOKEN", "resource_id": a, "resource_type": "sandbox",
                "metadata": {"team": "ml"},
            })),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let body = v.to_string();
    assert!(!body.contains(VALUE), "the value is never answered: {body}");
    let sid = v["data"]["id"].as_str().expect("id").to_string();
    assert_eq!(v["data"]["value_prefix"], "sk-l");
    assert_eq!(v["data"]["last4"], "ault");
    let bid = v["data"]["binding"]["id"]
        .as_str()
        .expect("the create also bound it")
        .to_string();

    // In the env of commands in `a`, masked in what they print.
    assert_eq!(stdout(&srv, &a, DIGEST, &[]).await.trim(), sha(VALUE));
    assert_eq!(stdout(&srv, &a, "printenv API_TOKEN", &[]).await, "***\n");
    // A process started there has it too, and its logs are masked.
    let (st, v) = srv
        .call(
            "POST",
            &format!("/sandboxes/{a}/processes"),
            Some(json!({"command": "echo \"token=$API_TOKEN\""})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let pid = v["data"]["pid"].as_u64().expect("pid");
    let logs = wait_until(
        std::time::Duration::from_secs(10),
        "the process's output",
        || async {
            let (_, l) = srv
                .call("GET", &format!("/sandboxes/{a}/processes/{pid}/logs"), None)
                .await;
            l["data"]["stdout"]
                .as_str()
                .is_some_and(|s| s.contains("token="))
                .then_some(l)
        },
    )
    .await;
    assert_eq!(logs["data"]["stdout"], "token=***\n", "{logs}");
    // Not in `b`, which it is not bound to.
    assert_eq!(stdout(&srv, &b, DIGEST, &[]).await.trim(), "-");
    // Not in the sandbox's env, nor any answer, nor its events.
    let (_, env) = srv.call("GET", &format!("/sandboxes/{a}/env"), None).await;
    assert!(!env.to_string().contains(VALUE), "{env}");
    assert!(env.to_string().contains("PLAIN"), "{env}");
    for path in [
        format!("/sandboxes/{a}"),
        "/egress/secrets".into(),
        format!("/egress/secrets/{sid}"),
        format!("/egress/bindings?resource_id={a}"),
    ] {
        let (st, v) = srv.call("GET", &path, None).await;
        assert_eq!(st, 200, "{path}: {v}");
        assert!(!v.to_string().contains(VALUE), "{path}: {v}");
    }
    let events = srv
        .client
        .get(srv.url(&format!("/api/v1/sandboxes/{a}/events")))
        .header("accept", "application/json")
        .send()
        .await
        .expect("events")
        .text()
        .await
        .expect("text");
    assert!(events.contains("sandbox.exec"), "{events}");
    assert!(!events.contains(VALUE), "events hold no value");

    // Rotation: the next command gets the new value.
    let (st, v) = srv
        .call(
            "PATCH",
            &format!("/egress/secrets/{sid}"),
            Some(json!({"value": ROTATED})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert!(v["data"]["rotated_at"].is_string(), "{v}");
    assert!(!v.to_string().contains(ROTATED), "{v}");
    assert_eq!(stdout(&srv, &a, DIGEST, &[]).await.trim(), sha(ROTATED));

    // Nothing of either value at rest in the data directory.
    for (path, bytes) in files_under(srv.dir.path()) {
        for v in [VALUE, ROTATED] {
            assert!(
                !contains(&bytes, v),
                "{} holds a secret value",
                path.display()
            );
        }
    }

    // Unbinding: the next command no longer has it.
    let (st, v) = srv
        .call("DELETE", &format!("/egress/bindings/{bid}"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(stdout(&srv, &a, DIGEST, &[]).await.trim(), "-");

    // Per call: named, it reaches that call only (as its expose_as_env).
    assert_eq!(
        stdout(&srv, &b, DIGEST, &["openai"]).await.trim(),
        sha(ROTATED)
    );
    assert_eq!(stdout(&srv, &b, DIGEST, &[]).await.trim(), "-");
    let (st, v) = run(&srv, &b, "true", &["nope"]).await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["error"]["details"][0]["field"], "secrets[0]", "{v}");

    // Bound again through /egress/bindings, then the secret deleted: its
    // bindings go with it.
    let (st, v) = srv
        .call(
            "POST",
            "/egress/bindings",
            Some(json!({"secret_id": sid, "resource_id": b, "resource_type": "sandbox", "expose_as_env": "API_TOKEN"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(stdout(&srv, &b, DIGEST, &[]).await.trim(), sha(ROTATED));
    let (st, v) = srv
        .call(
            "POST",
            "/egress/bindings",
            Some(json!({"secret_id": sid, "resource_id": b, "expose_as_env": "API_TOKEN"})),
        )
        .await;
    assert_eq!(st, 409, "one variable, one binding: {v}");
    let (st, _) = srv
        .call("DELETE", &format!("/egress/secrets/{sid}"), None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(stdout(&srv, &b, DIGEST, &[]).await.trim(), "-");
    let (_, v) = srv.call("GET", "/egress/bindings", None).await;
    assert_eq!(v["data"], json!([]), "{v}");
}

#[tokio::test]
async fn another_tenant_cannot_see_bind_or_use_a_secret() {
    let srv = TestServer::start().await;
    let (st, v) = srv
        .call(
            "POST",
            "/egress/secrets",
            Some(json!({"name": "mine", "value": VALUE, "expose_as_env": "API_TOKEN"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let sid = v["data"]["id"].as_str().expect("id").to_string();

    let other = srv.stranger().await;
    let (st, sbx) = srv
        .call_as(&other, "POST", "/sandboxes", Some(json!({})))
        .await;
    assert_eq!(st, 201, "{sbx}");
    let theirs = sbx["data"]["id"].as_str().expect("id").to_string();

    for (method, path, body) in [
        ("GET", format!("/egress/secrets/{sid}"), None),
        (
            "PATCH",
            format!("/egress/secrets/{sid}"),
            Some(json!({"value": "stolen-value"})),
        ),
        ("DELETE", format!("/egress/secrets/{sid}"), None),
        (
            "POST",
            "/egress/bindings".to_string(),
            Some(json!({"secret_id": sid, "resource_id": theirs, "expose_as_env": "X"})),
        ),
    ] {
        let (st, v) = srv.call_as(&other, method, &path, body).await;
        assert_eq!(st, 404, "{method} {path}: {v}");
    }
    let (_, v) = srv.call_as(&other, "GET", "/egress/secrets", None).await;
    assert_eq!(v["data"], json!([]), "{v}");
    // Naming it in a call finds nothing of theirs.
    let (st, v) = srv
        .call_as(
            &other,
            "POST",
            &format!("/sandboxes/{theirs}/exec"),
            Some(json!({"command": "true", "secrets": ["mine"]})),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    // Nor can the owner bind it into the other tenant's sandbox.
    let (st, v) = srv
        .call(
            "POST",
            "/egress/bindings",
            Some(json!({"secret_id": sid, "resource_id": theirs, "expose_as_env": "X"})),
        )
        .await;
    assert_eq!(st, 404, "{v}");
    // The owner's secret is untouched.
    let (st, v) = srv
        .call("GET", &format!("/egress/secrets/{sid}"), None)
        .await;
    assert_eq!((st, v["data"]["rotated_at"].clone()), (200, Value::Null));
}

#[tokio::test]
async fn bad_secret_bodies_get_a_422_naming_the_field() {
    let srv = TestServer::start().await;
    for (body, field) in [
        (json!({"value": "v"}), "name"),
        (json!({"name": "bad name", "value": "v"}), "name"),
        (json!({"name": "n"}), "value"),
        (
            json!({"name": "n", "value": "x".repeat(65 * 1024)}),
            "value",
        ),
        (json!({"name": "n", "value": "v", "type": "weird"}), "type"),
        (
            json!({"name": "n", "value": "v", "expose_as_env": "1BAD"}),
            "expose_as_env",
        ),
        (
            json!({"name": "n", "value": "v", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"name": "n", "value": "v", "resource_id": "sbx_x", "resource_type": "vm"}),
            "resource_type",
        ),
    ] {
        let (st, v) = srv
            .call("POST", "/egress/secrets", Some(body.clone()))
            .await;
        assert_eq!(st, 422, "{body}: {v}");
        assert_eq!(v["error"]["details"][0]["field"], field, "{body}: {v}");
    }
    // A name is unique in the tenant.
    let ok = json!({"name": "dup", "value": "v1"});
    assert_eq!(
        srv.call("POST", "/egress/secrets", Some(ok.clone()))
            .await
            .0,
        201
    );
    assert_eq!(srv.call("POST", "/egress/secrets", Some(ok)).await.0, 409);
    // Binding to a sandbox that does not exist: 404, and nothing is left.
    let (st, v) = srv
        .call(
            "POST",
            "/egress/secrets",
            Some(json!({"name": "orphan", "value": "v", "expose_as_env": "A", "resource_id": "sbx_nope"})),
        )
        .await;
    assert_eq!(st, 404, "{v}");
    let (_, v) = srv.call("GET", "/egress/secrets", None).await;
    let names: Vec<&str> = v["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["dup"]);
}
