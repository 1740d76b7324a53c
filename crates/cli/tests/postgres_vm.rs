//! The real `hearth serve` on the PostgreSQL store (`HEARTH_DATABASE_URL`,
//! a schema of its own on the test server) with real QEMU VMs: create,
//! exec, nothing written to a SQLite file, `kill -9` of the server and
//! re-adoption of the running VM from what PostgreSQL holds; two nodes on
//! one database, one killed: the other finds it lost and its sandbox in
//! `error`, and the node, back, re-adopts the VM that ran on.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs and needs PostgreSQL (HEARTH_TEST_DATABASE_URL); scripts/test provides both"]
async fn serve_on_postgres_creates_execs_and_readopts_after_kill9() {
    let tmp = tempfile::tempdir().expect("tmp");
    for target in ["initramfs", "minimal"] {
        let built = std::process::Command::new(HEARTH)
            .args(["image", "build", target, "--data-dir"])
            .arg(images_dir())
            .status()
            .expect("hearth image build");
        assert!(built.success(), "hearth image build {target} failed");
    }
    let url = hearth_test_support::postgres::schema_url()
        .await
        .expect("a PostgreSQL schema");
    let data = tmp.path().join("data");
    let env = [("HEARTH_DATABASE_URL", url.as_str())];
    let start = |port| Server::start_with_env(&data, port, &env);
    let port = free_port();
    let mut server = start(port);
    server.wait_healthy().await;
    let key = std::fs::read_to_string(data.join("admin.key"))
        .expect("admin key")
        .trim()
        .to_string();
    let api = Api {
        c: reqwest::Client::new(),
        base: server.base.clone(),
        key,
    };
    let id = api
        .create(
            json!({"template_id": "minimal", "timeout_sec": 600}),
            &server,
        )
        .await;
    assert_eq!(
        api.exec(&id, "echo on-postgres").await["stdout"],
        "on-postgres\n"
    );
    assert!(
        !data.join("hearth.db").exists(),
        "the PostgreSQL store writes no SQLite file"
    );
    // What the server knows is in PostgreSQL.
    let state: String = {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&url).await.expect("connect");
        sqlx::query_scalar("SELECT state FROM sandboxes WHERE id = $1")
            .bind(&id)
            .fetch_one(&mut db)
            .await
            .expect("the sandbox's row")
    };
    assert_eq!(state, "running");

    // kill -9, start again: the VM is re-adopted from the database's record.
    server.kill9();
    let mut server = start(port);
    server.wait_healthy().await;
    let sbx = api
        .wait_state(&id, "running", Duration::from_secs(60))
        .await;
    assert_eq!(sbx["id"], id.as_str());
    assert_eq!(
        api.exec(&id, "echo still-here").await["stdout"],
        "still-here\n"
    );

    // A second node on the same database (its own data directory and
    // ports), both beating fast so that a silent one is lost in seconds.
    let conf = tmp.path().join("cluster.toml");
    std::fs::write(
        &conf,
        "[cluster]\nheartbeat_ms = 200\nlost_after_ms = 2000\n",
    )
    .expect("conf");
    let conf = conf.to_string_lossy().to_string();
    let env = [
        ("HEARTH_DATABASE_URL", url.as_str()),
        ("HEARTH_CONFIG", conf.as_str()),
    ];
    server.term();
    let mut a = Server::start_with_env(&data, port, &env);
    a.wait_healthy().await;
    let data_b = tmp.path().join("data-b");
    let mut b = Server::start_with_env(&data_b, free_port(), &env);
    b.wait_healthy().await;
    let via_b = Api {
        c: reqwest::Client::new(),
        base: b.base.clone(),
        key: api.key.clone(),
    };
    let (st, v) = via_b.call("GET", "/nodes", None).await;
    assert_eq!(st, 200, "{v}");
    let nodes = v["data"].as_array().expect("nodes").clone();
    let active: Vec<&str> = nodes
        .iter()
        .filter(|n| n["state"] == "active")
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert_eq!(active.len(), 2, "{v}");
    // B answers for A's sandbox from the shared store.
    let (st, v) = via_b.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(st, 200, "{v}");
    let a_id = v["data"]["node_id"].as_str().expect("node_id").to_string();
    assert!(active.contains(&a_id.as_str()), "{a_id} in {active:?}");

    // A dies: B finds it lost and puts its running sandbox in error.
    a.kill9();
    let killed = std::time::Instant::now();
    let lost = via_b
        .wait_state(&id, "error", Duration::from_secs(30))
        .await;
    eprintln!(
        "node lost -> sandbox in error after {} ms",
        killed.elapsed().as_millis()
    );
    let why = lost["metadata"]["last_error"].as_str().expect("last_error");
    assert!(why.contains(&a_id), "{why}");

    // A comes back: it re-adopts the VM that ran on.
    let a = Server::start_with_env(&data, port, &env);
    a.wait_healthy().await;
    api.wait_state(&id, "running", Duration::from_secs(60))
        .await;
    assert_eq!(api.exec(&id, "echo back").await["stdout"], "back\n");
    let (st, v) = api.call("DELETE", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(st, 200, "{v}");
    drop(a);
    b.term();
    kill_vms(&data);
}
