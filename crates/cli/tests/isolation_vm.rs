//! The jail through the real `hearth serve` binary and real VMs: a guest
//! cannot reach the server's own API, its egress policy (given at create,
//! changed over the API) holds live and survives a `kill -9` of the server
//! and re-adoption, and a fork inherits it. Targets are the stand-ins of
//! [`NetLab`], checked to answer from the host first.

mod common;

use std::time::Duration;

use common::*;
use hearth_test_support::netlab::{self, NetLab};
use serde_json::{json, Value};

/// What `nc` read from `addr:port` inside the guest (empty: nothing).
async fn reach(api: &Api, id: &str, addr: &str, port: u16) -> String {
    let r = api
        .exec(
            id,
            &format!("echo ping | nc -w 3 {addr} {port} 2>/dev/null | head -c 100"),
        )
        .await;
    r["stdout"].as_str().unwrap_or("").trim().to_string()
}

fn vmm_uid(id: &str) -> u32 {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("sandboxes/{id}/")])
        .output()
        .expect("pgrep");
    let pid = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .expect("a vmm runs")
        .trim()
        .to_string();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("effective uid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
async fn egress_policy_holds_live_across_a_server_kill_and_into_forks() {
    let _lab = NetLab::up().expect("stand-in network");
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut server, api) = fresh_server(tmp.path()).await;
    let data = tmp.path().join("data");
    let port: u16 = api
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let internet = netlab::INTERNET.to_string();
    let world = format!("world {internet}");

    let deny = json!({"default_effect": "deny", "rules": []});
    let (st, v) = api
        .call(
            "POST",
            "/sandboxes",
            Some(json!({"template_id": "minimal", "network": {"policy": deny}})),
        )
        .await;
    assert_eq!(st, 201, "{v}\n{}", server.log());
    let id = v["data"]["id"].as_str().expect("id").to_string();
    assert_ne!(vmm_uid(&id), 0, "the VMM does not run as root");

    // The server's own API, through the user-mode gateway: never.
    assert_eq!(reach(&api, &id, "10.0.2.2", port).await, "");
    // Denied by its policy.
    assert_eq!(reach(&api, &id, &internet, netlab::HELLO_PORT).await, "");

    // Allowed, live, on the same VM.
    let allow = json!({"default_effect": "deny", "rules": [
        {"effect": "allow", "destination": format!("{internet}/32"), "ports": "8080", "protocol": "tcp"}
    ]});
    let (st, v) = api
        .call(
            "PUT",
            &format!("/sandboxes/{id}/network-policy"),
            Some(allow.clone()),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(reach(&api, &id, &internet, netlab::HELLO_PORT).await, world);
    assert_eq!(
        reach(&api, &id, &internet, netlab::BULK_PORT).await,
        "",
        "only the allowed port"
    );

    // kill -9 the server; the re-adopted VM keeps its policy, and a change
    // still applies live.
    server.kill9();
    let (server2, api) = started(&data).await;
    let (_, v) = api.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(v["data"]["state"], "running", "{v}\n{}", server2.log());
    let (_, v) = api
        .call("GET", &format!("/sandboxes/{id}/network-policy"), None)
        .await;
    assert_eq!(v["data"]["rules"], allow["rules"]);
    assert_eq!(reach(&api, &id, &internet, netlab::HELLO_PORT).await, world);
    assert_eq!(reach(&api, &id, &internet, netlab::BULK_PORT).await, "");
    let (st, _) = api
        .call("DELETE", &format!("/sandboxes/{id}/network-policy"), None)
        .await;
    assert_eq!(st, 200);
    assert_ne!(reach(&api, &id, &internet, netlab::BULK_PORT).await, "");

    // A fork inherits the policy in force.
    let (st, _) = api
        .call(
            "PUT",
            &format!("/sandboxes/{id}/network-policy"),
            Some(deny_all()),
        )
        .await;
    assert_eq!(st, 200);
    let (st, v) = api
        .call("POST", &format!("/sandboxes/{id}/fork"), Some(json!({})))
        .await;
    assert_eq!(st, 201, "{v}\n{}", server2.log());
    let child = v["data"]["id"].as_str().expect("fork id").to_string();
    let child = api
        .wait_state(&child, "running", Duration::from_secs(120))
        .await["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(reach(&api, &child, &internet, netlab::HELLO_PORT).await, "");

    for sbx in [&id, &child] {
        let (st, _) = api.call("DELETE", &format!("/sandboxes/{sbx}"), None).await;
        assert_eq!(st, 200);
    }
    drop(server2);
    kill_vms(&data);
}

fn deny_all() -> Value {
    json!({"default_effect": "deny"})
}
