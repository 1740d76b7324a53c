//! The real `hearth serve` on the PostgreSQL store (`HEARTH_DATABASE_URL`,
//! a schema of its own on the test server) with real QEMU VMs: create,
//! exec, nothing written to a SQLite file, `kill -9` of the server and
//! re-adoption of the running VM from what PostgreSQL holds; two nodes on
//! one database, one killed: the other finds it lost and its sandbox in
//! `error`, and the node, back, re-adopts the VM that ran on. Three nodes
//! as one API: creates spread, every kind of request through a node that
//! does not run the sandbox, a paused sandbox moved off a draining node
//! with its memory, and `kill -9` of one node leaving the others be.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn build_images() {
    for target in ["initramfs", "minimal"] {
        let built = std::process::Command::new(HEARTH)
            .args(["image", "build", target, "--data-dir"])
            .arg(images_dir())
            .status()
            .expect("hearth image build");
        assert!(built.success(), "hearth image build {target} failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs and needs PostgreSQL (HEARTH_TEST_DATABASE_URL); scripts/test provides both"]
async fn serve_on_postgres_creates_execs_and_readopts_after_kill9() {
    let tmp = tempfile::tempdir().expect("tmp");
    build_images();
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
    // Nodes share one sealing key (they sign what they send each other).
    let key = data.join("secrets.key").to_string_lossy().to_string();
    let env = [
        ("HEARTH_DATABASE_URL", url.as_str()),
        ("HEARTH_CONFIG", conf.as_str()),
        ("HEARTH_SECRETS_KEY_FILE", key.as_str()),
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

fn api_of(server: &Server, key: &str) -> Api {
    Api {
        c: reqwest::Client::new(),
        base: server.base.clone(),
        key: key.to_string(),
    }
}

/// `/tmp/count` in the guest: what the counting loop wrote last.
async fn count(api: &Api, id: &str) -> u64 {
    let out = api.exec(id, "cat /tmp/count").await;
    out["stdout"]
        .as_str()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs and needs PostgreSQL (HEARTH_TEST_DATABASE_URL); scripts/test provides both"]
async fn three_nodes_answer_as_one_api_on_real_vms() {
    let tmp = tempfile::tempdir().expect("tmp");
    build_images();
    let url = hearth_test_support::postgres::schema_url()
        .await
        .expect("a PostgreSQL schema");
    // Two 1-vCPU sandboxes per node at most, so that creates spread; fast
    // heartbeats, so that a killed node is lost in seconds.
    let conf = tmp.path().join("cluster.toml");
    std::fs::write(
        &conf,
        "[cluster]\nheartbeat_ms = 200\nlost_after_ms = 3000\nvcpus = 2\n\
         cpu_overcommit_percent = 100\nreplicate_paused = true\n",
    )
    .expect("conf");
    let conf = conf.to_string_lossy().to_string();
    let key_file = tmp.path().join("cluster.key").to_string_lossy().to_string();
    let names = ["a", "b", "c"];
    let labels: Vec<String> = names.iter().map(|n| format!("region={n}")).collect();
    let env = |i: usize| {
        [
            ("HEARTH_DATABASE_URL", url.as_str()),
            ("HEARTH_CONFIG", conf.as_str()),
            ("HEARTH_SECRETS_KEY_FILE", key_file.as_str()),
            ("HEARTH_NODE_LABELS", labels[i].as_str()),
        ]
    };
    let dirs: Vec<_> = names.iter().map(|n| tmp.path().join(n)).collect();
    let mut servers = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let s = Server::start_with_env(dir, free_port(), &env(i));
        s.wait_healthy().await;
        servers.push(s);
    }
    let key = std::fs::read_to_string(dirs[0].join("admin.key"))
        .expect("admin key")
        .trim()
        .to_string();
    let apis: Vec<Api> = servers.iter().map(|s| api_of(s, &key)).collect();
    let (_, v) = apis[0].call("GET", "/nodes", None).await;
    let node_ids: Vec<String> = v["data"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["state"] == "active")
        .map(|n| n["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(node_ids.len(), 3, "{v}");

    // Three creates through A: one on each node.
    let mut placed = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let (st, v) = apis[0]
            .call(
                "POST",
                "/sandboxes",
                Some(json!({"template_id": "minimal", "cpu_count": 1, "memory_mb": 256, "timeout_sec": 900})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        eprintln!(
            "create through A -> {} in {} ms",
            v["data"]["node_id"],
            started.elapsed().as_millis()
        );
        placed.push((
            v["data"]["id"].as_str().expect("id").to_string(),
            v["data"]["node_id"].as_str().expect("node").to_string(),
        ));
    }
    let mut on: Vec<&str> = placed.iter().map(|(_, n)| n.as_str()).collect();
    on.sort();
    on.dedup();
    assert_eq!(on.len(), 3, "creates did not spread: {placed:?}");
    let index_of = |node: &str| {
        let dir = |i: usize| std::fs::read_to_string(dirs[i].join("node.id")).expect("node.id");
        (0..3)
            .find(|&i| dir(i).trim() == node)
            .expect("a node of ours")
    };
    // The sandbox B runs, worked through A.
    let (id, b_node) = placed
        .iter()
        .find(|(_, n)| index_of(n) == 1)
        .cloned()
        .expect("one on B");
    let a = &apis[0];
    let started = Instant::now();
    assert_eq!(a.exec(&id, "echo via-a").await["stdout"], "via-a\n");
    eprintln!(
        "exec through A on B's sandbox: {} ms",
        started.elapsed().as_millis()
    );
    let (st, v) = a
        .call(
            "POST",
            &format!("/sandboxes/{id}/files"),
            Some(json!({"path": "/workspace/www/index.html", "content": "aGVsbG8tZnJvbS1i"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        apis[1].exec(&id, "cat /workspace/www/index.html").await["stdout"],
        "hello-from-b"
    );
    // A process and its logs.
    let (st, v) = a
        .call(
            "POST",
            &format!("/sandboxes/{id}/processes"),
            Some(json!({"command": "busybox httpd -f -p 8080 -h /workspace/www"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (st, _) = a
        .call("GET", &format!("/sandboxes/{id}/processes"), None)
        .await;
    assert_eq!(st, 200);
    // A terminal's WebSocket.
    let (st, v) = a
        .call(
            "POST",
            &format!("/sandboxes/{id}/terminals"),
            Some(json!({"cols": 80, "rows": 24})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let tid = v["data"]["id"].as_str().expect("terminal");
    let ws_url = format!("{}/api/v1/sandboxes/{id}/terminals/{tid}/ws", a.base)
        .replacen("http://", "ws://", 1);
    let mut req = ws_url.into_client_request().expect("ws request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("terminal through A");
    ws.send(Message::binary(b"echo $((6*7))-on-b\n".to_vec()))
        .await
        .expect("send");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(b) = m {
                out.push_str(&String::from_utf8_lossy(&b));
                if out.contains("42-on-b") {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("terminal output through A: {out:?}"));
    drop(ws);
    // A preview, through A's proxy.
    let (st, p) = a
        .call(
            "POST",
            &format!("/sandboxes/{id}/previews"),
            Some(json!({"port": 8080, "visibility": "public"})),
        )
        .await;
    assert_eq!(st, 201, "{p}");
    let host = p["data"]["url"]
        .as_str()
        .expect("url")
        .trim_start_matches("http://")
        .split(':')
        .next()
        .expect("host")
        .to_string();
    let proxy_a = std::net::SocketAddr::from(([127, 0, 0, 1], servers[0].preview_port));
    let web = reqwest::Client::builder()
        .resolve(&host, proxy_a)
        .build()
        .expect("client");
    let page = format!("http://{host}:{}/", servers[0].preview_port);
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let r = web.get(&page).send().await.expect("preview through A");
        if r.status() == 200 {
            break r.text().await.expect("body");
        }
        assert!(
            Instant::now() < deadline,
            "preview never served: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(body, "hello-from-b");

    // Pause on B, B drains, resume through C: the sandbox lands elsewhere
    // with its file and a counter that kept its memory.
    let (st, v) = a
        .call(
            "POST",
            &format!("/sandboxes/{id}/processes"),
            Some(json!({"command": "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c0 = count(a, &id).await;
    let (st, v) = apis[2]
        .call("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    assert_eq!(
        (st, v["data"]["state"].as_str()),
        (200, Some("paused")),
        "{v}"
    );
    let (st, v) = a
        .call("POST", &format!("/nodes/{b_node}/drain"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    let started = Instant::now();
    let (st, v) = apis[2]
        .call("POST", &format!("/sandboxes/{id}/resume"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    eprintln!(
        "resume on a draining node, moved to {}: {} ms",
        v["data"]["node_id"],
        started.elapsed().as_millis()
    );
    let now_on = v["data"]["node_id"].as_str().expect("node").to_string();
    assert_ne!(now_on, b_node, "it must leave the draining node");
    assert_eq!(v["data"]["state"], "running");
    assert_eq!(
        a.exec(&id, "cat /workspace/www/index.html").await["stdout"],
        "hello-from-b"
    );
    let c1 = count(a, &id).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let c2 = count(a, &id).await;
    assert!(
        c0 >= 5 && c1 >= c0 && c2 > c1,
        "the counter restarted or stopped: {c0} before the pause, then {c1}, {c2}"
    );
    // A fork asked of B (which no longer runs the sandbox) has its file.
    let started = Instant::now();
    let (st, v) = apis[1]
        .call("POST", &format!("/sandboxes/{id}/fork"), None)
        .await;
    assert_eq!(st, 201, "{v}");
    eprintln!(
        "fork through B of the moved sandbox, on {}: {} ms",
        v["data"]["node_id"],
        started.elapsed().as_millis()
    );
    let fork = v["data"]["id"].as_str().expect("fork id").to_string();
    assert_eq!(
        apis[1].exec(&fork, "cat /workspace/www/index.html").await["stdout"],
        "hello-from-b"
    );
    let (st, _) = apis[1]
        .call("DELETE", &format!("/sandboxes/{fork}"), None)
        .await;
    assert_eq!(st, 200);

    // kill -9 of the node that runs the sandbox created on it but not the
    // moved one: that sandbox goes to error within the bound, the moved
    // one runs on; the node, back, re-adopts its VM.
    let home = index_of(&now_on);
    let victim = if home == 0 { 2 } else { 0 };
    let via = &apis[home];
    let (lost_id, _) = placed
        .iter()
        .find(|(_, n)| index_of(n) == victim)
        .cloned()
        .expect("one on the victim");
    // A second sandbox on the victim, paused: its snapshot is copied to
    // another node (replicate_paused), where it resumes once the victim
    // is lost.
    let (st, v) = via
        .call(
            "POST",
            "/sandboxes",
            Some(json!({"template_id": "minimal", "cpu_count": 1, "memory_mb": 256, "timeout_sec": 900, "region": names[victim]})),
        )
        .await;
    assert_eq!(
        (st, v["data"]["node_id"].as_str().map(index_of)),
        (201, Some(victim)),
        "{v}"
    );
    let paused_id = v["data"]["id"].as_str().expect("id").to_string();
    let (st, v) = via
        .call(
            "POST",
            &format!("/sandboxes/{paused_id}/processes"),
            Some(json!({"command": "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p0 = count(via, &paused_id).await;
    let (st, v) = via
        .call("POST", &format!("/sandboxes/{paused_id}/pause"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    let copied = Instant::now();
    let replica_dir = loop {
        let found = dirs
            .iter()
            .map(|d| d.join("replicas").join(&paused_id))
            .find(|p| p.exists());
        if let Some(p) = found {
            break p;
        }
        assert!(
            copied.elapsed() < Duration::from_secs(60),
            "no copy of the paused snapshot"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "paused snapshot copied to {} within {} ms",
        replica_dir.display(),
        copied.elapsed().as_millis()
    );
    // Recorded (in the shared database) just after the copy lands.
    {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&url).await.expect("connect");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let holder: Option<String> =
                sqlx::query_scalar("SELECT node_id FROM replicas WHERE sandbox_id = $1")
                    .bind(&paused_id)
                    .fetch_optional(&mut db)
                    .await
                    .expect("replicas");
            if holder.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "the copy was never recorded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let port = servers[victim]
        .base
        .rsplit(':')
        .next()
        .expect("port")
        .parse()
        .expect("port");
    servers[victim].kill9();
    let killed = Instant::now();
    via.wait_state(&lost_id, "error", Duration::from_secs(30))
        .await;
    assert!(qemu_running_for(&lost_id), "the lost node's VM runs on");
    eprintln!(
        "node {victim} lost -> its sandbox in error after {} ms (lost_after_ms 3000, heartbeat 200)",
        killed.elapsed().as_millis()
    );
    assert_eq!(
        via.exec(&id, "echo unaffected").await["stdout"],
        "unaffected\n"
    );
    let started = Instant::now();
    let (st, v) = via
        .call("POST", &format!("/sandboxes/{paused_id}/resume"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    eprintln!(
        "the lost node's paused sandbox resumed from its copy on {} in {} ms",
        v["data"]["node_id"],
        started.elapsed().as_millis()
    );
    assert_ne!(v["data"]["node_id"].as_str().map(index_of), Some(victim));
    let p1 = count(via, &paused_id).await;
    assert!(
        p0 >= 5 && p1 >= p0,
        "the copy lost its memory: {p0} then {p1}"
    );
    // The killed `Server` stays alive to the end: dropping it would kill
    // the VMs of its data directory, which the new one must re-adopt.
    let restarted = Server::start_with_env(&dirs[victim], port, &env(victim));
    let killed_server = std::mem::replace(&mut servers[victim], restarted);
    servers[victim].wait_healthy().await;
    via.wait_state(&lost_id, "running", Duration::from_secs(60))
        .await;
    assert_eq!(via.exec(&lost_id, "echo back").await["stdout"], "back\n");

    for (sid, _) in &placed {
        via.call("DELETE", &format!("/sandboxes/{sid}"), None).await;
    }
    via.call("DELETE", &format!("/sandboxes/{paused_id}"), None)
        .await;
    for mut s in servers {
        s.term();
    }
    drop(killed_server);
    for d in &dirs {
        kill_vms(d);
    }
}
