//! An in-process `hearth serve` with real QEMU VMs, shared by the API
//! benchmarks: a fresh data dir (store, sandboxes) over the workspace's image
//! cache, and one `minimal` sandbox to aim requests at.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

/// A running server and the admin key to call it with.
#[derive(Debug)]
pub struct BenchServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub admin_key: String,
    /// A keep-alive HTTP/1.1 client, as a MIOSA SDK would hold.
    pub http: reqwest::Client,
    /// Set by [`BenchServer::start_with_core`] only.
    core: Option<Arc<hearth_server::core::Core>>,
    /// The preview proxy; set by [`BenchServer::start_with_core`] only.
    pub preview_addr: Option<std::net::SocketAddr>,
    _data_dir: tempfile::TempDir,
}

/// Kernels and images: `HEARTH_DATA_DIR`, else the workspace's `./data`
/// (built there on first use, as `bench/run vm` does).
fn images_dir() -> PathBuf {
    std::env::var_os("HEARTH_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data"))
}

/// A fresh data dir and the config of a loopback server on it. Warm boot
/// is off unless asked for: its background template build (a second VM
/// booting) would disturb whatever a bench measures.
fn bench_config(
    warm_boot: bool,
) -> anyhow::Result<(tempfile::TempDir, hearth_server::ServerConfig)> {
    bench_config_pool(warm_boot, 0)
}

/// [`bench_config`] with a warm pool of `warm_pool_size` VMs per shape.
fn bench_config_pool(
    warm_boot: bool,
    warm_pool_size: usize,
) -> anyhow::Result<(tempfile::TempDir, hearth_server::ServerConfig)> {
    let data_dir = tempfile::Builder::new()
        .prefix("hearth-bench-")
        .tempdir()
        .context("create data dir")?;
    let config = hearth_server::ServerConfig {
        data_dir: data_dir.path().to_path_buf(),
        images_dir: Some(images_dir()),
        listen: "127.0.0.1:0".parse()?,
        warm_boot,
        warm_pool_size,
        // A bench measures the server, not its per-key limit.
        api_rps: 0,
        preview: hearth_server::config::PreviewConfig {
            listen: "127.0.0.1:0".parse()?,
            ..Default::default()
        },
        // `HEARTH_DATABASE_URL`: the same bench on the PostgreSQL store.
        database_url: std::env::var("HEARTH_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty()),
        ..Default::default()
    };
    Ok((data_dir, config))
}

impl Drop for BenchServer {
    /// VMs outlive their server by design; a bench's must not outlive the
    /// bench (a warm-pool VM, or a sandbox left by a failed run).
    fn drop(&mut self) {
        let Ok(dirs) = std::fs::read_dir(self._data_dir.path().join("sandboxes")) else {
            return;
        };
        for d in dirs.flatten() {
            let pid = std::fs::read_to_string(d.path().join("vmm.pid")).unwrap_or_default();
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: killpg only sends a signal; the VMM is the leader
                // of its own process group (it runs in its own session).
                unsafe {
                    libc::killpg(pid, libc::SIGKILL);
                }
            }
        }
    }
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_idle_timeout(None)
        .build()?)
}

/// Server warnings and errors on stderr (`RUST_LOG` overrides), so a
/// misbehaving server shows in the bench output.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

impl BenchServer {
    /// Starts `hearth_server::serve` on a free loopback port in a spawned
    /// task; it runs until the process exits.
    pub async fn start() -> anyhow::Result<BenchServer> {
        Self::start_opts(false).await
    }

    /// [`BenchServer::start`] with warm boot (template snapshots) on or off.
    pub async fn start_opts(warm_boot: bool) -> anyhow::Result<BenchServer> {
        Self::start_pool(warm_boot, 0).await
    }

    /// Warm boot plus a warm pool of `pool` pre-cloned VMs per shape.
    pub async fn start_pool(warm_boot: bool, pool: usize) -> anyhow::Result<BenchServer> {
        let (data_dir, config) = bench_config_pool(warm_boot, pool)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut server = tokio::spawn(hearth_server::serve(config, move |s| {
            let _ = tx.send(s.clone());
        }));
        let started = tokio::select! {
            s = rx => s.ok(),
            r = &mut server => {
                r.context("server task")?.context("hearth serve")?;
                None
            }
        };
        let started = started.context("hearth serve stopped before it listened")?;
        let admin_key = started
            .admin_key
            .context("a fresh data dir must print its admin key")?;
        Ok(BenchServer {
            url: started.url,
            admin_key,
            http: http_client()?,
            core: None,
            preview_addr: None,
            _data_dir: data_dir,
        })
    }

    /// The same server as [`BenchServer::start`], assembled from its parts
    /// the way `hearth_server::serve` does (store, QEMU driver, templates,
    /// core, router, preview proxy), so the bench keeps the [`Core`] and can reach a
    /// sandbox's agent client. That client is the only way to the guest
    /// while the server runs: QEMU's agent chardev takes one connection at
    /// a time and the server holds it, so a second client on `agent.sock`
    /// never gets an answer. Keep this in step with `serve` (less its
    /// hourly housekeeping and signal handling, which a bench never needs).
    ///
    /// [`Core`]: hearth_server::core::Core
    pub async fn start_with_core() -> anyhow::Result<BenchServer> {
        Self::start_with_core_and(|_| {}).await
    }

