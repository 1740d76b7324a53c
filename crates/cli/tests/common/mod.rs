//! Shared by the CLI's real-VM tests: a real `hearth serve` child process
//! over the shared image cache, a small JSON client for its API, and a
//! runner for the `hearth` binary itself. Each test binary uses a part.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const HEARTH: &str = env!("CARGO_BIN_EXE_hearth");

/// The shared image cache (kernel, initramfs, minimal image), as the VM
/// tests use it.
pub fn images_dir() -> PathBuf {
    std::env::var_os("HEARTH_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data"))
}

/// Removes every built-in template snapshot of `shape` (`1c-256m-512d`)
/// from the shared image cache, where servers sharing it keep them, so a
/// test's first create of that shape boots cold. VM tests run one at a
/// time: no other test is cloning it meanwhile.
pub fn forget_warm_shape(shape: &str) {
    let dirs = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect()
    };
    for template in dirs(&images_dir().join("templates")) {
        for version in dirs(&template) {
            let dir = version.join(shape);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).expect("remove a template snapshot");
            }
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub struct Server {
    pub child: Child,
    pub base: String,
    pub data: PathBuf,
    /// Where its preview proxy listens.
    pub preview_port: u16,
}

impl Server {
    pub fn start(data: &Path, port: u16) -> Server {
        Self::start_with_env(data, port, &[])
    }

    /// [`Server::start`] with more environment (`HEARTH_DATABASE_URL`, ...).
    pub fn start_with_env(data: &Path, port: u16, env: &[(&str, &str)]) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .expect("log");
        let preview_port = free_port();
        let child = Command::new(HEARTH)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data)
            .arg("--images-dir")
            .arg(images_dir())
            .env("HEARTH_LOG", "info,sqlx=warn")
            .envs(env.iter().copied())
            .env("HEARTH_PREVIEW_LISTEN", format!("127.0.0.1:{preview_port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn hearth serve");
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            data: data.to_path_buf(),
            preview_port,
        }
    }

    pub async fn wait_healthy(&self) {
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

    /// SIGTERM, as an operator's Ctrl-C or systemd stop, and waits (60 s
    /// at most) for the graceful shutdown to finish.
    pub fn term(&mut self) -> std::process::ExitStatus {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill9(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }
}

/// Kills every VMM whose pidfile is under `data/sandboxes/`: VMs outlive
/// the server by design, so a test's sandboxes (and a background template
/// build still running when it ends) would keep running after it.
pub fn kill_vms(data: &Path) {
    let Ok(dirs) = std::fs::read_dir(data.join("sandboxes")) else {
        return;
    };
    for d in dirs.flatten() {
        let pid = std::fs::read_to_string(d.path().join("vmm.pid")).unwrap_or_default();
        if let Ok(pid) = pid.trim().parse::<i32>() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // VMs outlive their server by design, but a test's data directory
        // is gone after the test: nothing would ever adopt them. (A test
        // that restarts its server keeps the first `Server` alive until
        // its end, so its VMs are still there for the second.)
        kill_vms(&self.data);
    }
}

#[derive(Clone)]
pub struct Api {
    pub c: reqwest::Client,
    pub base: String,
    pub key: String,
}

impl Api {
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/api/v1{path}", self.base);
        let mut req = match method {
            "GET" => self.c.get(url),
            "POST" => self.c.post(url),
            "PATCH" => self.c.patch(url),
            "PUT" => self.c.put(url),
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

    /// Creates a sandbox from `spec` (201 expected; the server's log shows
    /// when not) and returns its id.
    pub async fn create(&self, spec: Value, server: &Server) -> String {
        let (st, v) = self.call("POST", "/sandboxes", Some(spec)).await;
        assert_eq!(st, 201, "create: {v}\n{}", server.log());
        v["data"]["id"].as_str().expect("id").to_string()
    }

    pub async fn exec(&self, id: &str, command: &str) -> Value {
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

    pub async fn wait_state(&self, id: &str, want: &str, within: Duration) -> Value {
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

pub fn qemu_running_for(id: &str) -> bool {
    let out = Command::new("pgrep")
        .args(["-f", &format!("sandboxes/{id}/")])
        .output()
        .expect("pgrep");
    !out.stdout.is_empty()
}

/// Builds the images and starts a fresh server; returns it with its API.
pub async fn fresh_server(tmp: &Path) -> (Server, Api) {
    for target in ["initramfs", "minimal"] {
        let built = Command::new(HEARTH)
            .args(["image", "build", target, "--data-dir"])
            .arg(images_dir())
            .status()
            .expect("hearth image build");
        assert!(built.success(), "hearth image build {target} failed");
    }
    started(&tmp.join("data")).await
}

/// A server started on `data` (images from the shared cache) once it is
/// healthy, with its admin API.
pub async fn started(data: &Path) -> (Server, Api) {
    let server = Server::start(data, free_port());
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
    (server, api)
}

/// `hearth ARGS...` against `api`'s server: (exit code, stdout, stderr).
pub fn hearth(api: &Api, args: &[&str]) -> (i32, String, String) {
    hearth_with(api, args, &[], None)
}

/// [`hearth`] with more environment variables and, when given, `stdin`.
pub fn hearth_with(
    api: &Api,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(HEARTH)
        .args(args)
        .env("HEARTH_BASE_URL", &api.base)
        .env("HEARTH_API_KEY", &api.key)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run hearth");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).expect("write stdin");
    }
    drop(input);
    let out = child.wait_with_output().expect("wait for hearth");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A small tmpfs (needs root, as CI has), unmounted when dropped.
pub struct SmallDisk(pub PathBuf);

impl SmallDisk {
    pub fn mount(at: &Path, size_mb: u64) -> SmallDisk {
        std::fs::create_dir_all(at).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount");
        assert!(ok.success(), "mounting a tmpfs needs root");
        SmallDisk(at.to_path_buf())
    }

    pub fn free_bytes(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.0).expect("statvfs");
        s.blocks_available() * s.fragment_size()
    }

    /// Fills the disk until at most `leave` bytes are free. Something else
    /// may be writing there meanwhile (a background template build), so
    /// the free space is read again and the filler grown until it fits.
    pub fn fill(&self, leave: u64) -> PathBuf {
        let filler = self.0.join("filler");
        for _ in 0..20 {
            let have = std::fs::metadata(&filler).map_or(0, |m| m.len());
            let free = self.free_bytes();
            if free <= leave {
                return filler;
            }
            // `fallocate -l` sets the file's whole size: grow it by what is
            // free now, less what must stay free.
            let _ = Command::new("fallocate")
                .args(["-l", &(have + free - leave).to_string()])
                .arg(&filler)
                .status()
                .expect("fallocate");
        }
        assert!(
            self.free_bytes() <= leave,
            "could not fill {} down to {leave} bytes free",
            self.0.display()
        );
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
