//! Custom templates on the real `hearth serve` with real QEMU VMs: a build
//! whose sandboxes clone its files and running server, and a server stopped
//! mid-build that stops its build VM and keeps its sandboxes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hearth_test_support::wait_until;
use serde_json::{json, Value};

/// Polls a template build until it is `ready` or `failed`.
async fn wait_build(api: &Api, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (st, v) = api
            .call("GET", &format!("/sandbox-template-builds/{id}"), None)
            .await;
        assert_eq!(st, 200, "{v}");
        if matches!(v["data"]["state"].as_str(), Some("ready" | "failed")) {
            return v["data"].clone();
        }
        assert!(Instant::now() < deadline, "build {id} never finished: {v}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
async fn a_built_template_clones_with_its_files_and_running_server_on_real_vms() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (server, api) = fresh_server(tmp.path()).await;
    let spec = json!({
        "from": "minimal",
        "memory_mb": 256,
        "disk_size_mb": 512,
        "steps": [
            {"run": "mkdir -p /workspace/site && echo hello-from-template > /workspace/site/index.html"},
            {"copy": {"path": "notes.txt", "content_base64": "Y29waWVkCg=="}},
        ],
        "start_cmd": "busybox httpd -f -p 8080 -h /workspace/site",
        "ready_cmd": "busybox wget -q -O- http://127.0.0.1:8080/ | grep -q hello",
        "ready_timeout_sec": 60,
    });
    let started = Instant::now();
    let (st, v) = api
        .call(
            "POST",
            "/sandbox-templates",
            Some(json!({"name": "site", "build_spec": spec})),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let build_id = v["data"]["build"]["id"].as_str().expect("id").to_string();
    let b = wait_build(&api, &build_id, Duration::from_secs(300)).await;
    assert_eq!(b["state"], "ready", "{b}\n{}", server.log());
    println!(
        "template build (boot, 2 steps, start_cmd, ready, snapshot): {} ms",
        started.elapsed().as_millis()
    );

    // A sandbox of it is a clone: the files are there and the server
    // answers without anyone starting it.
    let started = Instant::now();
    let (st, v) = api
        .call(
            "POST",
            "/sandboxes",
            Some(json!({"template_id": "site", "timeout_sec": 600})),
        )
        .await;
    assert_eq!(st, 201, "{v}\n{}", server.log());
    let id = v["data"]["id"].as_str().expect("id").to_string();
    assert_eq!(v["data"]["boot_path"], "snapshot");
    assert_eq!(v["data"]["template_version"], "v1");
    let page = api
        .exec(&id, "busybox wget -q -O- http://127.0.0.1:8080/")
        .await;
    println!(
        "create from a built template -> its server answered: {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(page["stdout"], "hello-from-template\n", "{page}");
    assert_eq!(
        api.exec(&id, "cat /workspace/notes.txt").await["stdout"],
        "copied\n"
    );
    let (_, procs) = api
        .call("GET", &format!("/sandboxes/{id}/processes"), None)
        .await;
    assert!(
        procs.to_string().contains("busybox httpd"),
        "start_cmd runs in the clone: {procs}"
    );
    assert_eq!(
        api.exec(&id, "hostname").await["stdout"],
        format!("{}\n", id.replace('_', "-")),
        "the clone has its own identity"
    );
    api.call("DELETE", &format!("/sandboxes/{id}"), None).await;

    // A template on top of it: the server it started still runs, and the
    // new step's file joins the old ones.
    let started = Instant::now();
    let (st, v) = api
        .call(
            "POST",
            "/sandbox-templates",
            Some(json!({"name": "site2", "build_spec": {
                "from": "site",
                "steps": [{"run": "echo second > /workspace/second.txt"}],
                "ready_cmd": "busybox wget -q -O- http://127.0.0.1:8080/ | grep -q hello",
            }})),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let b = wait_build(
        &api,
        v["data"]["build"]["id"].as_str().expect("id"),
        Duration::from_secs(300),
    )
    .await;
    assert_eq!(b["state"], "ready", "{b}\n{}", server.log());
    println!(
        "template build on a built template: {} ms",
        started.elapsed().as_millis()
    );
    let (st, v) = api
        .call("POST", "/sandboxes", Some(json!({"template_id": "site2"})))
        .await;
    assert_eq!(st, 201, "{v}");
    let id2 = v["data"]["id"].as_str().expect("id").to_string();
    assert_eq!(
        api.exec(&id2, "cat /workspace/notes.txt /workspace/second.txt")
            .await["stdout"],
        "copied\nsecond\n"
    );
    assert_eq!(
        api.exec(&id2, "busybox wget -q -O- http://127.0.0.1:8080/")
            .await["stdout"],
        "hello-from-template\n"
    );
    api.call("DELETE", &format!("/sandboxes/{id2}"), None).await;

    // A ready_cmd that never succeeds fails the build, with its log, and
    // leaves no build VM behind.
    let bad = json!({
        "from": "minimal", "memory_mb": 256, "disk_size_mb": 512,
        "start_cmd": "echo starting; sleep 600",
        "ready_cmd": "echo not-ready; false",
        "ready_timeout_sec": 3,
    });
    let (st, v) = api
        .call(
            "POST",
            "/sandbox-templates",
            Some(json!({"name": "never", "build_spec": bad})),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let build_id = v["data"]["build"]["id"].as_str().expect("id").to_string();
    let b = wait_build(&api, &build_id, Duration::from_secs(300)).await;
    assert_eq!(b["state"], "failed", "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap_or_default()
            .contains("ready_cmd did not succeed within 3 s"),
        "{b}"
    );
    let log = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/sandbox-template-builds/{build_id}/logs/stream",
            api.base
        ))
        .bearer_auth(&api.key)
        .send()
        .await
        .expect("log")
        .text()
        .await
        .expect("log body");
    for want in ["not-ready", "starting", "event: done"] {
        assert!(log.contains(want), "{want:?} not in the log:\n{log}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("data/sandboxes"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("tpl-"))
                .map(|e| e.file_name())
                .collect()
        })
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "build VMs left: {leftovers:?}");
}

/// The `tpl-` VM directories under the server's sandboxes directory.
fn build_vm_dirs(data: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(data.join("sandboxes"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("tpl-"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
async fn a_stopped_server_stops_its_template_build_vm_and_keeps_sandboxes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut server, api) = fresh_server(tmp.path()).await;
    let data = tmp.path().join("data");
    // The first sandbox of a shape boots cold and starts the background
    // build of that shape's template snapshot.
    forget_warm_shape("1c-256m-512d");
    let (st, v) = api
        .call(
            "POST",
            "/sandboxes",
            Some(json!({"template_id": "minimal", "memory_mb": 256, "disk_size_mb": 512})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let id = v["data"]["id"].as_str().expect("id").to_string();
    assert_eq!(v["data"]["boot_path"], "cold");
    let deadline = Instant::now() + Duration::from_secs(30);
    let building = loop {
        let dirs = build_vm_dirs(&data);
        if let Some(d) = dirs.first().filter(|d| qemu_running_for(d)) {
            break d.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no build VM started: {}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Stopped mid-build: the build VM goes with the server, the sandbox
    // keeps running for the next start to adopt.
    let status = tokio::task::block_in_place(|| server.term());
    assert!(status.success(), "{status}\n{}", server.log());
    assert!(
        !qemu_running_for(&building),
        "build VM {building} outlived the server"
    );
    assert_eq!(build_vm_dirs(&data), Vec::<String>::new());
    assert!(qemu_running_for(&id), "the sandbox's VM keeps running");
    kill_vms(&data);
}

/// A template version directory with one shape, last touched `age` ago.
fn plant_version(root: &std::path::Path, name: &str, age: Duration) -> std::path::PathBuf {
    let dir = root.join(name);
    let shape = dir.join("1c-256m-512d");
    std::fs::create_dir_all(&shape).expect("plant a version");
    std::fs::write(shape.join("memory.ram"), vec![7u8; 1 << 20]).expect("plant its RAM");
    let then = std::time::SystemTime::now() - age;
    for p in [&shape, &dir] {
        std::fs::File::open(p)
            .and_then(|f| f.set_modified(then))
            .expect("age it");
    }
    dir
}

/// Every upgrade leaves the old version of each built-in template's
/// snapshots behind (hundreds of MB a shape). A server removes the
/// versions nobody has used for a week when it starts on its own version;
/// a recent one (another server sharing the images may be on it) stays,
/// and the version in use is marked used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
async fn old_versions_of_a_built_in_templates_snapshots_go_and_the_one_in_use_stays() {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let root = images_dir().join("templates/minimal");
    let tag = std::process::id();
    let old = plant_version(&root, &format!("zz-old-{tag}"), 8 * DAY);
    let recent = plant_version(&root, &format!("zz-recent-{tag}"), DAY);

    let tmp = tempfile::tempdir().expect("tmp");
    let (server, api) = fresh_server(tmp.path()).await;
    let removed = wait_until(
        Duration::from_secs(60),
        "the week-old version removed",
        || async { (!old.exists()).then_some(()) },
    )
    .await;
    assert!(removed.is_ok(), "{removed:?}\n{}", server.log());
    assert!(
        server.log().contains("old template versions removed"),
        "{}",
        server.log()
    );
    assert!(recent.exists(), "a version used yesterday was removed");

    // A sandbox of the template: its version is there, and marked used.
    let (st, v) = api
        .call(
            "POST",
            "/sandboxes",
            Some(json!({"template_id": "minimal", "timeout_sec": 300})),
        )
        .await;
    assert_eq!(st, 201, "{v}\n{}", server.log());
    let id = v["data"]["id"].as_str().expect("id").to_string();
    let running = api
        .wait_state(&id, "running", Duration::from_secs(120))
        .await;
    let version = running["template_version"]
        .as_str()
        .expect("template_version")
        .to_string();
    // Marked when the sandbox cloned the template's snapshot, or, had it
    // booted cold meanwhile, once the snapshot it builds is found ready.
    let marker = root.join(&version).join("last-used");
    let marked = wait_until(
        Duration::from_secs(120),
        "the version in use marked",
        || async { std::fs::metadata(&marker).and_then(|m| m.modified()).ok() },
    )
    .await
    .unwrap_or_else(|e| panic!("version {version}: {e}\n{}", server.log()));
    assert!(
        marked.elapsed().expect("mark in the past") < Duration::from_secs(2 * 3600),
        "the mark of version {version} is stale"
    );
    assert!(root.join(&version).exists());
    std::fs::remove_dir_all(&recent).expect("clean up");
}
