//! `hearth-core`: the control plane's operations, below any API and above
//! the drivers. Every route (REST today in `hearth-server`, others
//! tomorrow) calls [`Core`] methods only; this crate does not depend on
//! any HTTP crate, so it cannot name an HTTP type, and it fails with
//! [`error::Error`]. It also holds what those operations stand on: the
//! domain records ([`model`]), the [`store`] (SQLite), the server's
//! [`config`] and its [`metrics`].
//!
//! One folder per service, each owning its state (private to the folder)
//! and its `impl Core` block:
//! - `sandboxes/`: create, list, get, patch, destroy; one lifecycle actor
//!   per live sandbox (`actor.rs`), its timers, network policy, and the
//!   re-adoption of VMs at start (`recovery.rs`);
//! - `guest/`: work inside a running sandbox (exec, files, processes,
//!   terminals, tunnels) through its agent;
//! - `snapshots/`: user snapshots, restore and fork;
//! - `templates/`: the template resolver and custom template builds;
//! - `warm/`: template snapshots per VM shape and the pool of pre-cloned
//!   VMs;
//! - `previews/`: preview URLs and share tokens;
//! - `deployments/`: sandboxes published as services, versions, rollout;
//! - `keys/`: API keys, authentication and idempotent replays;
//! - `secrets/`: the secrets vault, bindings, and masking values in output;
//! - `audit/`: the audit log of every mutating action and denied attempt;
//! - `access.rs`: long-lived connections end when their grant is taken
//!   away;
//! - `events/`: the event log and its followers;
//! - `usage/`: metering and usage reports.
//!
//! Shared by all: the store, the VMM driver, the clock, the event bus.

pub mod access;
pub mod audit;
pub mod clock;
pub mod config;
pub mod deployments;
pub mod error;
pub mod events;
pub mod guest;
pub mod ids;
pub mod keys;
pub mod locks;
pub mod metrics;
pub mod model;
pub mod nodes;
pub mod previews;
pub mod quotas;
pub mod sandboxes;
pub mod seal;
pub mod secrets;
pub mod snapshots;
pub mod store;
pub mod templates;
pub mod usage;
pub mod warm;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;

use hearth_vmm::Vmm;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::store::Store;
use clock::Clock;
use events::EventBus;
use keys::KeyCache;
use sandboxes::actor::SandboxHandle;
use sandboxes::timers::Timers;
use templates::Templates;

/// The control plane. Its fields are private to `core`; each service's
/// own state is a type whose fields are private to that service's folder.
#[derive(Debug)]
pub struct Core {
    pub config: ServerConfig,
    pub metrics: crate::metrics::Metrics,
    store: Arc<dyn Store>,
    vmm: Arc<dyn Vmm>,
    clock: Arc<dyn Clock>,
    events: EventBus,
    /// sandboxes/: live (not destroyed) sandboxes by id, and their
    /// deadlines.
    sandboxes: RwLock<HashMap<String, Arc<SandboxHandle>>>,
    timers: Timers,
    /// templates/: the resolver, and custom template builds.
    templates: Arc<dyn Templates>,
    builds: templates::builds::Builds,
    /// warm/: template snapshots being written, and pre-cloned VMs.
    warm_builds: warm::WarmBuilds,
    warm_pool: warm::WarmPool,
    /// snapshots/: which are being read, which get a fast-clone form.
    snapshots: snapshots::SnapshotState,
    /// previews/: where the proxy listens.
    previews: previews::PreviewState,
    /// keys/: verified keys, and idempotency locks.
    keys: KeyCache,
    /// access.rs: moves when a key or share token loses its access.
    access: access::AccessChanges,
    idempotency_locks: keys::idempotency::Locks,
    /// quotas/: one lock per tenant with a quota check in flight.
    quota_locks: quotas::QuotaLocks,
    /// deployments/: one publish, promotion or rollback per deployment at
    /// a time.
    deploy_locks: locks::KeyedLocks,
    /// Deployments' routes as the proxy reads them.
    app_routes: deployments::routing::Routes,
    rate_overrides: quotas::RateOverrides,
    /// Encrypts what is stored but must not be readable at rest.
    sealer: seal::Sealer,
    /// Absolute data directory.
    data_dir: PathBuf,
    /// This server's id among the nodes sharing the store.
    node_id: String,
    /// nodes/peers.rs: the other nodes, to reach what they run.
    peers: nodes::peers::Peers,
    shutdown: CancellationToken,
}

