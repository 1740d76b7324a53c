//! Cold boot, and the launch every start shares: spawn QEMU in its jail,
//! record what a later driver needs to adopt it, wait for QMP.

use std::os::fd::RawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::args;
use super::layout::QemuLayout;
use super::process::QemuProcess;
use super::record::{prepare_dir, write_atomic, VmRecord, RECORD_FORMAT};
use super::{io_err, now_ms, QemuError, QemuVm, QemuVmm};
use crate::host::{Accel, HostInfo};
use crate::jail::JailSpec;
use crate::spec::VmSpec;
use crate::{VmState, VmmError};

impl QemuVmm {
    /// Cold boot; see [`Vmm::boot`].
    pub async fn boot_vm(&self, spec: VmSpec) -> Result<QemuVm, VmmError> {
        let span = tracing::info_span!("vm", sandbox_id = %spec.id);
        self.boot_inner(spec).instrument(span).await
    }

    pub(super) async fn boot_inner(&self, spec: VmSpec) -> Result<QemuVm, VmmError> {
        spec.validate()?;
        QemuLayout::of(&spec).check_sockets()?;
        if !spec.disk.is_file() {
            return Err(VmmError::InvalidSpec(vec![format!(
                "disk {} is not a file",
                spec.disk.display()
            )]));
        }
        spec.check_host(&HostInfo::probe())?;
        let id = spec.id.clone();
        let boot_err = |e: QemuError| VmmError::Boot {
            id: id.clone(),
            source: Box::new(e),
        };
        let started = Instant::now();
        let args = self.boot_args(&spec);
        let vm = self
            .launch(spec, args, false, None)
            .await
            .map_err(boot_err)?;
        vm.set_state(VmState::Running);
        let timeout = Duration::from_millis(vm.spec.boot_timeout_ms);
        if let Err(e) = vm.wait_agent_and_init(timeout, "boot").await {
            vm.teardown(false).await;
            return Err(boot_err(e));
        }
        let agent_ms = started.elapsed().as_millis();
        tracing::info!(
            pid = vm.process.pid(),
            accel = %self.accel,
            agent_ms,
            total_ms = started.elapsed().as_millis() as u64,
            "vm booted"
        );
        Ok(vm)
    }

    /// Spawns QEMU for `spec` with `args` in its jail and waits for its
    /// QMP socket. `template_ram` is a template's sealed RAM the VM maps
    /// (`sealed_ram`), which its arguments name as `/proc/self/fd/N`.
    pub(super) async fn launch(
        &self,
        spec: VmSpec,
        args: Vec<String>,
        owns_disk: bool,
        template_ram: Option<RawFd>,
    ) -> Result<QemuVm, QemuError> {
        let layout = QemuLayout::of(&spec);
        prepare_dir(&layout)?;
        let mut read_write: Vec<&Path> = Vec::new();
        if !spec.disk.starts_with(&layout.dir) {
            read_write.push(&spec.disk);
        }
        // A restore names the kernel's stub (`kernel_stub`), not the kernel.
        let kernel = args::value_of(&args, "-kernel").map(Path::new);
        let mut read_only = vec![spec.kernel.as_path(), &spec.initrd, &spec.base_image];
        read_only.extend(kernel.filter(|k| *k != spec.kernel));
        let jailed = self
            .jailer()?
            .prepare(&JailSpec {
                dir: &layout.dir,
                read_only,
                read_write,
                inherit: template_ram,
                disk: &spec.disk,
                egress: spec.egress,
                policy: spec.egress_policy.as_ref(),
                vcpus: spec.vcpus,
                memory_mb: spec.memory_mb,
                kvm: self.accel == Accel::Kvm,
            })
            .await?;
        let (mut jail, pre_exec) = match jailed {
            Some((h, p)) => (Some(h), Some(p)),
            None => (None, None),
        };
        let process = match QemuProcess::spawn(
            &self.config.binary,
            &args,
            &layout.vmm_log,
            pre_exec,
            self.host_memory(),
        ) {
            Ok(p) => p,
            Err(source) => {
                if let Some(j) = jail.as_mut() {
                    j.release().await;
                }
                return Err(QemuError::Spawn {
                    binary: self.config.binary.clone(),
                    source,
                });
            }
        };
        let record = VmRecord {
            format: RECORD_FORMAT,
            spec,
            binary: self.config.binary.clone(),
            args,
            pid: process.pid(),
            accel: self.accel,
            version: self.version().await,
            owns_disk,
            started_at_ms: now_ms(),
            jail: jail.as_ref().map(|j| j.record().clone()),
        };
        let vm = QemuVm::new(
            record,
            process,
            jail,
            self.qmp_timeout(),
            Duration::from_millis(self.config.migrate_timeout_ms),
        );
        vm.start_console();
        let written = serde_json::to_vec_pretty(&vm.record)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            .and_then(|json| write_atomic(&layout.record, &json))
            .and_then(|()| {
                write_atomic(
                    &layout.pidfile,
                    format!("{}\n", vm.process.pid()).as_bytes(),
                )
            })
            .map_err(io_err("write vm record", &layout.record));
        if let Err(e) = written {
            vm.teardown(owns_disk).await;
            return Err(e);
        }
        if let Err(e) = vm.connect_qmp_first().await {
            vm.teardown(owns_disk).await;
            return Err(e);
        }
        Ok(vm)
    }
}
