//! Adopt: a new driver instance takes over a VM an earlier one started,
//! from the VM directory's `vm.json`.

use std::path::Path;
use std::time::Duration;

use super::layout::QemuLayout;
use super::process::{self, QemuProcess};
use super::record::read_record;
use super::{QemuError, QemuVm, QemuVmm};
use crate::{VmState, VmmError};

impl QemuVmm {
    /// Takes over a running VM from its directory; see [`Vmm::adopt`].
    pub async fn adopt_vm(&self, dir: &Path) -> Result<QemuVm, VmmError> {
        let adopt_err = |e: QemuError| VmmError::Adopt {
            dir: dir.to_path_buf(),
            source: Box::new(e),
        };
        let layout = QemuLayout::new(dir);
        let record = read_record(&layout.record).map_err(adopt_err)?;
        let pid = record.pid;
        if !process::is_alive(pid) {
            return Err(adopt_err(QemuError::ProcessGone { pid }));
        }
        let ours = process::cmdline(pid).is_some_and(|c| c.get(1..) == Some(&record.args[..]));
        if !ours {
            return Err(adopt_err(QemuError::NotOurProcess { pid }));
        }
        let jail = match (&record.jail, self.jailer.as_ref()) {
            (Some(r), Ok(j)) => Some(j.adopt(r.clone()).await),
            _ => None,
        };
        let vm = QemuVm::new(
            record,
            QemuProcess::adopt(pid),
            jail,
            self.qmp_timeout(),
            Duration::from_millis(self.config.migrate_timeout_ms),
        );
        vm.start_console();
        let status = vm.query_status().await.map_err(adopt_err)?;
        vm.set_state(if status.running {
            VmState::Running
        } else {
            VmState::Paused
        });
        tracing::info!(sandbox_id = %vm.spec.id, pid, status = %status.status, "vm adopted");
        Ok(vm)
    }
}
