//! A real `hearth serve` (router, store, actors, timers) on a free port,
//! whose sandboxes are real `hearth-agent` processes on Unix sockets instead
//! of VMs. Router and lifecycle tests run in seconds on it; the VM-backed
//! end-to-end tests live in the CLI crate and use the real binary.

#![allow(dead_code)]

pub mod at_rest;
pub mod dns;
pub mod previews;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use hearth_agent_client::{AgentClient, Connector};
use hearth_server::config::ServerConfig;
use hearth_server::core::clock::{Clock, SystemClock};
use hearth_server::core::templates::{ResolvedTemplate, TemplateError, Templates};
use hearth_server::core::Core;
use hearth_vmm::{
    Accel, Capabilities, JailRecord, SnapshotInfo, SnapshotOptions, SnapshotSummary, Vm, VmSpec,
    VmState, Vmm, VmmError, VmmFuture,
};
use tokio::sync::watch;

/// The `hearth-agent` binary next to this test's target directory (built
/// on demand when missing).
pub fn agent_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test exe");
        // target/<profile>/deps/<test> -> target/<profile>/hearth-agent
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile dir")
            .to_path_buf();
        let bin = profile_dir.join("hearth-agent");
        if !bin.exists() {
            let status = std::process::Command::new(env!("CARGO"))
                .args(["build", "-p", "hearth-agent"])
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
                .status()
                .expect("cargo build hearth-agent");
            assert!(status.success(), "building hearth-agent failed");
        }
        bin
    })
    .clone()
}

/// Polls `check` until it yields a value or `timeout` passes.
/// Every value in every table of the PostgreSQL store at `url`, raw (as
/// the server sent it), one entry per table: what a reader of the
/// database sees.
pub async fn postgres_rows(url: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    use sqlx::{Connection, Row, ValueRef};
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tables");
    assert!(tables.iter().any(|t| t == "sandboxes"), "{tables:?}");
    let mut out = vec![];
    for table in tables {
        let rows = sqlx::query(&format!("SELECT * FROM {table}"))
            .fetch_all(&mut conn)
            .await
            .expect("rows");
        let mut bytes = vec![];
        for row in &rows {
            for i in 0..row.len() {
                let v = row.try_get_raw(i).expect("value");
                if !v.is_null() {
                    bytes.extend_from_slice(v.as_bytes().unwrap_or_default());
                    bytes.push(b'\n');
                }
            }
        }
        out.push((std::path::PathBuf::from(format!("postgres:{table}")), bytes));
    }
    out
}

pub async fn wait_until<T, F, Fut>(timeout: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The whole SSE log stream of template build `id`, to the build's end:
/// (event kind, data) per frame, after `last_event_id` when given.
pub async fn log_frames(
    srv: &TestServer,
    id: &str,
    last_event_id: Option<u64>,
) -> Vec<(String, serde_json::Value)> {
    let mut req = srv
        .client
        .get(srv.url(&format!("/api/v1/sandbox-template-builds/{id}/logs/stream")));
    if let Some(n) = last_event_id {
        req = req.header("last-event-id", n.to_string());
    }
    let text = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        req.send()
            .await
            .expect("stream")
            .text()
            .await
            .expect("body")
    })
    .await
    .expect("the log stream ends with the build");
    let mut frames = Vec::new();
    let mut kind = String::new();
    for line in text.lines() {
        if let Some(k) = line.strip_prefix("event: ") {
            kind = k.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            frames.push((kind.clone(), serde_json::from_str(d).expect("frame json")));
        }
    }
    frames
}

/// Knobs a test turns on the fake driver.
#[derive(Debug, Default)]
pub struct FakeKnobs {
    pub fail_boot: AtomicBool,
    pub boot_delay_ms: AtomicU32,
    /// How long a destroy takes (operations queue behind it meanwhile).
    pub destroy_delay_ms: AtomicU32,
    /// Destroys begun so far (a test waits for one to be under way).
    pub destroys_begun: AtomicU32,
    /// The egress policy each sandbox's VM has in force (by sandbox id):
    /// what booted with it, then every live change.
    pub policies: Mutex<std::collections::HashMap<String, Option<hearth_vmm::EgressPolicy>>>,
}

