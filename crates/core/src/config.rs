//! Server configuration, loaded in one place: defaults (zero-config works),
//! then a TOML file, then `HEARTH_*` environment variables; the CLI applies
//! its flags last. Validated as a whole, every bad field at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hearth_vmm::AccelChoice;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the REST API.
    pub listen: SocketAddr,
    /// Images, sandboxes, snapshots and the store live here.
    pub data_dir: PathBuf,
    /// SQLite file; default `<data_dir>/hearth.db`.
    pub database: Option<PathBuf>,
    /// `postgres://user:password@host/db`: the PostgreSQL store, which
    /// several hosts share, instead of the SQLite file
    /// (`HEARTH_DATABASE_URL`).
    pub database_url: Option<String>,
    /// Where kernels and images are built and cached; default `data_dir`
    /// (several data directories can share one image cache).
    pub images_dir: Option<PathBuf>,
    /// How clients reach this server (for `ws_url`s); default
    /// `http://<listen>`.
    pub public_url: Option<String>,
    /// Largest JSON request body.
    pub max_json_body_bytes: usize,
    /// Output kept in memory per exec stream before `truncated: true`.
    pub exec_output_cap_bytes: usize,
    /// Deadline of a cold boot, from spawn to the agent's first answer.
    pub boot_timeout_ms: u64,
    /// How often a live SSE stream sends `: heartbeat`.
    pub sse_heartbeat_ms: u64,
    /// Create from a template snapshot (built in the background after the
    /// first cold boot of each template and VM shape).
    pub warm_boot: bool,
    /// Write the template snapshot of each built-in template's default
    /// shape, and of each `warm_shapes` entry, at start (in the
    /// background), so the first create is warm too.
    pub warm_prebuild: bool,
    /// More shapes whose template snapshot is written at start:
    /// `[[warm_shapes]]` with `template_id` and any of `cpu_count`,
    /// `memory_mb`, `disk_size_mb` (default 1, 1024, 3072).
    pub warm_shapes: Vec<crate::warm::ShapeConfig>,
    /// VMs per template and shape kept cloned and warmed up ahead of
    /// creates (each holds its memory while it waits). 0 = off.
    pub warm_pool_size: usize,
    /// Longest a template build may take, boot to ready (snapshot aside).
    pub template_build_timeout_sec: u64,
    /// How long idempotent responses are replayed.
    pub idempotency_ttl_sec: u64,
    /// The sealing key (32 bytes) of the secrets vault and of stored
    /// responses that carry credentials: a file kept outside the data
    /// directory (a mounted KMS secret, say). Default
    /// `<data_dir>/secrets.key`, made on the first start.
    pub secrets_key_file: Option<PathBuf>,
    /// API requests per second per key, sustained (0 = no limit); over it
    /// is `429 rate_limited` with `Retry-After`.
    pub api_rps: u32,
    /// Requests one key may make at once above `api_rps`.
    pub api_burst: u32,
    pub rates: Rates,
    pub events: EventsConfig,
    pub audit: AuditConfig,
    pub builds: BuildsConfig,
    pub deployments: DeploymentsConfig,
    pub vmm: VmmConfig,
    pub preview: PreviewConfig,
    pub metrics: MetricsConfig,
    pub e2b: E2bConfig,
    pub cluster: ClusterConfig,
    /// `[quotas]`: each tenant's limits unless an admin set its own.
    pub quotas: crate::quotas::Quotas,
}

/// The event log (`[events]`): how long events are kept. The oldest go
/// first, pruned hourly; 0 turns a limit off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Events older than this many days are dropped.
    pub retention_days: u64,
    /// At most this many events are kept, all tenants together.
    pub max_rows: u64,
    /// At most this many events are kept per tenant, so one busy tenant
    /// cannot push everyone else's history out.
    pub max_rows_per_tenant: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            retention_days: 7,
            max_rows: 1_000_000,
            max_rows_per_tenant: 100_000,
        }
    }
}

