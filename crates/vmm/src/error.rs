//! The backend-neutral error: one variant per operation, the driver's own
//! error as `#[source]` (downcast it to e.g. [`crate::QemuError`] for detail).

use std::path::PathBuf;

use hearth_agent_protocol::causes;

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
    /// The host filesystem the operation writes to is full: the caller
    /// can free space and retry. Drivers report it for snapshots.
    #[error("{op} vm {id}: host disk full")]
    NoSpace {
        id: String,
        op: &'static str,
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
    #[error("inspect snapshot {}", dir.display())]
    InspectSnapshot {
        dir: PathBuf,
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
            VmmError::NoSpace { op, .. } => op,
            VmmError::Pause { .. } => "pause",
            VmmError::Resume { .. } => "resume",
            VmmError::Destroy { .. } => "destroy",
            VmmError::Network { .. } => "network",
            VmmError::InspectSnapshot { .. } => "inspect_snapshot",
            VmmError::Adopt { .. } => "adopt",
            VmmError::ConnectAgent { .. } => "connect_agent",
            VmmError::Qmp { .. } => "qmp",
        }
    }

    /// Whether the failure was a full host disk ([`VmmError::NoSpace`]
    /// here or anywhere down the chain, e.g. under a restore that had to
    /// write a snapshot first).
    pub fn is_no_space(&self) -> bool {
        causes(self).any(|e| matches!(e.downcast_ref::<VmmError>(), Some(VmmError::NoSpace { .. })))
    }

    /// The end of the guest console, when the VM stopped or its agent never
    /// answered during the failed operation (a boot or restore that has no
    /// [`crate::Vm`] to ask).
    pub fn console_tail(&self) -> Option<&str> {
        // Each driver whose errors quote the console is asked here.
        causes(self).find_map(|e| {
            e.downcast_ref::<crate::QemuError>()
                .and_then(crate::QemuError::console_tail)
        })
    }

    /// The whole `source()` chain on one line, for edges that print errors.
    pub fn chain(&self) -> String {
        hearth_agent_protocol::error_chain(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QemuError;

    fn enospc() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::ENOSPC)
    }

    #[test]
    fn a_full_disk_is_the_typed_variant_anywhere_in_the_chain() {
        let full = VmmError::NoSpace {
            id: "a".into(),
            op: "snapshot",
            source: Box::new(enospc()),
        };
        assert!(full.is_no_space());
        assert_eq!(full.operation(), "snapshot");
        assert!(full
            .chain()
            .ends_with("No space left on device (os error 28)"));
        let under_restore = VmmError::Restore {
            id: "a".into(),
            snapshot: "/s".into(),
            source: Box::new(full),
        };
        assert!(under_restore.is_no_space());
        // What a driver wrote is not read here: only the variant counts.
        let worded = VmmError::Snapshot {
            id: "a".into(),
            source: Box::new(QemuError::Migration {
                status: "failed".into(),
                desc: "No space left on device".into(),
            }),
        };
        assert!(!worded.is_no_space());
    }

    #[test]
    fn the_console_tail_comes_from_the_drivers_error() {
        let timeout = VmmError::Boot {
            id: "a".into(),
            source: Box::new(QemuError::AgentTimeout {
                waited: std::time::Duration::from_secs(1),
                console_tail: "Kernel panic".into(),
                last: None,
            }),
        };
        assert_eq!(timeout.console_tail(), Some("Kernel panic"));
        let nested = VmmError::Restore {
            id: "a".into(),
            snapshot: "/s".into(),
            source: Box::new(timeout),
        };
        assert_eq!(nested.console_tail(), Some("Kernel panic"));
        let other = VmmError::Boot {
            id: "a".into(),
            source: Box::new(enospc()),
        };
        assert_eq!(other.console_tail(), None);
    }
}
