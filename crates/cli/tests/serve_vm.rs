//! The real `hearth serve` binary with real QEMU VMs (`minimal` template):
//! create -> exec -> files -> stream -> pause/resume -> timeout -> kill -9
//! of the server and re-adoption -> destroy; snapshots, restore, fork and
//! warm templates; a full disk. Templates and previews on real VMs are in
//! `templates_vm.rs` and `previews_vm.rs`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
async fn serve_creates_execs_pauses_times_out_and_readopts_real_vms() {
    // The images first (on a fresh machine: minutes), so the create below
    // measures a boot, not a build.
    for target in ["initramfs", "minimal"] {
        let built = Command::new(HEARTH)
            .args(["image", "build", target, "--data-dir"])
            .arg(images_dir())
            .status()
            .expect("hearth image build");
        assert!(built.success(), "hearth image build {target} failed");
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let port = free_port();
    let mut server = Server::start(&data, port);
    server.wait_healthy().await;
    let key = std::fs::read_to_string(data.join("admin.key"))
        .expect("admin key written on first start")
        .trim()
        .to_string();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("admin.key"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let api = Api {
        c: reqwest::Client::new(),
        base: server.base.clone(),
        key,
    };

    forget_warm_shape("1c-256m-512d");
    let spec = json!({"template_id": "minimal", "memory_mb": 256, "disk_size_mb": 512, "timeout_sec": 900});
    let (st, v) = api.call("POST", "/sandboxes", Some(spec.clone())).await;
    assert_eq!(st, 201, "create: {v}\n{}", server.log());
    let sbx = v["data"].clone();
    let id = sbx["id"].as_str().expect("id").to_string();
    assert_eq!(sbx["state"], "running");
    assert_eq!(sbx["boot_path"], "cold");
    assert!(sbx["boot_ms"].as_u64().expect("boot_ms") > 0);
    assert!(qemu_running_for(&id), "a QEMU process runs the sandbox");

    let r = api.exec(&id, "echo hello from $(hostname)").await;
    assert_eq!(
        r["stdout"],
        format!("hello from {}\n", id.replace('_', "-"))
    );
    assert_eq!(r["exit_code"], 0);

    // Files through the API into the guest and back.
    let (st, v) = api
        .call(
            "POST",
            &format!("/sandboxes/{id}/fs/write"),
            Some(json!({"path": "/workspace/note.txt", "content": "kept across pause\n"})),
        )
        .await;
    assert_eq!(st, 200, "write: {v}");
    assert_eq!(
        api.exec(&id, "cat /workspace/note.txt").await["stdout"],
        "kept across pause\n"
    );

    // Streaming exec over SSE.
    let text = api
        .c
        .post(format!("{}/api/v1/sandboxes/{id}/exec/stream", api.base))
        .bearer_auth(&api.key)
        .json(&json!({"command": "for i in 1 2 3; do echo line$i; done"}))
        .send()
        .await
        .expect("stream")
        .text()
        .await
        .expect("text");
    for want in [
        "event: stdout",
        "line1",
        "line3",
        "event: exit",
        "\"exit_code\":0",
    ] {
        assert!(text.contains(want), "{want} missing from {text}");
    }

    // Pause writes the VM to disk and stops it; resume brings it back.
    let (st, v) = api
        .call("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    assert_eq!(st, 200, "pause: {v}");
    assert_eq!(v["data"]["state"], "paused");
    assert!(
        !qemu_running_for(&id),
        "a paused sandbox has no VMM process"
    );
    let (st, v) = api
        .call(
            "POST",
            &format!("/sandboxes/{id}/exec"),
            Some(json!({"command": "true"})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].clone()),
        (409, json!("sandbox_not_running"))
    );
    let (st, v) = api
        .call("POST", &format!("/sandboxes/{id}/resume"), None)
        .await;
    assert_eq!(st, 200, "resume: {v}");
    assert_eq!(v["data"]["boot_path"], "snapshot");
    assert_eq!(
        api.exec(&id, "cat /workspace/note.txt").await["stdout"],
        "kept across pause\n"
    );

    // Again: a resumed VM pauses and resumes like any other.
    for step in ["pause", "resume"] {
        let (st, v) = api
            .call("POST", &format!("/sandboxes/{id}/{step}"), None)
            .await;
        assert_eq!(st, 200, "second {step}: {v}\n{}", server.log());
    }
    assert_eq!(
        api.exec(&id, "cat /workspace/note.txt").await["stdout"],
        "kept across pause\n"
    );

    // A short timeout really destroys the VM.
    let mut short = spec.clone();
    short["timeout_sec"] = json!(3);
    let (st, v) = api.call("POST", "/sandboxes", Some(short)).await;
    assert_eq!(st, 201, "{v}");
    let short_id = v["data"]["id"].as_str().expect("id").to_string();
    api.wait_state(&short_id, "destroyed", Duration::from_secs(30))
        .await;
    assert!(!qemu_running_for(&short_id), "timed-out VM is gone");
    assert!(
        !data.join("sandboxes").join(&short_id).exists(),
        "its directory is gone"
    );

    // A paused sandbox across the restart, with a secret the server keeps
    // only in memory (and the guest holds).
    let secret = "sek-vm-41d0-never-stored";
    let mut with_secret = spec.clone();
    with_secret["secret_env"] = json!({ "API_TOKEN": secret });
    let (st, v) = api.call("POST", "/sandboxes", Some(with_secret)).await;
    assert_eq!(st, 201, "{v}");
    let paused_id = v["data"]["id"].as_str().expect("id").to_string();
    api.exec(&paused_id, "echo still-here > /workspace/p").await;
    let (st, v) = api
        .call("POST", &format!("/sandboxes/{paused_id}/pause"), None)
        .await;
    assert_eq!(st, 200, "{v}");

    // kill -9 the server: the VM keeps running and is re-adopted.
    api.exec(&id, "echo before > /tmp/marker").await;
    server.kill9();
    assert!(qemu_running_for(&id), "the VM outlives the server");
    let server = Server::start(&data, port);
    server.wait_healthy().await;
    assert!(
        !std::fs::read_to_string(data.join("admin.key"))
            .expect("key")
            .is_empty(),
        "the key file stays"
    );
    let (st, v) = api.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["data"]["state"],
        "running",
        "re-adopted: {v}\n{}",
        server.log()
    );
    assert_eq!(api.exec(&id, "cat /tmp/marker").await["stdout"], "before\n");
    let (_, v) = api
        .call("GET", &format!("/sandboxes/{paused_id}"), None)
        .await;
    assert_eq!(v["data"]["state"], "paused", "paused stays paused: {v}");
    let (st, v) = api
        .call("POST", &format!("/sandboxes/{paused_id}/resume"), None)
        .await;
    assert_eq!(st, 200, "{v}\n{}", server.log());
    assert_eq!(
        api.exec(&paused_id, "cat /workspace/p").await["stdout"],
        "still-here\n"
    );
    // The restarted server never had the secret's value, yet the resumed
    // guest still has it; the database never held it.
    assert_eq!(
        api.exec(&paused_id, "printf %s \"$API_TOKEN\"").await["stdout"],
        secret
    );
    for name in ["hearth.db", "hearth.db-wal"] {
        let bytes = std::fs::read(data.join(name)).unwrap_or_default();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret is in {name}"
        );
    }
    let mode = std::fs::metadata(&data).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the data directory is private");
    let (st, _) = api
        .call("DELETE", &format!("/sandboxes/{paused_id}"), None)
        .await;
    assert_eq!(st, 200);

    // A VMM that dies puts its sandbox in `error` within 2 s.
    let pid = String::from_utf8(
        Command::new("pgrep")
            .args(["-f", &format!("sandboxes/{id}/")])
            .output()
            .expect("pgrep")
            .stdout,
    )
    .expect("utf8");
    let pid: i32 = pid
        .lines()
        .next()
        .expect("qemu pid")
        .trim()
        .parse()
        .expect("pid");
    let killed = Instant::now();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let errored = api.wait_state(&id, "error", Duration::from_secs(2)).await;
    assert!(killed.elapsed() < Duration::from_secs(2));
    assert!(
        errored["metadata"]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("exited unexpectedly"),
        "{errored}"
    );

    let (st, v) = api.call("DELETE", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["state"], "destroyed");
    assert!(!qemu_running_for(&id), "destroy leaves no VMM");
    assert!(
        !data.join("sandboxes").join(&id).exists(),
        "destroy leaves no directory"
    );
}

