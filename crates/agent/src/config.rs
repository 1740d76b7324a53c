//! Agent settings: from flags in `main`, or built directly by tests.

use std::path::PathBuf;

use crate::transport::ListenAddr;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where to serve; at least one.
    pub listen: Vec<ListenAddr>,
    /// Running as PID 1: mount filesystems, reap orphans, power off on exit.
    pub pid1: bool,
    /// Allowed to change system-wide state on `init` (clock, hostname,
    /// credited entropy). True in a VM; false for a host-process agent.
    pub manage_system: bool,
    /// User commands run as when a request names none. `None`: `sandbox` when
    /// it exists and the agent is root, else the agent's own user.
    pub default_user: Option<String>,
    /// Directory commands start in when a request names none and it exists.
    pub default_cwd: PathBuf,
    /// Cap on JSON request bodies (413 above it).
    pub max_json_body_bytes: usize,
    /// Ring buffer per background process, both streams together.
    pub process_buffer_bytes: usize,
    /// Exited processes whose records are kept for `get`.
    pub max_exited_processes: usize,
}

impl AgentConfig {
    /// Defaults for an agent serving `listen`.
    pub fn new(listen: Vec<ListenAddr>) -> Self {
        AgentConfig {
            listen,
            pid1: std::process::id() == 1,
            manage_system: std::process::id() == 1,
            default_user: None,
            default_cwd: PathBuf::from("/workspace"),
            max_json_body_bytes: 64 * 1024 * 1024,
            process_buffer_bytes: 1024 * 1024,
            max_exited_processes: 256,
        }
    }
}
