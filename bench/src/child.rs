//! `hearth serve` as a child process of a bench, on a fresh data directory
//! over the shared image cache, and its REST API: what the benches that
//! measure a real server process (`api-memory`, `api-density`) share.
//! Nothing a bench starts outlives it: dropping the [`Server`] destroys
//! its sandboxes, stops it and kills any VMM left.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use serde_json::Value;

/// `hearth serve` as a child process on a fresh data directory.
pub struct Server {
    child: Child,
    pub data: PathBuf,
    pub base: String,
    pub log: PathBuf,
}

impl Server {
    /// Starts the release `hearth` beside this bench (or `HEARTH_BIN`)
    /// with `config` (TOML) on `tmp/data`, images from [`images_dir`];
    /// `part` is what `bench/run` part builds it, for the error.
    pub fn start(tmp: &Path, config: &str, part: &str) -> anyhow::Result<Server> {
        let bin = match std::env::var_os("HEARTH_BIN") {
            Some(b) => PathBuf::from(b),
            None => std::env::current_exe()?
                .parent()
                .context("bench dir")?
                .join("hearth"),
        };
        ensure!(
            bin.exists(),
            "{} missing: `bench/run {part}` builds it",
            bin.display()
        );
        let data = tmp.join("data");
        let log = tmp.join("server.log");
        let config_file = tmp.join("hearth.toml");
        std::fs::write(&config_file, config)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let out = std::fs::File::create(&log)?;
        let child = Command::new(&bin)
            .arg("serve")
            .arg("--config")
            .arg(&config_file)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&data)
            .arg("--images-dir")
            .arg(images_dir())
            .env("HEARTH_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        Ok(Server {
            child,
            data,
            base: format!("http://127.0.0.1:{port}"),
            log,
        })
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.child.id());
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        kib_field(&text, "VmRSS:").context("server status")
    }

    /// The QEMU process of sandbox `id` (the VMM's pidfile).
    pub fn vmm_pid(&self, id: &str) -> anyhow::Result<i32> {
        let path = self.data.join("sandboxes").join(id).join("vmm.pid");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("{}: {text:?}", path.display()))
    }

    /// Template build VMs running (their `tpl-` directories).
    pub fn build_vms(&self) -> usize {
        self.dirs("tpl-").len()
    }

    /// The VM directories under `sandboxes/` whose names start with `prefix`.
    pub fn dirs(&self, prefix: &str) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.data.join("sandboxes")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| e.path())
            .collect()
    }

    /// The server's last `lines` log lines, on stderr (its directory is
    /// removed when the bench ends).
    pub fn print_log_tail(&self, lines: usize) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        eprintln!("server log, last {lines} lines:");
        for l in &all[all.len().saturating_sub(lines)..] {
            eprintln!("  {l}");
        }
    }

    /// Waits until the server answers; its admin API.
    pub async fn api(&self) -> anyhow::Result<Api> {
        let http = http_client()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", self.base)).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            ensure!(Instant::now() < deadline, "the server never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Api {
            http,
            base: self.base.clone(),
            key: self.admin_key()?,
        })
    }

    pub fn admin_key(&self) -> anyhow::Result<String> {
        let path = self.data.join("admin.key");
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("read {}", path.display()))?
            .trim()
            .to_string())
    }

    /// Destroys, through the API, every sandbox whose directory is still
    /// here (a run cut short): a sandbox's VM outlives its server. On a
    /// thread of its own, as this runs in `Drop`.
    fn destroy_leftovers(&self) {
        let ids: Vec<String> = self
            .dirs("sbx_")
            .iter()
            .filter_map(|d| d.file_name()?.to_str().map(String::from))
            .collect();
        if ids.is_empty() {
            return;
        }
        let Ok(key) = self.admin_key() else {
            return;
        };
        eprintln!("destroying {} sandboxes left behind", ids.len());
        let base = self.base.clone();
        let destroyed = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let api = Api {
                    http: http_client()?,
                    base,
                    key,
                };
                for id in ids {
                    if let Err(e) = api.destroy(&id).await {
                        eprintln!("destroy {id}: {e:#}");
                    }
                }
                anyhow::Ok(())
            })
        })
        .join();
        if let Ok(Err(e)) = destroyed {
            eprintln!("destroying the sandboxes left behind: {e:#}");
        }
    }
}

impl Drop for Server {
    /// Sandboxes left destroyed through the API, then SIGTERM (build VMs
    /// go with the server), then as a last resort any VMM left under the
    /// data directory killed: a bench's VMs must not outlive it.
    fn drop(&mut self) {
        self.destroy_leftovers();
        // SAFETY: kill only sends a signal to our own child.
        unsafe {
            libc::kill(self.pid() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for d in self.dirs("") {
            let pid = std::fs::read_to_string(d.join("vmm.pid")).unwrap_or_default();
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: killpg only sends a signal; the VMM leads its own
                // process group.
                unsafe {
                    libc::killpg(pid, libc::SIGKILL);
                }
            }
        }
        kill_qemu_under(&self.data);
    }
}

/// SIGKILLs every QEMU process whose command line names `dir`.
fn kill_qemu_under(dir: &Path) {
    let dir = dir.to_string_lossy();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains("qemu") && cmdline.contains(dir.as_ref()) {
            eprintln!("killing QEMU pid {pid} left under {dir}");
            // SAFETY: kill only sends a signal to a process of this bench's
            // data directory.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Kernels and images: `HEARTH_DATA_DIR`, else the workspace's `./data`.
fn images_dir() -> PathBuf {
    std::env::var_os("HEARTH_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data"))
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .build()?)
}

#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub key: String,
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    /// The answer of `method path`, which must succeed.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.parse()?, self.url(path))
            .bearer_auth(&self.key)
            .timeout(Duration::from_secs(900));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        ensure!(
            status.is_success(),
            "{method} {path} answered {status}: {v}"
        );
        Ok(v)
    }

    /// Destroys sandbox `id`.
    pub async fn destroy(&self, id: &str) -> anyhow::Result<()> {
        self.call("DELETE", &format!("/sandboxes/{id}"), None)
            .await
            .map(drop)
    }
}

/// The `kB` value of the line starting with `name`, in bytes.
pub fn kib_field(text: &str, name: &str) -> anyhow::Result<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .with_context(|| format!("no {name} line"))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("no value in {line:?}"))?
        .parse()
        .with_context(|| format!("value of {line:?}"))?;
    Ok(kib * 1024)
}