#[derive(Debug)]
pub struct FakeVmm {
    pub knobs: Arc<FakeKnobs>,
}

#[derive(Debug)]
pub struct FakeVm {
    knobs: Arc<FakeKnobs>,
    spec: VmSpec,
    pid: u32,
    socket: PathBuf,
    exit: watch::Receiver<Option<String>>,
    state: Mutex<VmState>,
    _dir: tempfile::TempDir,
}

async fn spawn_agent(knobs: Arc<FakeKnobs>, spec: VmSpec) -> Result<FakeVm, VmmError> {
    let err = |e: String| VmmError::InvalidSpec(vec![e]);
    let dir = tempfile::tempdir().map_err(|e| err(e.to_string()))?;
    let socket = dir.path().join("agent.sock");
    let work = dir.path().join("workspace");
    std::fs::create_dir_all(&work).map_err(|e| err(e.to_string()))?;
    let mut child = tokio::process::Command::new(agent_binary())
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .arg("--default-cwd")
        .arg(&work)
        .env("HEARTH_AGENT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // A test that ends with sandboxes left ends their agents too (its
        // runtime drops the waiter that owns the child); they used to live
        // on, holding whatever the test process inherited.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    let pid = child.id().unwrap_or(0);
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let s = child.wait().await;
        let _ = tx.send(Some(format!("{s:?}")));
    });
    let client = AgentClient::new(Connector::Unix(socket.clone()));
    for _ in 0..200 {
        if client.health().await.is_ok() {
            // Like the real driver: the agent learns its identity and env.
            let init = hearth_agent_protocol::InitRequest {
                sandbox_id: spec.id.clone(),
                hostname: None,
                env: spec.env.clone(),
                keep_env: spec.keep_env.clone(),
                clock_unix_ms: None,
                entropy: None,
            };
            client.init(&init).await.map_err(|e| err(e.to_string()))?;
            knobs
                .policies
                .lock()
                .expect("policies")
                .insert(spec.id.clone(), spec.egress_policy.clone());
            return Ok(FakeVm {
                knobs,
                spec,
                pid,
                socket,
                exit: rx,
                state: Mutex::new(VmState::Running),
                _dir: dir,
            });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(err("fake agent did not answer".into()))
}

impl Vmm for FakeVmm {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: "fake".into(),
            accel: Accel::Tcg,
            kvm: false,
            fast_clone: false,
            full_snapshot: true,
            pause: true,
            adopt: false,
            max_vcpus: 8,
            available_memory_mb: 16_384,
        }
    }

    fn boot(&self, spec: VmSpec) -> VmmFuture<'_, Box<dyn Vm>> {
        Box::pin(async move {
            let delay = self.knobs.boot_delay_ms.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(u64::from(delay))).await;
            if self.knobs.fail_boot.load(Ordering::SeqCst) {
                return Err(VmmError::InvalidSpec(vec!["fake boot failure".into()]));
            }
            Ok(Box::new(spawn_agent(self.knobs.clone(), spec).await?) as Box<dyn Vm>)
        })
    }

    fn restore<'a>(&'a self, snapshot: &'a Path, spec: VmSpec) -> VmmFuture<'a, Box<dyn Vm>> {
        Box::pin(async move {
            if !snapshot.join("fake-snapshot").exists() {
                return Err(VmmError::InvalidSpec(vec!["no fake snapshot".into()]));
            }
            let delay = self.knobs.boot_delay_ms.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(u64::from(delay))).await;
            Ok(Box::new(spawn_agent(self.knobs.clone(), spec).await?) as Box<dyn Vm>)
        })
    }

    fn adopt<'a>(&'a self, _dir: &'a Path) -> VmmFuture<'a, Box<dyn Vm>> {
        Box::pin(async move {
            Err(VmmError::InvalidSpec(vec![
                "fake vms are not adopted".into()
            ]))
        })
    }

    fn inspect_snapshot(&self, dir: &Path) -> Result<SnapshotSummary, VmmError> {
        let bad = |source: std::io::Error| VmmError::InspectSnapshot {
            dir: dir.to_path_buf(),
            source: Box::new(source),
        };
        let bytes = std::fs::read(dir.join(FAKE_MANIFEST)).map_err(bad)?;
        std::fs::metadata(dir.join("fake-snapshot")).map_err(bad)?;
        serde_json::from_slice(&bytes).map_err(|e| bad(e.into()))
    }

    fn snapshot_exists(&self, dir: &Path) -> bool {
        dir.join(FAKE_MANIFEST).is_file()
    }
}