fn count(v: &Value) -> u64 {
    v["stdout"]
        .as_str()
        .unwrap_or("")
        .trim()
        .parse()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
async fn snapshots_restore_fork_and_warm_templates_on_real_vms() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (server, api) = fresh_server(tmp.path()).await;
    forget_warm_shape("1c-256m-512d");
    let spec = json!({"template_id": "minimal", "memory_mb": 256, "disk_size_mb": 512, "timeout_sec": 900});
    let (st, v) = api.call("POST", "/sandboxes", Some(spec.clone())).await;
    assert_eq!(st, 201, "create: {v}\n{}", server.log());
    let id = v["data"]["id"].as_str().expect("id").to_string();
    assert_eq!(v["data"]["boot_path"], "cold");

    // A file and a process counting in memory (and into a file).
    api.exec(&id, "echo original > /workspace/f").await;
    let (st, v) = api
        .call(
            "POST",
            &format!("/sandboxes/{id}/processes"),
            // Written aside and renamed: a snapshot never catches the file
            // truncated but not yet rewritten.
            Some(json!({"command": "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.t; mv /tmp/count.t /tmp/count; sleep 0.1; done"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at_snapshot = count(&api.exec(&id, "cat /tmp/count").await);
    assert!(at_snapshot > 0);
    let (st, v) = api
        .call(
            "POST",
            &format!("/sandboxes/{id}/snapshots"),
            Some(json!({"comment": "c"})),
        )
        .await;
    assert_eq!(st, 201, "snapshot: {v}");
    let sid = v["data"]["id"].as_str().expect("sid").to_string();
    assert_eq!(v["data"]["status"], "ready");
    let size = v["data"]["size_bytes"].as_u64().expect("size");
    println!(
        "snapshot of an idle 256 MiB sandbox: {} KiB on disk",
        size / 1024
    );

    api.exec(&id, "echo changed > /workspace/f").await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let later = count(&api.exec(&id, "cat /tmp/count").await);
    assert!(later > at_snapshot + 5, "{later} vs {at_snapshot}");

    let (st, v) = api
        .call("POST", &format!("/sandboxes/{id}/restore/{sid}"), None)
        .await;
    assert_eq!(st, 200, "restore: {v}");
    assert_eq!(v["data"]["id"], json!(id));
    assert_eq!(
        api.exec(&id, "cat /workspace/f").await["stdout"],
        "original\n"
    );
    let resumed = count(&api.exec(&id, "cat /tmp/count").await);
    assert!(
        resumed >= at_snapshot && resumed < later,
        "counter resumes from its saved value: {resumed} (snapshot {at_snapshot}, later {later})"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        count(&api.exec(&id, "cat /tmp/count").await) > resumed,
        "and goes on counting"
    );

    // Two forks of one snapshot: own disks, own names, own random state.
    let mut forks = Vec::new();
    for name in ["fork-a", "fork-b"] {
        let (st, v) = api
            .call(
                "POST",
                &format!("/sandboxes/{id}/fork"),
                Some(json!({"snapshot_id": sid, "name": name})),
            )
            .await;
        assert_eq!(st, 201, "fork: {v}");
        assert_eq!(v["data"]["boot_path"], "snapshot");
        forks.push(v["data"]["id"].as_str().expect("id").to_string());
    }
    let (a, b) = (&forks[0], &forks[1]);
    assert_eq!(
        api.exec(a, "cat /workspace/f").await["stdout"],
        "original\n"
    );
    api.exec(a, "echo only-a > /workspace/f").await;
    assert_eq!(
        api.exec(b, "cat /workspace/f").await["stdout"],
        "original\n"
    );
    let host_a = api.exec(a, "hostname").await["stdout"].clone();
    let host_b = api.exec(b, "hostname").await["stdout"].clone();
    assert_ne!(host_a, host_b);
    let rand = "head -c 16 /dev/urandom | od -An -tx1";
    assert_ne!(
        api.exec(a, rand).await["stdout"],
        api.exec(b, rand).await["stdout"]
    );

    // The first fork turned the snapshot into its fast-clone form in the
    // background; a later fork clones that, with the same state.
    let fast = tmp
        .path()
        .join("data/snapshots")
        .join(&sid)
        .join("fast/manifest.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !fast.exists() {
        assert!(
            Instant::now() < deadline,
            "no fast-clone form of {sid}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let started = Instant::now();
    let (st, v) = api
        .call(
            "POST",
            &format!("/sandboxes/{id}/fork"),
            Some(json!({"snapshot_id": sid, "name": "fork-c"})),
        )
        .await;
    assert_eq!(st, 201, "fork from the fast form: {v}");
    let c = v["data"]["id"].as_str().expect("id").to_string();
    let c_file = api.exec(&c, "cat /workspace/f").await["stdout"].clone();
    println!(
        "fork from the fast-clone form -> exec: {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(c_file, "original\n");
    assert_eq!(
        api.exec(&c, "hostname").await["stdout"],
        format!("{}\n", c.replace('_', "-"))
    );
    let c_count = count(&api.exec(&c, "cat /tmp/count").await);
    assert!(
        c_count >= at_snapshot && c_count < later,
        "the counter comes back near its saved value: {c_count} (snapshot {at_snapshot}, later {later})"
    );
    forks.push(c);

    // Deleting a snapshot removes its files.
    let (st, _) = api
        .call("DELETE", &format!("/sandboxes/{id}/snapshots/{sid}"), None)
        .await;
    assert_eq!(st, 200);
    for f in &forks {
        api.call("DELETE", &format!("/sandboxes/{f}"), None).await;
    }
    api.call("DELETE", &format!("/sandboxes/{id}"), None).await;

    // The first cold boot of this shape built its template snapshot in the
    // background: the next create clones it.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, v) = api.call("GET", "/sandbox-templates/minimal", None).await;
        // This shape's: the default shape's is written at start.
        if v["data"]["warm_shapes"]
            .as_array()
            .is_some_and(|s| s.contains(&json!("1c-256m-512d")))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no template snapshot: {v}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let started = Instant::now();
    let (st, v) = api.call("POST", "/sandboxes", Some(spec.clone())).await;
    assert_eq!(st, 201, "{v}");
    let warm = v["data"]["id"].as_str().expect("id").to_string();
    assert_eq!(v["data"]["boot_path"], "snapshot");
    let r = api.exec(&warm, "echo warm; hostname").await;
    println!(
        "warm create -> exec answered: {} ms (boot_ms {})",
        started.elapsed().as_millis(),
        v["data"]["boot_ms"]
    );
    assert_eq!(r["stdout"], format!("warm\n{}\n", warm.replace('_', "-")));
    api.call("DELETE", &format!("/sandboxes/{warm}"), None)
        .await;
    assert!(!qemu_running_for(&warm));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
async fn a_snapshot_that_fills_the_disk_fails_and_the_sandbox_runs_on() {
    let tmp = tempfile::tempdir().expect("tmp");
    // The images are built (or found) by fresh_server's first call; this
    // server's data directory lives on a 600 MiB disk.
    drop(fresh_server(tmp.path()).await);
    let disk = SmallDisk::mount(&tmp.path().join("small"), 600);
    let data = disk.0.join("data");
    let (server, api) = started(&data).await;
    let (st, v) = api
        .call(
            "POST",
            "/sandboxes",
            Some(json!({"template_id": "minimal", "memory_mb": 256, "disk_size_mb": 512, "timeout_sec": 600})),
        )
        .await;
    assert_eq!(st, 201, "create: {v}\n{}", server.log());
    let id = v["data"]["id"].as_str().expect("id").to_string();
    api.exec(&id, "head -c 1000000 /dev/urandom > /workspace/keep && md5sum /workspace/keep > /workspace/keep.md5")
        .await;

    // 4 MiB free: the RAM state alone is several times that (20 MiB was
    // not always enough to refuse it), and the store's few pages still fit.
    let filler = disk.fill(4 << 20);
    let (st, v) = api
        .call("POST", &format!("/sandboxes/{id}/snapshots"), None)
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (507, Some("insufficient_storage")),
        "a snapshot on a full disk fails and says why: {v}"
    );
    // Nothing half-written is left, and the sandbox runs on unharmed.
    let left: Vec<_> = std::fs::read_dir(data.join("snapshots"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "snapshot files left: {left:?}");
    let (_, s) = api.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(s["data"]["state"], "running", "{s}");
    let r = api.exec(&id, "md5sum -c /workspace/keep.md5").await;
    assert_eq!(r["exit_code"], 0, "{r}");
    let (_, list) = api
        .call("GET", &format!("/sandboxes/{id}/snapshots"), None)
        .await;
    assert!(
        list["data"]
            .as_array()
            .expect("list")
            .iter()
            .all(|s| s["status"] == "failed"),
        "{list}"
    );

    // A pause writes the same state: it fails the same way, and the
    // sandbox keeps running.
    let (st, v) = api
        .call("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (507, Some("insufficient_storage")),
        "{v}\n{}",
        server.log()
    );
    let (_, s) = api.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(s["data"]["state"], "running", "{s}");
    assert_eq!(
        api.exec(&id, "md5sum -c /workspace/keep.md5").await["exit_code"],
        0
    );
    assert!(
        !data.join("paused").join(&id).exists(),
        "no half-written pause state"
    );

    // With room again, the next snapshot works.
    std::fs::remove_file(filler).expect("unfill");
    let (st, v) = api
        .call("POST", &format!("/sandboxes/{id}/snapshots"), None)
        .await;
    assert_eq!(st, 201, "{v}\n{}", server.log());
    assert_eq!(v["data"]["status"], "ready");
    api.call("DELETE", &format!("/sandboxes/{id}"), None).await;
    drop(server);
}