impl Core {
    /// Builds the core; [`Core::start`] then recovers sandboxes and starts
    /// the timers.
    pub fn new(
        config: ServerConfig,
        store: Arc<dyn Store>,
        vmm: Arc<dyn Vmm>,
        templates: Arc<dyn Templates>,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Arc<Core>> {
        private_dir(&config.data_dir)?;
        let data_dir = std::path::absolute(&config.data_dir)?;
        let key_file = match &config.secrets_key_file {
            Some(f) => std::path::absolute(f)?,
            None => data_dir.join(seal::KEY_FILE),
        };
        let sealer = seal::Sealer::open_or_create(&key_file)?;
        let events = EventBus::new(store.clone(), clock.clone());
        let node_id = nodes::node_id(&config, &data_dir)?;
        Ok(Arc::new(Core {
            node_id,
            peers: Default::default(),
            events,
            timers: Timers::new(clock.clone()),
            metrics: crate::metrics::Metrics::default(),
            keys: KeyCache::default(),
            access: Default::default(),
            idempotency_locks: Default::default(),
            quota_locks: Default::default(),
            deploy_locks: Default::default(),
            app_routes: Default::default(),
            rate_overrides: Default::default(),
            sealer,
            warm_builds: Default::default(),
            builds: Default::default(),
            warm_pool: Default::default(),
            snapshots: Default::default(),
            previews: Default::default(),
            sandboxes: RwLock::new(HashMap::new()),
            data_dir,
            shutdown: CancellationToken::new(),
            config,
            store,
            vmm,
            templates,
            clock,
        }))
    }

    /// Re-adopts what was running before, then starts the timer wheel.
    pub async fn start(self: &Arc<Core>) -> anyhow::Result<()> {
        self.join_cluster().await?;
        sandboxes::recovery::recover(self).await?;
        sandboxes::timers::spawn_wheel(self.clone(), self.shutdown.clone());
        self.load_domains().await?;
        deployments::supervise::settle_after_restart(self).await?;
        deployments::supervise::spawn(self.clone(), self.shutdown.clone());
        self.prebuild_warm().await;
        Ok(())
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// A secret only this server derives from `input` (for `context`),
    /// the same every time: a credential that needs no storage.
    pub fn derive_secret(&self, context: &str, input: &str) -> [u8; 32] {
        self.sealer.derive(context.as_bytes(), input.as_bytes())
    }

    /// What the VMM driver can do on this host.
    pub fn vmm_capabilities(&self) -> hearth_vmm::Capabilities {
        self.vmm.capabilities()
    }

    /// Wakes the timer wheel at once (after a test moved its clock).
    pub fn poke_timers(&self) {
        self.timers.poke();
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    pub fn sandboxes_dir(&self) -> PathBuf {
        self.data_dir.join("sandboxes")
    }

    /// Where a paused sandbox's snapshot lives.
    pub fn paused_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("paused").join(id)
    }

    pub fn handle(&self, id: &str) -> Option<Arc<SandboxHandle>> {
        self.sandboxes.read().get(id).cloned()
    }

    pub(crate) fn insert_handle(&self, h: Arc<SandboxHandle>) {
        self.sandboxes.write().insert(h.id.clone(), h);
    }

    pub(crate) fn remove_handle(&self, id: &str) {
        self.sandboxes.write().remove(id);
    }

    pub fn live_handles(&self) -> Vec<Arc<SandboxHandle>> {
        self.sandboxes.read().values().cloned().collect()
    }

    /// Stops background work. Sandboxes keep running: a restarted server
    /// re-adopts them.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Creates `dir` (and its parents) if needed and makes it the owner's
/// alone (0700): the data directory holds the database, keys, snapshots
/// and disks, which no other user of the host may read. VMs reach their
/// files through their jail's bind mounts, made before privileges drop.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
