//! `hearth-agent`: the program inside every sandbox. The host reaches a guest
//! only through it: exec, background processes, PTYs, files, watches and TCP
//! tunnels, served as HTTP/2 over one byte stream (see `hearth-agent-protocol`).
//!
//! The same library runs as PID 1 in a VM and as a plain host process in tests.

pub mod config;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod init;
pub mod net;
pub mod pid1;
pub mod spawn;
pub mod stream;
pub mod transport;
pub mod users;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;

pub use config::AgentConfig;

/// Identity and env the host handed over with `init`.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub sandbox_id: Option<String>,
    pub env: BTreeMap<String, String>,
}

/// Everything handlers share. One per agent process.
#[derive(Debug)]
pub struct Agent {
    pub config: AgentConfig,
    pub started: Instant,
    pub identity: RwLock<Identity>,
    pub reaper: Arc<spawn::Reaper>,
    pub processes: handlers::processes::ProcessTable,
    pub ptys: handlers::pty::PtyTable,
    /// Fired by `shutdown` and SIGTERM; listeners and sessions wind down.
    pub shutdown: CancellationToken,
    /// Set by `shutdown {reboot: true}`: PID 1 reboots instead of powering off.
    pub reboot_requested: AtomicBool,
}

impl Agent {
    /// Creates the shared state and starts the child reaper. Must run inside a
    /// tokio runtime.
    pub fn new(config: AgentConfig) -> Arc<Agent> {
        let reaper = spawn::Reaper::start();
        Arc::new(Agent {
            config,
            started: Instant::now(),
            identity: RwLock::new(Identity::default()),
            reaper,
            processes: Default::default(),
            ptys: Default::default(),
            shutdown: CancellationToken::new(),
            reboot_requested: AtomicBool::new(false),
        })
    }

    pub fn shutdown_reboot(&self) -> bool {
        self.reboot_requested.load(Ordering::Relaxed)
    }

    /// Env set by `init`, applied under every request's own env.
    pub fn base_env(&self) -> BTreeMap<String, String> {
        self.identity.read().env.clone()
    }
}

/// The agent's routes. Each handler module owns its paths.
pub fn router(agent: Arc<Agent>) -> Router {
    let limit = agent.config.max_json_body_bytes;
    Router::new()
        .merge(handlers::lifecycle::routes())
        .merge(handlers::exec::routes())
        .merge(handlers::processes::routes())
        .merge(handlers::pty::routes())
        .merge(handlers::tunnel::routes())
        .merge(handlers::files::routes())
        .merge(handlers::watch::routes())
        .merge(handlers::archive::routes())
        .fallback(|| async {
            error::HandlerError::new(
                hearth_agent_protocol::ErrorCode::BadRequest,
                "unknown route",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(agent)
}

/// Keeps 1 MiB transfer buffers on the heap and freed memory in the process
/// for a while: glibc would otherwise mmap and unmap every buffer, and each
/// first touch of fresh pages costs a fault (expensive in a VM), which made
/// large file transfers stall at random. Bounded, so an idle guest's agent
/// still returns memory.
pub fn tune_allocator() {
    // SAFETY: mallopt only adjusts allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 * 1024 * 1024);
    }
}

/// Runs the agent until shutdown: PID 1 duties when applicable, then serves
/// every listen address.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    if config.pid1 {
        pid1::setup_system()?;
        pid1::link_virtio_ports();
    } else {
        pid1::become_subreaper();
    }
    let agent = Agent::new(config);
    pid1::spawn_signal_handler(agent.clone());
    let mut tasks = Vec::new();
    for addr in agent.config.listen.clone() {
        let agent = agent.clone();
        let token = agent.shutdown.clone();
        tasks.push(tokio::spawn(async move {
            transport::serve(agent, addr, token).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    tracing::info!("agent stopped");
    if agent.config.pid1 {
        pid1::power_off(agent.shutdown_reboot());
    }
    Ok(())
}
