//! Nodes through the API (fake VMM): every server sharing the store
//! registers with its capacity and heartbeats; `GET /nodes` lists them
//! with their load (admin keys only); drain and undrain; a server that
//! stops beating is found lost and what it ran goes to `error`, naming it.

mod common;

use std::time::Duration;

use common::{wait_until, TestServer};
use hearth_server::ServerConfig;
use serde_json::{json, Value};

/// Fast heartbeats, so that a silent node is lost within a second.
fn fast(c: &mut ServerConfig) {
    c.cluster.heartbeat_ms = 100;
    c.cluster.lost_after_ms = 600;
}

async fn nodes(srv: &TestServer) -> Vec<Value> {
    let (st, v) = srv.call("GET", "/nodes", None).await;
    assert_eq!(st, 200, "{v}");
    v["data"].as_array().expect("a list").clone()
}

#[tokio::test]
async fn a_server_is_a_node_and_its_sandboxes_name_it() {
    let srv = TestServer::start_with(|c| {
        c.cluster.labels.insert("region".into(), "eu-test".into());
    })
    .await;
    let listed = nodes(&srv).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let me = &listed[0];
    assert_eq!(
        (me["state"].clone(), me["this_node"].clone()),
        (json!("active"), json!(true))
    );
    assert_eq!(me["labels"]["region"], "eu-test");
    assert!(
        me["capacity"]["vcpus"].as_u64().is_some_and(|v| v > 0),
        "{me}"
    );
    assert!(
        me["capacity"]["memory_mb"].as_u64().is_some_and(|v| v > 0),
        "{me}"
    );
    assert_eq!(me["id"].as_str(), Some(srv.core.node_id()));

    let sbx = srv
        .create_sandbox(json!({"cpu_count": 2, "memory_mb": 512}))
        .await;
    assert_eq!(sbx["node_id"].as_str(), Some(srv.core.node_id()));
    let me = nodes(&srv).await.remove(0);
    assert_eq!(me["load"]["sandboxes"], 1);
    assert_eq!(
        (me["load"]["vcpus"].clone(), me["load"]["memory_mb"].clone()),
        (json!(2), json!(512))
    );

    // Only admin keys see nodes.
    let (_, key) = srv.tenant_key("not-admin").await;
    let c = reqwest::Client::new();
    let resp = c
        .get(srv.url("/api/v1/nodes"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 403);
    // Nor drain one: the node stays active.
    let drain = format!("/api/v1/nodes/{}/drain", srv.core.node_id());
    let resp = c.post(srv.url(&drain)).bearer_auth(&key).send().await;
    assert_eq!(resp.expect("post").status(), 403);
    assert_eq!(nodes(&srv).await[0]["state"], "active");
    // The id stays across restarts: it is kept in the data directory.
    let kept = std::fs::read_to_string(srv.core.data_dir().join("node.id")).expect("node.id");
    assert_eq!(kept.trim(), srv.core.node_id());
}

#[tokio::test]
async fn nodes_drain_and_a_silent_one_is_lost_with_its_sandboxes_in_error() {
    let a = TestServer::start_with(fast).await;
    let b = TestServer::join(&a, |c| {
        fast(c);
        c.cluster.labels.insert("region".into(), "b".into());
    })
    .await;
    let listed = nodes(&a).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let b_id = b.core.node_id().to_string();
    assert_ne!(b_id, a.core.node_id());

    // Drain and undrain, from either node.
    let (st, v) = a.call("POST", &format!("/nodes/{b_id}/drain"), None).await;
    assert_eq!(
        (st, v["data"]["state"].clone()),
        (200, json!("draining")),
        "{v}"
    );
    let (st, v) = b
        .call("POST", &format!("/nodes/{b_id}/undrain"), None)
        .await;
    assert_eq!(
        (st, v["data"]["state"].clone()),
        (200, json!("active")),
        "{v}"
    );
    let (st, _) = a.call("POST", "/nodes/node_nosuch/drain", None).await;
    assert_eq!(st, 404);

    // B runs a sandbox, then falls silent (its heartbeat stops).
    let sbx = b.create_sandbox(json!({"region": "b"})).await;
    let id = sbx["id"].as_str().expect("id").to_string();
    assert_eq!(sbx["node_id"].as_str(), Some(b_id.as_str()));
    b.core.shutdown();
    let rec: Value = wait_until(
        Duration::from_secs(10),
        "B lost, its sandbox in error",
        || async {
            let (st, v) = a.call("GET", &format!("/sandboxes/{id}"), None).await;
            assert_eq!(st, 200, "{v}");
            (v["data"]["state"] == "error").then(|| v["data"].clone())
        },
    )
    .await;
    let why = rec["metadata"]["last_error"].as_str().expect("last_error");
    assert!(why.contains(&b_id), "{why}");
    let state_of_b = nodes(&a)
        .await
        .into_iter()
        .find(|n| n["id"] == b_id.as_str())
        .map(|n| n["state"].clone());
    assert_eq!(state_of_b, Some(json!("lost")));
    let ev: Value = a
        .client
        .get(a.url(&format!("/api/v1/sandboxes/{id}/events")))
        .header("Accept", "application/json")
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("json");
    assert!(
        ev["data"].as_array().is_some_and(|l| l
            .iter()
            .any(|e| e["type"] == "sandbox.error" && e["data"]["node_id"] == b_id.as_str())),
        "{ev}"
    );
    // A drained node that is lost cannot be drained again.
    let (st, _) = a.call("POST", &format!("/nodes/{b_id}/drain"), None).await;
    assert_eq!(st, 409);
}

/// The deployment's instance ids, from the store (any node answers).
async fn instances(srv: &TestServer, dep: &str) -> Vec<String> {
    let mut ids: Vec<String> = srv
        .deployment_instances(dep)
        .await
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn only_the_node_that_runs_a_deployment_supervises_it() {
    let a = TestServer::start().await;
    let (port, _) = common::previews::start_app().await;
    let src = a.create_sandbox(json!({})).await;
    let src = src["id"].as_str().expect("id");
    let body = json!({"name": "web", "port": port, "start_command": "true", "health_check_path": "/healthz"});
    let (st, v) = a
        .call("POST", &format!("/sandboxes/{src}/deploy"), Some(body))
        .await;
    assert_eq!(st, 201, "{v}");
    let dep = v["data"]["deployment"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let before = instances(&a, &dep).await;
    assert_eq!(before.len(), 1);
    // B sees the deployment and its instance in the store, not the VM:
    // it must leave them to A, whatever its supervisor's rounds find.
    let b = TestServer::join(&a, |_| {}).await;
    // Three rounds of the supervisor (it looks every 2 s).
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(instances(&b, &dep).await, before, "B replaced A's instance");
    let (_, rec) = b
        .call("GET", &format!("/sandboxes/{}", before[0]), None)
        .await;
    assert_eq!(rec["data"]["state"], "running", "{rec}");
}
