//! The control plane's operations, below HTTP and above the drivers: every
//! handler calls one `Core` method. `Core` owns the store, the VMM driver,
//! the template resolver, the event bus, the timer wheel and one lifecycle
//! actor per live sandbox.

pub mod actor;
pub mod builds;
pub mod clock;
pub mod error;
pub mod events;
pub mod guest;
pub mod idempotency;
pub mod ids;
pub mod keys;
pub mod metering;
pub mod network;
pub mod previews;
pub mod recovery;
pub mod sandboxes;
pub mod snapshots;
pub mod templates;
pub mod timers;
pub mod warm;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use hearth_vmm::Vmm;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::store::Store;
use actor::SandboxHandle;
use clock::Clock;
use events::EventBus;
use keys::KeyCache;
use templates::Templates;
use timers::Timers;

/// Shared state of the control plane.
#[derive(Debug)]
pub struct Core {
    pub config: ServerConfig,
    pub store: Arc<dyn Store>,
    pub vmm: Arc<dyn Vmm>,
    pub templates: Arc<dyn Templates>,
    pub clock: Arc<dyn Clock>,
    pub events: EventBus,
    pub timers: Timers,
    pub metrics: crate::metrics::Metrics,
    keys: KeyCache,
    pub(crate) idempotency_locks: idempotency::Locks,
    pub(crate) warm_builds: warm::WarmBuilds,
    pub(crate) builds: builds::Builds,
    pub(crate) warm_pool: warm::WarmPool,
    pub(crate) snapshots_in_use: snapshots::InUse,
    /// Snapshots whose fast-clone form is being written.
    pub(crate) fast_forks: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The port the preview proxy listens on, once it does.
    preview_port: std::sync::OnceLock<u16>,
    /// Live (not destroyed) sandboxes by id.
    sandboxes: RwLock<HashMap<String, Arc<SandboxHandle>>>,
    /// Absolute data directory.
    data_dir: PathBuf,
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
        std::fs::create_dir_all(&config.data_dir)?;
        let data_dir = std::path::absolute(&config.data_dir)?;
        let events = EventBus::new(store.clone(), clock.clone());
        Ok(Arc::new(Core {
            events,
            timers: Timers::new(clock.clone()),
            metrics: crate::metrics::Metrics::default(),
            keys: KeyCache::default(),
            idempotency_locks: idempotency::Locks::default(),
            warm_builds: warm::WarmBuilds::default(),
            builds: builds::Builds::default(),
            warm_pool: warm::WarmPool::default(),
            snapshots_in_use: snapshots::InUse::default(),
            fast_forks: Default::default(),
            preview_port: Default::default(),
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
    pub async fn start(self: &Arc<Core>) -> Result<(), crate::store::StoreError> {
        recovery::recover(self).await?;
        timers::spawn_wheel(self.clone(), self.shutdown.clone());
        Ok(())
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
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
        self.sandboxes
            .read()
            .expect("sandbox map lock is never poisoned")
            .get(id)
            .cloned()
    }

    pub(crate) fn insert_handle(&self, h: Arc<SandboxHandle>) {
        self.sandboxes
            .write()
            .expect("sandbox map lock is never poisoned")
            .insert(h.id.clone(), h);
    }

    pub(crate) fn remove_handle(&self, id: &str) {
        self.sandboxes
            .write()
            .expect("sandbox map lock is never poisoned")
            .remove(id);
    }

    pub fn live_handles(&self) -> Vec<Arc<SandboxHandle>> {
        self.sandboxes
            .read()
            .expect("sandbox map lock is never poisoned")
            .values()
            .cloned()
            .collect()
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