/// The audit log (`[audit]`): how long entries are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Entries older than this many days are dropped (0 = kept forever).
    pub retention_days: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention_days: 365,
        }
    }
}

/// Template builds (`[builds]`): how much of each build's log is kept.
/// The newest output is kept (it holds the error); a reader of a log that
/// lost lines gets one line saying how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuildsConfig {
    /// Bytes of one build's log kept in memory while it runs, and on disk
    /// (in two parts) afterwards.
    pub log_max_bytes: u64,
    /// Lines of one build's log kept in memory.
    pub log_max_lines: usize,
}

impl Default for BuildsConfig {
    fn default() -> Self {
        BuildsConfig {
            log_max_bytes: 4 << 20,
            log_max_lines: 20_000,
        }
    }
}

/// Deployments (`[deployments]`): where custom domains' TXT records are
/// looked up, and how long a publish's build may run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeploymentsConfig {
    /// DNS servers (`ip:port`, UDP) that verify custom domains; empty: the
    /// host's resolver (`/etc/resolv.conf`).
    pub dns_servers: Vec<SocketAddr>,
    /// How long a `build_command` may run.
    pub build_timeout_sec: u64,
}

impl Default for DeploymentsConfig {
    fn default() -> Self {
        DeploymentsConfig {
            dns_servers: Vec::new(),
            build_timeout_sec: 900,
        }
    }
}

/// The preview proxy: its own listener, routing `Host:
/// <slug>.preview.<domain>` to a sandbox port through the agent tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreviewConfig {
    /// Off: no listener, and preview URLs are still handed out.
    pub enabled: bool,
    pub listen: SocketAddr,
    /// `localhost` works in browsers and curl with no DNS setup.
    pub domain: String,
    /// The port written in preview URLs (a proxy in front may change it);
    /// default the listener's. 0 leaves the port out.
    pub public_port: Option<u16>,
    /// `http` or `https` in preview URLs (`https` whenever TLS is on; set
    /// it when a TLS proxy sits in front).
    pub scheme: String,
    /// PEM certificate chain and private key: the proxy serves HTTPS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `Content-Security-Policy: frame-ancestors` of every response.
    pub frame_ancestors: String,
    /// Larger request bodies are cut with 413.
    pub max_body_bytes: u64,
    /// How long the guest app has to start answering a request.
    pub upstream_timeout_ms: u64,
    /// Requests per second per client IP on public previews (burst 4x).
    pub public_rps: u32,
    /// Previews may be embedded in iframes of other sites: the share
    /// cookie becomes `SameSite=None; Partitioned` instead of
    /// `SameSite=Lax`, so cross-site requests (from any site) carry it.
    /// Set `frame_ancestors` to the sites that embed them.
    pub embed: bool,
}

impl PreviewConfig {
    /// The scheme of preview URLs.
    pub fn url_scheme(&self) -> &str {
        if self.tls_cert.is_some() {
            "https"
        } else {
            &self.scheme
        }
    }
}

impl Default for PreviewConfig {
    fn default() -> Self {
        PreviewConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 7071)),
            domain: "localhost".into(),
            public_port: None,
            scheme: "http".into(),
            tls_cert: None,
            tls_key: None,
            frame_ancestors: "'self' localhost:*".into(),
            max_body_bytes: 1 << 30,
            upstream_timeout_ms: 60_000,
            public_rps: 50,
            embed: false,
        }
    }
}

/// `/metrics`: on the API listener it takes an admin key; `listen` adds a
/// listener of its own that serves it without one (bind it to loopback or
/// a private network a Prometheus server reaches).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of a metrics-only listener (`GET /metrics`, no key); off
    /// when unset.
    pub listen: Option<SocketAddr>,
}

