//! `/sandboxes/{id}/network-policy` and `network.policy` at create, on the
//! server with agent processes for VMs: what is stored, what each VM was
//! started with and changed to (the fake driver records it), bad rules,
//! tenants, pause/resume and fork. The real filtering is tested on real VMs
//! in `hearth-vmm`'s `isolation` tests and the CLI's `serve_vm`.

mod common;

use common::TestServer;
use serde_json::{json, Value};

fn in_force(srv: &TestServer, id: &str) -> Option<Value> {
    srv.knobs
        .policies
        .lock()
        .expect("policies")
        .get(id)
        .cloned()
        .map(|p| serde_json::to_value(p).expect("policy json"))
}

fn deny_but_api() -> Value {
    json!({
        "default_effect": "deny",
        "rules": [{"effect": "allow", "destination": "api.example.com", "ports": "443", "protocol": "tcp"}]
    })
}

#[tokio::test]
async fn a_policy_given_at_create_is_stored_and_the_vm_starts_with_it() {
    let srv = TestServer::start().await;
    let sbx = srv
        .create_sandbox(json!({"network": {"policy": deny_but_api()}}))
        .await;
    let id = sbx["id"].as_str().expect("id");
    assert_eq!(sbx["network"], json!({"egress": true}));
    let (st, v) = srv
        .call("GET", &format!("/sandboxes/{id}/network-policy"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["sandbox_id"], json!(id));
    assert_eq!(v["data"]["default_effect"], "deny");
    assert_eq!(v["data"]["rules"], deny_but_api()["rules"]);
    assert!(v["data"]["updated_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(in_force(&srv, id), Some(deny_but_api()));
}

#[tokio::test]
async fn put_replaces_the_policy_of_the_running_vm_and_delete_removes_it() {
    let srv = TestServer::start().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("id");
    let path = format!("/sandboxes/{id}/network-policy");
    let (_, v) = srv.call("GET", &path, None).await;
    assert_eq!(v["data"]["default_effect"], "allow");
    assert_eq!(v["data"]["rules"], json!([]));
    assert_eq!(in_force(&srv, id), Some(Value::Null));

    let (st, v) = srv.call("PUT", &path, Some(deny_but_api())).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["default_effect"], "deny");
    assert_eq!(in_force(&srv, id), Some(deny_but_api()), "applied live");
    let events: Value = srv
        .client
        .get(srv.url(&format!("/api/v1/sandboxes/{id}/events")))
        .header("accept", "application/json")
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("events json");
    assert!(
        events["data"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["type"] == "sandbox.network_policy_updated"),
        "{events}"
    );

    let (st, v) = srv.call("DELETE", &path, None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["default_effect"], "allow");
    assert_eq!(v["data"]["rules"], json!([]));
    assert_eq!(in_force(&srv, id), Some(Value::Null));
}

#[tokio::test]
async fn bad_rules_are_422_naming_each_field() {
    let srv = TestServer::start().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("id");
    let bad = json!({"default_effect": "deny", "rules": [
        {"effect": "allow", "destination": "not a host!"},
        {"effect": "allow", "destination": "1.2.3.4", "ports": "90-80"},
        {"effect": "allow", "destination": "192.168.1.0/24"},
    ]});
    let (st, v) = srv
        .call(
            "PUT",
            &format!("/sandboxes/{id}/network-policy"),
            Some(bad.clone()),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    let fields: Vec<&str> = v["error"]["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["field"].as_str().expect("field"))
        .collect();
    assert_eq!(
        fields,
        [
            "rules[0].destination",
            "rules[1].ports",
            "rules[2].destination"
        ],
        "{v}"
    );
    assert_eq!(in_force(&srv, id), Some(Value::Null), "nothing applied");

    // A shape error (unknown effect) is a 422 too.
    let (st, _) = srv
        .call(
            "PUT",
            &format!("/sandboxes/{id}/network-policy"),
            Some(json!({"default_effect": "maybe"})),
        )
        .await;
    assert_eq!(st, 422);

    // At create, under `network.policy`.
    let (st, v) = srv
        .call(
            "POST",
            "/sandboxes",
            Some(json!({"template_id": "minimal", "network": {"policy": bad}})),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(
        v["error"]["details"][0]["field"],
        "network.policy.rules[0].destination"
    );
}

#[tokio::test]
async fn another_tenant_sees_no_policy_and_changes_none() {
    let srv = TestServer::start().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("id");
    let other = srv.stranger().await;
    let url = srv.url(&format!("/api/v1/sandboxes/{id}/network-policy"));
    assert_eq!(other.get(&url).send().await.expect("get").status(), 404);
    let put = other
        .put(&url)
        .json(&json!({"default_effect": "allow"}))
        .send();
    assert_eq!(put.await.expect("put").status(), 404);
    assert_eq!(
        other.delete(&url).send().await.expect("delete").status(),
        404
    );
    assert_eq!(in_force(&srv, id), Some(Value::Null));
}

#[tokio::test]
async fn the_policy_survives_pause_and_resume_and_forks_inherit_it() {
    let srv = TestServer::start().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("id");
    let path = format!("/sandboxes/{id}/network-policy");
    let (st, _) = srv
        .call("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    assert_eq!(st, 200);
    // Changed while paused: stored, and the resumed VM starts with it.
    let (st, v) = srv.call("PUT", &path, Some(deny_but_api())).await;
    assert_eq!(st, 200, "{v}");
    srv.knobs.policies.lock().expect("policies").remove(id);
    let (st, v) = srv
        .call("POST", &format!("/sandboxes/{id}/resume"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(in_force(&srv, id), Some(deny_but_api()));

    let (st, v) = srv
        .call("POST", &format!("/sandboxes/{id}/fork"), Some(json!({})))
        .await;
    assert_eq!(st, 201, "{v}");
    let child = v["data"]["id"].as_str().expect("fork id").to_string();
    assert_eq!(in_force(&srv, &child), Some(deny_but_api()));
    let (_, v) = srv
        .call("GET", &format!("/sandboxes/{child}/network-policy"), None)
        .await;
    assert_eq!(v["data"]["rules"], deny_but_api()["rules"]);

    // A destroyed sandbox's policy can be read, not changed.
    let (st, _) = srv.call("DELETE", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(st, 200);
    let (st, v) = srv.call("PUT", &path, Some(deny_but_api())).await;
    assert_eq!(st, 409, "{v}");
    let (st, _) = srv.call("GET", &path, None).await;
    assert_eq!(st, 200);
}
