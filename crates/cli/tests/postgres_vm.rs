//! The real `hearth serve` on the PostgreSQL store (`HEARTH_DATABASE_URL`,
//! a schema of its own on the test server) with real QEMU VMs: create,
//! exec, nothing written to a SQLite file, `kill -9` of the server and
//! re-adoption of the running VM from what PostgreSQL holds.

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
    let (st, v) = api.call("DELETE", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(st, 200, "{v}");
    server.term();
    kill_vms(&data);
}
