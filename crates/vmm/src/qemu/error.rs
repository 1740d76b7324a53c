//! The QEMU driver's own errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_agent_client::AgentClientError;

use crate::jail::JailError;
use crate::qmp::QmpError;

/// The QEMU driver's own errors; they reach callers as the `source` of a
/// [`VmmError`].
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("spawn {}", binary.display())]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("qemu exited ({status}) during {stage}\n--- vmm log ---\n{vmm_log}\n--- console tail ---\n{console_tail}")]
    Exited {
        status: String,
        stage: &'static str,
        vmm_log: String,
        console_tail: String,
    },
    #[error("qmp")]
    Qmp(#[from] QmpError),
    #[error("guest agent did not answer within {waited:?}\n--- console tail ---\n{console_tail}")]
    AgentTimeout {
        waited: Duration,
        console_tail: String,
        #[source]
        last: Option<AgentClientError>,
    },
    #[error("guest agent")]
    Agent(#[source] AgentClientError),
    #[error("jail")]
    Jail(#[from] JailError),
    #[error("migration {status}: {desc}")]
    Migration { status: String, desc: String },
    #[error("no space left on the filesystem of {}", path.display())]
    NoSpace {
        path: PathBuf,
        #[source]
        source: Box<QemuError>,
    },
    #[error("migration did not finish within {0:?}")]
    MigrationTimeout(Duration),
    #[error("snapshot {}: {reason}", dir.display())]
    BadSnapshot { dir: PathBuf, reason: String },
    #[error("template snapshots need a vm booted with shared-file memory")]
    NotTemplateCapable,
    #[error("{} already holds a snapshot", dir.display())]
    SnapshotExists { dir: PathBuf },
    #[error("{} is in use by vmm pid {pid}", dir.display())]
    DirInUse { dir: PathBuf, pid: i32 },
    #[error("vm record {}: {reason}", path.display())]
    BadRecord { path: PathBuf, reason: String },
    #[error("vmm process {pid} is gone")]
    ProcessGone { pid: i32 },
    #[error("pid {pid} is not the vmm of this directory")]
    NotOurProcess { pid: i32 },
    #[error("vmm pid {pid} did not exit after SIGKILL")]
    Unkillable { pid: i32 },
    #[error("restore arguments: {0}")]
    Args(String),
}

impl QemuError {
    /// The host filesystem ran out of room (ENOSPC anywhere in the chain,
    /// or a migration that failed on a full disk).
    pub fn is_no_space(&self) -> bool {
        hearth_agent_protocol::causes(self).any(|e| {
            matches!(
                e.downcast_ref::<QemuError>(),
                Some(QemuError::NoSpace { .. })
            ) || e
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.raw_os_error() == Some(libc::ENOSPC))
        })
    }

    /// The end of the guest console this error quotes (a VM that exited
    /// or whose agent never answered).
    pub fn console_tail(&self) -> Option<&str> {
        match self {
            QemuError::Exited { console_tail, .. }
            | QemuError::AgentTimeout { console_tail, .. } => Some(console_tail),
            _ => None,
        }
    }
}

pub(super) fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> QemuError {
    let path = path.to_path_buf();
    move |source| QemuError::Io { what, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that hides an io error one level down, as the image
    /// store's copy errors do.
    #[derive(Debug, thiserror::Error)]
    #[error("copy")]
    struct Wrapper(#[source] std::io::Error);

    #[test]
    fn enospc_and_a_full_migration_count_as_no_space() {
        let enospc = || std::io::Error::from_raw_os_error(libc::ENOSPC);
        let io = |source| QemuError::Io {
            what: "copy disk from",
            path: "/d".into(),
            source,
        };
        assert!(io(enospc()).is_no_space());
        assert!(io(std::io::Error::other(Wrapper(enospc()))).is_no_space());
        assert!(!io(std::io::Error::from_raw_os_error(libc::EIO)).is_no_space());
        let failed = QemuError::Migration {
            status: "failed".into(),
            desc: "Unable to write to file".into(),
        };
        assert!(!failed.is_no_space());
        assert!(QemuError::NoSpace {
            path: "/d/state.bin".into(),
            source: Box::new(failed),
        }
        .is_no_space());
    }
}
