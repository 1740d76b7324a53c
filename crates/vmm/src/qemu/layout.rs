//! The VM directory as QEMU uses it: the backend-neutral [`RunLayout`]
//! plus QEMU's own sockets (QMP control and the serial console). They stay
//! here so nothing outside the driver learns how QEMU is controlled.

use std::ops::Deref;
use std::path::{Path, PathBuf};

use crate::spec::{check_socket_path, RunLayout, VmSpec};
use crate::VmmError;

/// Files of a QEMU VM's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QemuLayout {
    run: RunLayout,
    /// QMP, how the driver controls QEMU.
    pub qmp_socket: PathBuf,
    /// Where QEMU serves the guest's serial console (the driver reads it
    /// into the run layout's capped `console_log`).
    pub console_socket: PathBuf,
}

impl QemuLayout {
    pub(crate) fn new(dir: &Path) -> QemuLayout {
        QemuLayout {
            run: RunLayout::new(dir),
            qmp_socket: dir.join("qmp.sock"),
            console_socket: dir.join("console.sock"),
        }
    }

    pub(crate) fn of(spec: &VmSpec) -> QemuLayout {
        QemuLayout::new(&spec.dir)
    }

    /// Every file the driver creates in the directory.
    pub(crate) fn run_files(&self) -> impl Iterator<Item = &Path> {
        self.run
            .run_files()
            .into_iter()
            .chain([self.qmp_socket.as_path(), self.console_socket.as_path()])
    }

    /// QEMU's sockets must fit a Unix socket address, like the agent's
    /// (which [`VmSpec::validate`] checks).
    pub(crate) fn check_sockets(&self) -> Result<(), VmmError> {
        let mut bad = Vec::new();
        for sock in [&self.qmp_socket, &self.console_socket] {
            check_socket_path(sock, &mut bad);
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(VmmError::InvalidSpec(bad))
        }
    }
}

impl Deref for QemuLayout {
    type Target = RunLayout;
    fn deref(&self) -> &RunLayout {
        &self.run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_sockets_sit_beside_the_neutral_files() {
        let l = QemuLayout::new(Path::new("/tmp/hearth-t/sb-1"));
        assert_eq!(l.qmp_socket, Path::new("/tmp/hearth-t/sb-1/qmp.sock"));
        assert_eq!(l.agent_socket, Path::new("/tmp/hearth-t/sb-1/agent.sock"));
        let files: Vec<&Path> = l.run_files().collect();
        assert!(files.contains(&l.qmp_socket.as_path()));
        assert!(files.contains(&l.console_socket.as_path()));
        assert!(files.contains(&l.record.as_path()));
        l.check_sockets().unwrap();
        // "console.sock" is the longest name: a directory the agent
        // socket still fits in can be too long for it.
        let long = QemuLayout::new(&PathBuf::from(format!("/{}", "d".repeat(95))));
        assert!(long.agent_socket.as_os_str().len() <= 107);
        let err = long.check_sockets().unwrap_err().to_string();
        assert!(err.contains("console.sock"), "{err}");
    }
}