/// The fake's snapshot description (a [`SnapshotSummary`] as JSON), named
/// like the QEMU driver's so tests can break or fake snapshots by name.
const FAKE_MANIFEST: &str = "manifest.json";

impl Vm for FakeVm {
    fn id(&self) -> &str {
        &self.spec.id
    }
    fn spec(&self) -> &VmSpec {
        &self.spec
    }
    fn pid(&self) -> u32 {
        self.pid
    }
    fn state(&self) -> VmState {
        *self.state.lock().expect("state")
    }
    fn agent(&self) -> AgentClient {
        AgentClient::new(Connector::Unix(self.socket.clone()))
    }
    fn pause(&self) -> VmmFuture<'_, ()> {
        Box::pin(async move {
            *self.state.lock().expect("state") = VmState::Paused;
            Ok(())
        })
    }
    fn resume(&self) -> VmmFuture<'_, ()> {
        Box::pin(async move {
            *self.state.lock().expect("state") = VmState::Running;
            Ok(())
        })
    }
    fn jail(&self) -> Option<&JailRecord> {
        None
    }
    fn console_tail(&self, _max_lines: usize) -> String {
        String::new()
    }
    fn snapshot<'a>(
        &'a self,
        dest: &'a Path,
        opts: SnapshotOptions,
    ) -> VmmFuture<'a, SnapshotInfo> {
        Box::pin(async move {
            std::fs::create_dir_all(dest)
                .map_err(|e| VmmError::InvalidSpec(vec![e.to_string()]))?;
            std::fs::write(dest.join("fake-snapshot"), b"x")
                .map_err(|e| VmmError::InvalidSpec(vec![e.to_string()]))?;
            let summary = SnapshotSummary {
                kind: opts.kind,
                vcpus: self.spec.vcpus,
                memory_mb: self.spec.memory_mb,
                state_bytes: 1,
                memory_bytes: None,
                disk_bytes: 1,
                created_at_ms: 0,
            };
            std::fs::write(
                dest.join(FAKE_MANIFEST),
                serde_json::to_vec(&summary).expect("summary json"),
            )
            .map_err(|e| VmmError::InvalidSpec(vec![e.to_string()]))?;
            Ok(SnapshotInfo {
                dir: dest.to_path_buf(),
                summary,
                timings: Default::default(),
            })
        })
    }
    fn destroy(&self) -> VmmFuture<'_, ()> {
        Box::pin(async move {
            self.knobs.destroys_begun.fetch_add(1, Ordering::SeqCst);
            let delay = self.knobs.destroy_delay_ms.load(Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(u64::from(delay))).await;
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            *self.state.lock().expect("state") = VmState::Destroyed;
            Ok(())
        })
    }
    fn set_egress_policy<'a>(
        &'a self,
        policy: Option<&'a hearth_vmm::EgressPolicy>,
    ) -> VmmFuture<'a, ()> {
        Box::pin(async move {
            self.knobs
                .policies
                .lock()
                .expect("policies")
                .insert(self.spec.id.clone(), policy.cloned());
            Ok(())
        })
    }
    fn exited(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send + '_>> {
        let mut rx = self.exit.clone();
        Box::pin(async move {
            let status = rx.wait_for(|s| s.is_some()).await.map(|s| s.clone());
            match status {
                Ok(s) => s.unwrap_or_default(),
                Err(_) => std::future::pending().await,
            }
        })
    }
}

#[derive(Debug)]
pub struct FakeTemplates;

#[async_trait]
impl Templates for FakeTemplates {
    fn canonical(&self, id: &str) -> Option<String> {
        match id {
            "minimal" => Some("minimal".into()),
            "default" | "debian" | "miosa-sandbox" => Some("default".into()),
            _ => None,
        }
    }
    async fn resolve(&self, id: &str) -> Result<ResolvedTemplate, TemplateError> {
        let id = self
            .canonical(id)
            .ok_or_else(|| TemplateError::Unknown(id.to_string()))?;
        Ok(ResolvedTemplate {
            id,
            version: "fake1".into(),
            kernel: "/nonexistent/vmlinuz".into(),
            initrd: "/nonexistent/initrd".into(),
            base_image: "/nonexistent/base.ext4".into(),
            custom: false,
        })
    }
}

