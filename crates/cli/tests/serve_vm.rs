//! The real `hearth serve` binary with real QEMU VMs (`minimal` template):
//! create -> exec -> files -> stream -> pause/resume -> timeout -> kill -9
//! of the server and re-adoption -> destroy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const HEARTH: &str = env!("CARGO_BIN_EXE_hearth");

/// The shared image cache (kernel, initramfs, minimal image), as the VM
/// tests use it.
fn images_dir() -> PathBuf {
    std::env::var_os("HEARTH_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Server {
    child: Child,
    base: String,
    data: PathBuf,
}

impl Server {
    fn start(data: &Path, port: u16) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .expect("log");
        let child = Command::new(HEARTH)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data)
            .arg("--images-dir")
            .arg(images_dir())
            .env("HEARTH_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn hearth serve");
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            data: data.to_path_buf(),
        }
    }

    async fn wait_healthy(&self) {
        let c = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = c.get(format!("{}/healthz", self.base)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server never became healthy");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn kill9(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Api {
    c: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/api/v1{path}", self.base);
        let mut req = match method {
            "GET" => self.c.get(url),
            "POST" => self.c.post(url),
            "PATCH" => self.c.patch(url),
            "DELETE" => self.c.delete(url),
            other => panic!("method {other}"),
        }
        .bearer_auth(&self.key)
        .timeout(Duration::from_secs(180));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    async fn exec(&self, id: &str, command: &str) -> Value {
        let (st, v) = self
            .call(
                "POST",
                &format!("/sandboxes/{id}/exec"),
                Some(json!({"command": command})),
            )
            .await;
        assert_eq!(st, 200, "exec {command}: {v}");
        v["data"].clone()
    }

    async fn wait_state(&self, id: &str, want: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (_, v) = self.call("GET", &format!("/sandboxes/{id}"), None).await;
            if v["data"]["state"] == want {
                return v["data"].clone();
            }
            assert!(Instant::now() < deadline, "{id} never became {want}: {v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn qemu_running_for(id: &str) -> bool {
    let out = Command::new("pgrep")
        .args(["-f", &format!("sandboxes/{id}/")])
        .output()
        .expect("pgrep");
    !out.stdout.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
async fn serve_creates_execs_pauses_times_out_and_readopts_real_vms() {
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

    // A paused sandbox across the restart.
    let (st, v) = api.call("POST", "/sandboxes", Some(spec.clone())).await;
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
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        api.exec(&paused_id, "cat /workspace/p").await["stdout"],
        "still-here\n"
    );
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