    /// [`BenchServer::start_with_core`] with the config changed first (a
    /// second node on the first one's store, labels).
    pub async fn start_with_core_and(
        tweak: impl FnOnce(&mut hearth_server::ServerConfig),
    ) -> anyhow::Result<BenchServer> {
        use hearth_server::core::{clock::SystemClock, templates::ImageTemplates, Core};
        let (data_dir, mut config) = bench_config(false)?;
        tweak(&mut config);
        config.validate()?;
        // Bound first: the node registers its addresses at start.
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen on {}", config.listen))?;
        config.listen = listener.local_addr()?;
        let previews = tokio::net::TcpListener::bind(config.preview.listen).await?;
        config.preview.listen = previews.local_addr()?;
        let store = hearth_server::store::open(&config).await?;
        let vmm = hearth_vmm::open(&config.vmm)?;
        let templates = Arc::new(ImageTemplates::new(&config.images_dir()));
        let core = Core::new(config.clone(), store, vmm, templates, Arc::new(SystemClock))?;
        // A second node on a store that has keys makes none: its callers
        // use the first node's (empty here).
        let admin_key = core
            .bootstrap_admin_key(&core.data_dir().join("admin.key"))
            .await?
            .unwrap_or_default();
        core.start().await?;
        hearth_server::cluster::replicas::spawn(core.clone());
        let addr = config.listen;
        let app = hearth_server::routes::router(core.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("server stopped: {e}");
            }
        });
        let preview_addr = config.preview.listen;
        tokio::spawn(hearth_server::proxy::serve(
            core.clone(),
            previews,
            core.shutdown_token(),
        ));
        Ok(BenchServer {
            url: format!("http://{addr}"),
            admin_key,
            http: http_client()?,
            preview_addr: Some(preview_addr),
            core: Some(core),
            _data_dir: data_dir,
        })
    }

    /// The core behind a server started with [`BenchServer::start_with_core`].
    pub fn core(&self) -> anyhow::Result<&Arc<hearth_server::core::Core>> {
        self.core
            .as_ref()
            .context("start the server with start_with_core to reach its core")
    }

    /// The server's own agent client of a running sandbox (the connection
    /// its exec handler uses); needs [`BenchServer::start_with_core`].
    pub fn agent(&self, id: &str) -> anyhow::Result<hearth_agent_client::AgentClient> {
        let core = self
            .core
            .as_ref()
            .context("start the server with start_with_core to reach agents")?;
        core.handle(id)
            .and_then(|h| h.agent())
            .with_context(|| format!("sandbox {id} has no agent client (not running?)"))
    }

    /// The server's data directory (sandboxes/, snapshots/).
    pub fn data_dir(&self) -> &std::path::Path {
        self._data_dir.path()
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.url)
    }

    /// Creates a `minimal` sandbox and waits for it to run; its id.
    pub async fn create_sandbox(&self) -> anyhow::Result<String> {
        self.create_sandbox_with(json!({})).await
    }

    /// [`BenchServer::create_sandbox`] with more fields in the body.
    pub async fn create_sandbox_with(&self, extra: serde_json::Value) -> anyhow::Result<String> {
        let mut body = json!({
            "template_id": "minimal",
            "memory_mb": 256,
            "disk_size_mb": 512,
            "timeout_sec": 600,
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let resp = self
            .http
            .post(self.api("/sandboxes"))
            .bearer_auth(&self.admin_key)
            .json(&body)
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .context("POST /sandboxes")?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.context("create answer")?;
        anyhow::ensure!(
            status == reqwest::StatusCode::CREATED,
            "POST /sandboxes answered {status}: {body}"
        );
        let state = &body["data"]["state"];
        anyhow::ensure!(state == "running", "created sandbox is {state}: {body}");
        let id = body["data"]["id"]
            .as_str()
            .context("create answer has no data.id")?;
        Ok(id.to_string())
    }

    /// Destroys the sandbox, so no VM outlives the bench.
    pub async fn destroy(&self, id: &str) -> anyhow::Result<()> {
        let resp = self
            .http
            .delete(self.api(&format!("/sandboxes/{id}")))
            .bearer_auth(&self.admin_key)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .with_context(|| format!("DELETE /sandboxes/{id}"))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        anyhow::ensure!(
            status.is_success(),
            "DELETE /sandboxes/{id} answered {status}: {body}"
        );
        Ok(())
    }

    /// Runs `body` against one fresh `minimal` sandbox, and destroys it
    /// whether `body` succeeded or not.
    pub async fn with_sandbox<T, F>(&self, body: impl FnOnce(String) -> F) -> anyhow::Result<T>
    where
        F: std::future::Future<Output = anyhow::Result<T>>,
    {
        let id = self.create_sandbox().await?;
        let out = body(id.clone()).await;
        let destroyed = self.destroy(&id).await;
        let out = out?;
        destroyed?;
        Ok(out)
    }
}