/// `[cluster]`: this server as one node of several sharing a PostgreSQL
/// store (with SQLite it is the only node, and all of this is
/// bookkeeping). Capacity left at 0 is the host's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's id; default: made once and kept in `data/node.id`.
    pub node_id: Option<String>,
    /// How other nodes reach this one's API (`HEARTH_NODE_URL`); default
    /// `public_url`, else `http://<listen>`.
    pub node_url: Option<String>,
    /// How other nodes reach this one's preview proxy
    /// (`HEARTH_NODE_PROXY_URL`); default: `node_url`'s host at the preview
    /// listener's port, else `http://<preview.listen>`.
    pub node_proxy_url: Option<String>,
    /// `region` and the like (`HEARTH_NODE_LABELS="region=eu,zone=a"`).
    pub labels: std::collections::BTreeMap<String, String>,
    /// How often the node says it is alive.
    pub heartbeat_ms: u64,
    /// A node silent this long is `lost`: what it ran goes to `error`.
    pub lost_after_ms: u64,
    pub vcpus: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// What placement may promise of each, in percent of the capacity:
    /// idle sandboxes use a fraction of their vCPUs, memory they never
    /// touched and sparse disks. With one node nothing is placed.
    pub cpu_overcommit_percent: u32,
    pub memory_overcommit_percent: u32,
    pub disk_overcommit_percent: u32,
    /// Copy every paused sandbox's snapshot to another node, so that it
    /// can resume there if its own node is lost (costs the copy's disk and
    /// transfer on every pause).
    pub replicate_paused: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: None,
            node_url: None,
            node_proxy_url: None,
            labels: Default::default(),
            heartbeat_ms: 2_000,
            lost_after_ms: 15_000,
            vcpus: 0,
            memory_mb: 0,
            disk_mb: 0,
            cpu_overcommit_percent: 800,
            memory_overcommit_percent: 200,
            disk_overcommit_percent: 400,
            replicate_paused: false,
        }
    }
}

/// `[e2b]`: E2B's control API is always at `/e2b` on the API listener;
/// `listen` also serves it at the root of a listener of its own (so
/// `E2B_API_URL` is that address, as tools that take only a host expect).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct E2bConfig {
    /// Address of an E2B-only API listener (`HEARTH_E2B_LISTEN`); off when
    /// unset.
    pub listen: Option<SocketAddr>,
}

/// Prices used by the usage endpoints, in cents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rates {
    pub vcpu_hour_cents: f64,
    pub memory_gib_hour_cents: f64,
    pub paused_disk_gib_hour_cents: f64,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            vcpu_hour_cents: 5.0,
            memory_gib_hour_cents: 1.25,
            paused_disk_gib_hour_cents: 0.02,
        }
    }
}

