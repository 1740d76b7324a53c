//! The backend-neutral error: one variant per operation, the driver's own
//! error as `#[source]` (downcast it to e.g. [`crate::QemuError`] for detail).

use std::path::PathBuf;

use crate::VmState;

/// A driver's own error, kept behind the operation that failed.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// Every problem found in the spec, at once.
    #[error("invalid vm spec: {}", .0.join("; "))]
    InvalidSpec(Vec<String>),
    #[error("host cannot run vm {id}: {reason}")]
    Resources { id: String, reason: String },
    #[error("vm {id} is {state}, cannot {op}")]
    InvalidState {
        id: String,
        state: VmState,
        op: &'static str,
    },
    #[error("boot vm {id}")]
    Boot {
        id: String,
        #[source]
        source: BackendError,
    },
    #[error("restore vm {id} from {}", snapshot.display())]
    Restore {
        id: String,
        snapshot: PathBuf,
        #[source]
        source: BackendError,
    },
    #[error("snapshot vm {id}")]
    Snapshot {
        id: String,
        #[source]
        source: BackendError,
    },
    #[error("pause vm {id}")]
    Pause {
        id: String,
        #[source]
        source: BackendError,
    },
    #[error("resume vm {id}")]
    Resume {
        id: String,
        #[source]
        source: BackendError,
    },
    #[error("destroy vm {id}")]
    Destroy {
        id: String,
        #[source]
        source: BackendError,
    },
    #[error("change the network of vm {id}")]
    Network {
        id: String,
        #[source]
        source: BackendError,
    },
    #[error("adopt vm from {}", dir.display())]
    Adopt {
        dir: PathBuf,
        #[source]
        source: BackendError,
    },
    #[error("connect to agent of vm {id}")]
    ConnectAgent {
        id: String,
        #[source]
        source: BackendError,
    },
    #[error("control channel of vm {id}")]
    Qmp {
        id: String,
        #[source]
        source: BackendError,
    },
}

impl VmmError {
    /// Short name of the operation that failed, for logs and metrics.
    pub fn operation(&self) -> &'static str {
        match self {
            VmmError::InvalidSpec(_) => "validate",
            VmmError::Resources { .. } => "resources",
            VmmError::InvalidState { op, .. } => op,
            VmmError::Boot { .. } => "boot",
            VmmError::Restore { .. } => "restore",
            VmmError::Snapshot { .. } => "snapshot",
            VmmError::Pause { .. } => "pause",
            VmmError::Resume { .. } => "resume",
            VmmError::Destroy { .. } => "destroy",
            VmmError::Network { .. } => "network",
            VmmError::Adopt { .. } => "adopt",
            VmmError::ConnectAgent { .. } => "connect_agent",
            VmmError::Qmp { .. } => "qmp",
        }
    }

    /// The whole `source()` chain on one line, for edges that print errors.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cur = e.source();
        }
        out
    }
}