/// A running server and a client for it.
#[derive(Debug)]
pub struct TestServer {
    /// Where the preview proxy listens.
    pub preview_addr: std::net::SocketAddr,
    pub base: String,
    pub admin_key: String,
    pub client: reqwest::Client,
    pub core: Arc<Core>,
    pub knobs: Arc<FakeKnobs>,
    pub dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
        Self::start_full(tweak, Arc::new(SystemClock)).await
    }

    /// A server whose clock the test moves ([`hearth_server::core::clock::ManualClock`]).
    pub async fn start_with_clock(clock: Arc<dyn Clock>) -> TestServer {
        Self::start_full(|_| {}, clock).await
    }

    pub async fn start_full(
        tweak: impl FnOnce(&mut ServerConfig),
        clock: Arc<dyn Clock>,
    ) -> TestServer {
        Self::start_inner(tweak, clock, None).await
    }

    /// Another node on `first`'s store (its SQLite file or PostgreSQL
    /// schema), with a data directory of its own and the first node's
    /// sealing key (as `secrets_key_file` shares it); the admin key is the
    /// first node's (keys live in the shared store).
    pub async fn join(first: &TestServer, tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let url = first.core.config.database_url.clone();
        let file = first.core.config.database_path();
        let key_file = first
            .core
            .config
            .secrets_key_file
            .clone()
            .unwrap_or_else(|| first.core.data_dir().join("secrets.key"));
        let tweak = move |c: &mut ServerConfig| {
            match url {
                Some(u) => c.database_url = Some(u),
                None => c.database = Some(file),
            }
            c.secrets_key_file = Some(key_file);
            tweak(c);
        };
        let key = first.admin_key.clone();
        Self::start_inner(tweak, Arc::new(SystemClock), Some(key)).await
    }

    async fn start_inner(
        tweak: impl FnOnce(&mut ServerConfig),
        clock: Arc<dyn Clock>,
        shared_key: Option<String>,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = ServerConfig {
            data_dir: dir.path().join("data"),
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..ServerConfig::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        config.listen = addr;
        config.public_url = Some(format!("http://{addr}"));
        // Bound before the node registers, which names its proxy's address.
        let previews = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind previews");
        let preview_addr = previews.local_addr().expect("addr");
        config.preview.listen = preview_addr;
        // Tests hammer the API on purpose; the per-key limit has its own.
        config.api_rps = 0;
        // No DNS question leaves the machine: a test that verifies a
        // domain starts its own server (`dns::start`); others ask a port
        // where nothing listens.
        config.deployments.dns_servers = vec!["127.0.0.1:9".parse().expect("addr")];
        // `HEARTH_TEST_STORE=postgres`: the same tests on the PostgreSQL
        // store, a schema of their own on the test server.
        if std::env::var("HEARTH_TEST_STORE").as_deref() == Ok("postgres") {
            let url = hearth_test_support::postgres::schema_url()
                .await
                .expect("a PostgreSQL schema");
            config.database_url = Some(url);
        }
        tweak(&mut config);
        std::fs::create_dir_all(&config.data_dir).expect("data dir");
        let store = hearth_server::store::open(&config).await.expect("store");
        let knobs = Arc::new(FakeKnobs::default());
        let vmm = Arc::new(FakeVmm {
            knobs: knobs.clone(),
        });
        let core =
            Core::new(config.clone(), store, vmm, Arc::new(FakeTemplates), clock).expect("core");
        let made = core
            .bootstrap_admin_key(&core.data_dir().join("admin.key"))
            .await
            .expect("admin key");
        let admin_key = made.or(shared_key).expect("first start makes a key");
        core.start().await.expect("start");
        hearth_server::cluster::replicas::spawn(core.clone());
        let app = hearth_server::routes::router(core.clone());
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        tokio::spawn(hearth_server::proxy::serve(
            core.clone(),
            previews,
            core.shutdown_token(),
        ));
        let client = reqwest::Client::builder()
            .default_headers({
                let mut h = reqwest::header::HeaderMap::new();
                h.insert(
                    reqwest::header::AUTHORIZATION,
                    format!("Bearer {admin_key}").parse().expect("header"),
                );
                h
            })
            .build()
            .expect("client");
        TestServer {
            preview_addr,
            base: format!("http://{addr}"),
            admin_key,
            client,
            core,
            knobs,
            dir,
            server,
        }
    }

    /// A deployment's runtime instances as `GET .../runtime-instances`
    /// lists them.
    pub async fn deployment_instances(&self, dep: &str) -> Vec<serde_json::Value> {
        let path = format!("/deployments/{dep}/runtime-instances");
        let (st, v) = self.call("GET", &path, None).await;
        assert_eq!(st, 200, "{v}");
        v["data"].as_array().expect("instances").clone()
    }

    /// `path` is `/api/v1/...` (or any path on the server).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Creates a sandbox (minimal template unless the body says otherwise)
    /// and returns the sandbox object.
    pub async fn create_sandbox(&self, body: serde_json::Value) -> serde_json::Value {
        let mut body = body;
        if body.get("template_id").is_none() {
            body["template_id"] = "minimal".into();
        }
        let resp = self
            .client
            .post(self.url("/api/v1/sandboxes"))
            .json(&body)
            .send()
            .await
            .expect("create");
        let status = resp.status();
        let v: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(status, 201, "create failed: {v}");
        v["data"].clone()
    }

    /// `method path` under `/api/v1` with an optional JSON body, as the
    /// admin: the status and the JSON answer (`null` when not JSON).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        self.call_as(&self.client, method, path, body).await
    }

    /// A new key of the admin's tenant (not an admin key): its id and
    /// plain text.
    pub async fn tenant_key(&self, name: &str) -> (String, String) {
        let (st, v) = self
            .call(
                "POST",
                "/api-keys",
                Some(serde_json::json!({ "name": name })),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        (
            v["data"]["id"].as_str().expect("id").to_string(),
            v["data"]["key"].as_str().expect("key").to_string(),
        )
    }

    /// [`TestServer::call`] with another client (another key, or none).
    pub async fn call_as(
        &self,
        client: &reqwest::Client,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let url = self.url(&format!("/api/v1{path}"));
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = client.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Opens an 80x24 `/bin/sh` terminal in sandbox `id` and its
    /// WebSocket, with `key`: the terminal's id and the socket.
    pub async fn terminal_ws(
        &self,
        id: &str,
        key: &str,
    ) -> (
        String,
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ) {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let (st, v) = self
            .call(
                "POST",
                &format!("/sandboxes/{id}/terminals"),
                Some(serde_json::json!({"cols": 80, "rows": 24, "shell": "/bin/sh"})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        let tid = v["data"]["id"].as_str().expect("terminal id").to_string();
        let url = self
            .url(&format!("/api/v1/sandboxes/{id}/terminals/{tid}/ws"))
            .replacen("http://", "ws://", 1);
        let mut req = url.into_client_request().expect("ws request");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {key}").parse().expect("header"),
        );
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("terminal socket");
        (tid, ws)
    }

    /// A client of another tenant (`ten_other`), with a key the admin
    /// made for it: what it must never see is the caller's.
    pub async fn stranger(&self) -> reqwest::Client {
        let (st, v) = self
            .call(
                "POST",
                "/api-keys",
                Some(serde_json::json!({"name": "other", "tenant_id": "ten_other"})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        self.client_with(v["data"]["key"].as_str().expect("key"))
    }

    /// A client authenticated with another key.
    pub fn client_with(&self, key: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .default_headers({
                let mut h = reqwest::header::HeaderMap::new();
                h.insert(
                    reqwest::header::AUTHORIZATION,
                    format!("Bearer {key}").parse().expect("header"),
                );
                h
            })
            .build()
            .expect("client")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.abort();
        self.core.shutdown();
    }
}

impl Drop for FakeVm {
    fn drop(&mut self) {
        // Like a VMM process, the agent would outlive the test otherwise.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