/// The `[vmm]` table: `backend` (default `qemu`) and each backend's own
/// table; it belongs to the driver crate, which opens what it names.
pub use hearth_vmm::VmmConfig;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::from("./data"),
            database: None,
            database_url: None,
            images_dir: None,
            public_url: None,
            max_json_body_bytes: 64 << 20,
            exec_output_cap_bytes: 16 << 20,
            boot_timeout_ms: 120_000,
            sse_heartbeat_ms: 15_000,
            warm_boot: true,
            warm_prebuild: true,
            warm_shapes: Vec::new(),
            warm_pool_size: 0,
            template_build_timeout_sec: 3600,
            idempotency_ttl_sec: 24 * 3600,
            secrets_key_file: None,
            api_rps: 100,
            api_burst: 400,
            rates: Rates::default(),
            events: EventsConfig::default(),
            audit: AuditConfig::default(),
            builds: BuildsConfig::default(),
            deployments: DeploymentsConfig::default(),
            vmm: VmmConfig::default(),
            preview: PreviewConfig::default(),
            metrics: MetricsConfig::default(),
            e2b: E2bConfig::default(),
            cluster: ClusterConfig::default(),
            quotas: crate::quotas::Quotas::defaults(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse config file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("environment variable {name}={value:?}: {reason}")]
    Env {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid config: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl ServerConfig {
    /// Defaults, then `file` (if given), then the environment.
    pub fn load(file: Option<&Path>) -> Result<ServerConfig, ConfigError> {
        let mut cfg = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_path_buf(),
                    source,
                })?
            }
            None => ServerConfig::default(),
        };
        cfg.apply_env(|name| std::env::var(name).ok())?;
        Ok(cfg)
    }

    /// Applies `HEARTH_LISTEN`, `HEARTH_DATA_DIR`, `HEARTH_DATABASE`,
    /// `HEARTH_DATABASE_URL`, `HEARTH_NODE_URL`, `HEARTH_NODE_PROXY_URL`,
    /// `HEARTH_NODE_LABELS`,
    /// `HEARTH_IMAGES_DIR`, `HEARTH_PUBLIC_URL`, `HEARTH_PREVIEW_LISTEN`,
    /// `HEARTH_PREVIEW_DOMAIN`, `HEARTH_SECRETS_KEY_FILE`, `HEARTH_E2B_LISTEN`
    /// and `HEARTH_ACCEL` (auto|kvm|tcg).
    pub fn apply_env(
        &mut self,
        get: impl Fn(&'static str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = get("HEARTH_LISTEN") {
            self.listen = v.parse().map_err(|e| ConfigError::Env {
                name: "HEARTH_LISTEN",
                value: v.clone(),
                reason: format!("{e}"),
            })?;
        }
        if let Some(v) = get("HEARTH_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("HEARTH_DATABASE") {
            self.database = Some(PathBuf::from(v));
        }
        if let Some(v) = get("HEARTH_DATABASE_URL").filter(|v| !v.is_empty()) {
            self.database_url = Some(v);
        }
        if let Some(v) = get("HEARTH_IMAGES_DIR") {
            self.images_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = get("HEARTH_PREVIEW_LISTEN") {
            self.preview.listen = v.parse().map_err(|e| ConfigError::Env {
                name: "HEARTH_PREVIEW_LISTEN",
                value: v.clone(),
                reason: format!("{e}"),
            })?;
        }
        if let Some(v) = get("HEARTH_NODE_URL").filter(|v| !v.is_empty()) {
            self.cluster.node_url = Some(v);
        }
        if let Some(v) = get("HEARTH_NODE_PROXY_URL").filter(|v| !v.is_empty()) {
            self.cluster.node_proxy_url = Some(v);
        }
        if let Some(v) = get("HEARTH_NODE_LABELS") {
            for pair in v.split(',').filter(|p| !p.trim().is_empty()) {
                let Some((k, val)) = pair.split_once('=') else {
                    return Err(ConfigError::Env {
                        name: "HEARTH_NODE_LABELS",
                        value: v.clone(),
                        reason: "expected key=value pairs separated by commas".into(),
                    });
                };
                self.cluster
                    .labels
                    .insert(k.trim().to_string(), val.trim().to_string());
            }
        }
        if let Some(v) = get("HEARTH_E2B_LISTEN") {
            self.e2b.listen = Some(v.parse().map_err(|e| ConfigError::Env {
                name: "HEARTH_E2B_LISTEN",
                value: v.clone(),
                reason: format!("{e}"),
            })?);
        }
        if let Some(v) = get("HEARTH_PREVIEW_DOMAIN") {
            self.preview.domain = v;
        }
        if let Some(v) = get("HEARTH_PUBLIC_URL") {
            self.public_url = Some(v);
        }
        if let Some(v) = get("HEARTH_SECRETS_KEY_FILE") {
            self.secrets_key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("HEARTH_ACCEL") {
            self.vmm.qemu.accel = match v.as_str() {
                "auto" => AccelChoice::Auto,
                "kvm" => AccelChoice::Kvm,
                "tcg" => AccelChoice::Tcg,
                _ => {
                    return Err(ConfigError::Env {
                        name: "HEARTH_ACCEL",
                        value: v,
                        reason: "expected auto, kvm or tcg".into(),
                    })
                }
            };
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut bad = Vec::new();
        let c = &self.cluster;
        if c.heartbeat_ms == 0 || c.lost_after_ms < 2 * c.heartbeat_ms {
            bad.push(
                "cluster.heartbeat_ms must be positive and lost_after_ms at least twice it".into(),
            );
        }
        if let Some(u) = &self.database_url {
            if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) {
                bad.push("database_url must be a postgres:// URL".to_string());
            }
            if self.database.is_some() {
                bad.push("database (a SQLite file) and database_url exclude each other".into());
            }
        }
        if self.max_json_body_bytes < 1024 {
            bad.push("max_json_body_bytes must be at least 1024".to_string());
        }
        if self.sse_heartbeat_ms == 0 {
            bad.push("sse_heartbeat_ms must be positive".into());
        }
        let p = &self.preview;
        if p.domain.is_empty() || p.domain.contains(['/', ':', ' ']) {
            bad.push(format!("preview.domain {:?} is not a host name", p.domain));
        }
        if p.scheme != "http" && p.scheme != "https" {
            bad.push("preview.scheme must be http or https".into());
        }
        if p.tls_cert.is_some() != p.tls_key.is_some() {
            bad.push("preview.tls_cert and preview.tls_key go together".into());
        }
        if p.public_rps == 0 || p.upstream_timeout_ms == 0 {
            bad.push("preview.public_rps and preview.upstream_timeout_ms must be positive".into());
        }
        let extra = [
            ("metrics.listen", self.metrics.listen),
            ("e2b.listen", self.e2b.listen),
        ];
        let mut taken = vec![("listen", self.listen), ("preview.listen", p.listen)];
        for (extra, m) in extra {
            let Some(m) = m else { continue };
            for (name, addr) in &taken {
                if m.port() != 0 && m == *addr {
                    bad.push(format!("{extra} {m} is also {name}"));
                }
            }
            taken.push((extra, m));
        }
        if self.builds.log_max_bytes < 64 << 10 || self.builds.log_max_lines < 100 {
            bad.push(
                "builds.log_max_bytes must be at least 65536 and builds.log_max_lines at least 100"
                    .into(),
            );
        }
        if self.boot_timeout_ms < 1000 {
            bad.push("boot_timeout_ms must be at least 1000".into());
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bad.push(format!(
                    "public_url {url:?} must start with http:// or https://"
                ));
            }
        }
        for (name, v) in [
            ("rates.vcpu_hour_cents", self.rates.vcpu_hour_cents),
            (
                "rates.memory_gib_hour_cents",
                self.rates.memory_gib_hour_cents,
            ),
            (
                "rates.paused_disk_gib_hour_cents",
                self.rates.paused_disk_gib_hour_cents,
            ),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bad.push(format!("{name} must be a non-negative number"));
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(bad))
        }
    }

    pub fn database_path(&self) -> PathBuf {
        self.database
            .clone()
            .unwrap_or_else(|| self.data_dir.join("hearth.db"))
    }

    /// Absolute: VM specs take absolute paths only, and `--images-dir data`
    /// is a natural thing to type.
    pub fn images_dir(&self) -> PathBuf {
        let dir = self
            .images_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.clone());
        std::path::absolute(&dir).unwrap_or(dir)
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_images_dir_becomes_absolute() {
        let c = ServerConfig {
            images_dir: Some(PathBuf::from("data")),
            ..ServerConfig::default()
        };
        let dir = c.images_dir();
        assert!(dir.is_absolute(), "{}", dir.display());
        assert!(dir.ends_with("data"));
    }

    #[test]
    fn defaults_are_zero_config() {
        let c = ServerConfig::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(c.database_path(), PathBuf::from("./data/hearth.db"));
        c.validate().expect("defaults validate");
    }

    #[test]
    fn file_then_env_override() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("hearth.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\ndata_dir = \"/srv/hearth\"\n[rates]\nvcpu_hour_cents = 7.5\n[vmm.qemu]\naccel = \"tcg\"\n",
        )
        .expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        let mut c: ServerConfig = toml::from_str(&text).expect("parse");
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.rates.vcpu_hour_cents, 7.5);
        assert_eq!(c.vmm.qemu.accel, AccelChoice::Tcg);
        assert_eq!(c.vmm.backend, hearth_vmm::Backend::Qemu);
        c.apply_env(|n| (n == "HEARTH_LISTEN").then(|| "127.0.0.1:7171".to_string()))
            .expect("env");
        assert_eq!(c.listen.port(), 7171);
        assert_eq!(c.data_dir, PathBuf::from("/srv/hearth"));
    }

    #[test]
    fn preview_embedding_and_the_metrics_listener_are_opt_in() {
        let c = ServerConfig::default();
        assert!(!c.preview.embed);
        assert_eq!(c.metrics.listen, None);
        let mut c: ServerConfig =
            toml::from_str("[preview]\nembed = true\n[metrics]\nlisten = \"127.0.0.1:9100\"\n")
                .expect("parse");
        assert!(c.preview.embed);
        assert_eq!(
            c.metrics.listen,
            Some("127.0.0.1:9100".parse().expect("addr"))
        );
        c.validate().expect("valid");
        c.metrics.listen = Some(c.listen);
        match c.validate() {
            Err(ConfigError::Invalid(v)) => assert!(v[0].contains("metrics.listen"), "{v:?}"),
            other => panic!("expected a clash, got {other:?}"),
        }
        assert!(toml::from_str::<ServerConfig>("[metrics]\nport = 1\n").is_err());
    }

    #[test]
    fn events_and_builds_tables_parse_and_are_checked() {
        let mut c: ServerConfig = toml::from_str(
            "[events]\nretention_days = 30\nmax_rows = 0\n[builds]\nlog_max_bytes = 1048576\n",
        )
        .expect("parse");
        assert_eq!(c.events.retention_days, 30);
        assert_eq!(c.events.max_rows, 0);
        assert_eq!(c.events.max_rows_per_tenant, 100_000);
        assert_eq!(
            (c.builds.log_max_bytes, c.builds.log_max_lines),
            (1 << 20, 20_000)
        );
        c.validate().expect("valid");
        assert!(toml::from_str::<ServerConfig>("[events]\nretention = 1\n").is_err());
        c.builds.log_max_bytes = 10;
        let err = c.validate().expect_err("too small");
        assert!(err.to_string().contains("builds.log_max_bytes"), "{err}");
    }

    #[test]
    fn an_unknown_vmm_backend_names_the_valid_ones() {
        let err = toml::from_str::<ServerConfig>("[vmm]\nbackend = \"firecracker\"\n")
            .expect_err("unknown backend");
        let msg = err.to_string();
        assert!(msg.contains("unknown variant `firecracker`"), "{msg}");
        assert!(msg.contains("expected `qemu`"), "{msg}");
        let c: ServerConfig = toml::from_str("[vmm]\nbackend = \"qemu\"\n").expect("qemu");
        assert_eq!(c.vmm.backend, hearth_vmm::Backend::Qemu);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_rejected() {
        assert!(toml::from_str::<ServerConfig>("lisen = \"x\"").is_err());
        let mut c = ServerConfig::default();
        let err = c
            .apply_env(|n| (n == "HEARTH_ACCEL").then(|| "hvf".to_string()))
            .expect_err("bad accel");
        assert!(err.to_string().contains("HEARTH_ACCEL"));
        c.rates.vcpu_hour_cents = -1.0;
        c.public_url = Some("ftp://x".into());
        match c.validate() {
            Err(ConfigError::Invalid(v)) => assert_eq!(v.len(), 2),
            other => panic!("expected two problems, got {other:?}"),
        }
    }
}
