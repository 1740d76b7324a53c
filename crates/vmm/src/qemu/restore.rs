//! Restore: a new VM from a snapshot directory, with the snapshot's exact
//! QEMU arguments rewritten for the new VM's paths and RAM backing; and
//! the detour QEMU needs to bring a template back into shared memory.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::args::{self, Ram, Rewrite};
use super::kernel_stub;
use super::layout::QemuLayout;
use super::manifest::{SnapshotManifest, MEMORY_FILE};
use super::record::{prepare_dir, remove_disk_and_dir};
use super::{blocking, io_err, QemuError, QemuVm, QemuVmm};
use crate::host::HostInfo;
use crate::snapshot::{self, AfterSnapshot, SnapshotKind, SnapshotOptions};
use crate::spec::{MemoryBacking, VmSpec};
use crate::tsc;
use crate::{VmState, VmmError};

/// Where, inside the new VM's directory, a template restored into shared
/// memory passes through as a full snapshot.
const VIA_FULL_DIR: &str = "restore-full";

impl QemuVmm {
    /// Restore from a snapshot directory; see [`Vmm::restore`].
    pub async fn restore_vm(&self, snapshot: &Path, spec: VmSpec) -> Result<QemuVm, VmmError> {
        let span = tracing::info_span!("vm", sandbox_id = %spec.id);
        let template =
            SnapshotManifest::load(snapshot).is_ok_and(|m| m.kind == SnapshotKind::Template);
        if template && spec.memory == MemoryBacking::SharedFile {
            self.restore_template_shared(snapshot, spec)
                .instrument(span)
                .await
        } else {
            self.restore_inner(snapshot, spec).instrument(span).await
        }
    }

    /// A template snapshot restored into shared-file memory, so the VM can
    /// be snapshotted as a template in turn (how templates stack). QEMU 7.2
    /// brings a template's RAM file, copied and mapped shared, back as
    /// zeros under `x-ignore-shared`, so this goes through a full snapshot:
    /// a private clone of the template writes one into the new VM's
    /// directory and exits, and a shared-memory restore of it follows.
    async fn restore_template_shared(
        &self,
        template: &Path,
        spec: VmSpec,
    ) -> Result<QemuVm, VmmError> {
        let started = Instant::now();
        let via = spec.dir.join(VIA_FULL_DIR);
        let mut private = spec.clone();
        private.memory = MemoryBacking::Anonymous;
        let clone = self.restore_inner(template, private).await?;
        let saved = clone
            .snapshot(&via, SnapshotOptions::full().then(AfterSnapshot::Exit))
            .await;
        let destroyed = clone.destroy().await;
        let via_ms = started.elapsed().as_millis() as u64;
        let res = match saved.and(destroyed) {
            Ok(_) => self.restore_inner(&via, spec.clone()).await,
            Err(e) => Err(e),
        };
        if let Err(e) = std::fs::remove_dir_all(&via) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %via.display(), error = %e, "remove intermediate snapshot");
            }
        }
        match res {
            Ok(vm) => {
                tracing::info!(
                    via_full_ms = via_ms,
                    total_ms = started.elapsed().as_millis() as u64,
                    "template restored into shared memory"
                );
                Ok(vm)
            }
            Err(e) => {
                // Only when empty: what else is in it is not ours.
                let _ = std::fs::remove_dir(&spec.dir);
                Err(VmmError::Restore {
                    id: spec.id,
                    snapshot: template.to_path_buf(),
                    source: Box::new(e),
                })
            }
        }
    }

    /// A restored guest keeps the TSC rate it booted with: one told
    /// another rate than this host's (a snapshot from another host, or
    /// from before the rate was measured) runs its clocks that much fast
    /// or slow. It is still restored, since refusing would strand a user's
    /// snapshot, but said; the snapshots a server rebuilds itself carry
    /// the rate in their identity ([`crate::Vmm::guest_clock_tag`]).
    fn warn_if_clock_differs(&self, snap: &Path, stored_args: &[String]) {
        let (Some(was), Some(host)) = (args::tsc_early_khz(stored_args), self.guest_tsc_khz) else {
            return;
        };
        if tsc::mhz(was) != tsc::mhz(host) {
            tracing::warn!(
                snapshot = %snap.display(),
                snapshot_tsc_khz = was,
                host_tsc_khz = host,
                clock_rate = format!("{:.3}", f64::from(host) / f64::from(was)),
                "the snapshot's guest was told another TSC rate than this host's: \
                 its clocks run at clock_rate times the host's until it is booted anew here"
            );
        }
    }

    pub(super) async fn restore_inner(
        &self,
        snap: &Path,
        mut spec: VmSpec,
    ) -> Result<QemuVm, VmmError> {
        let started = Instant::now();
        let id = spec.id.clone();
        let restore_err = |e: QemuError| VmmError::Restore {
            id: id.clone(),
            snapshot: snap.to_path_buf(),
            source: Box::new(e),
        };
        let bad = |reason: String| {
            restore_err(QemuError::BadSnapshot {
                dir: snap.to_path_buf(),
                reason,
            })
        };
        let manifest = SnapshotManifest::load_checked(snap).map_err(|e| bad(e.to_string()))?;
        self.warn_if_clock_differs(snap, &manifest.vmm_args);
        let old = &manifest.spec;
        let mut mismatch = Vec::new();
        if spec.vcpus != old.vcpus {
            mismatch.push(format!(
                "vcpus {} differs from the snapshot's {}",
                spec.vcpus, old.vcpus
            ));
        }
        if spec.memory_mb != old.memory_mb {
            mismatch.push(format!(
                "memory_mb {} differs from the snapshot's {}",
                spec.memory_mb, old.memory_mb
            ));
        }
        if !mismatch.is_empty() {
            return Err(VmmError::InvalidSpec(mismatch));
        }
        // The guest already runs this kernel from this base: the snapshot's
        // files are the truth.
        spec.kernel = old.kernel.clone();
        spec.initrd = old.initrd.clone();
        spec.base_image = old.base_image.clone();
        spec.kernel_args = old.kernel_args.clone();
        spec.validate()?;
        QemuLayout::of(&spec).check_sockets()?;
        spec.check_host(&HostInfo::probe())?;

        // RAM: anonymous (loaded from the stream) or the template's file
        // mapped privately; or, when the spec asks for shared-file memory,
        // a file of the VM's own filled from a full snapshot's stream, so
        // this VM can be snapshotted as a template. A template reaches
        // shared memory only through `restore_template_shared`.
        let shared = spec.memory == MemoryBacking::SharedFile;
        if shared && manifest.kind == SnapshotKind::Template {
            return Err(restore_err(QemuError::Args(
                "a template restores into shared memory through a full snapshot".into(),
            )));
        }
        let new_layout = QemuLayout::of(&spec);
        let memory_path = snap.join(manifest.memory_file.as_deref().unwrap_or(MEMORY_FILE));
        // A jailed clone maps the template's RAM through a sealed copy it
        // cannot change; an unjailed one runs as root and maps the file.
        let sealed = if manifest.kind == SnapshotKind::Template && self.jailed() {
            let rams = self.sealed_rams.clone();
            let path = memory_path.clone();
            Some(
                blocking(move || rams.get(&path))
                    .await
                    .map_err(io_err("seal template RAM", &memory_path))
                    .map_err(restore_err)?,
            )
        } else {
            None
        };
        let sealed_path = sealed
            .as_ref()
            .map(|fd| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())));
        let ram = match (manifest.kind, shared) {
            (SnapshotKind::Full, false) => Ram::Anonymous,
            (SnapshotKind::Template, false) => Ram::File {
                path: sealed_path.as_deref().unwrap_or(&memory_path),
                share: false,
            },
            (SnapshotKind::Full, true) => Ram::File {
                path: &new_layout.memory_file,
                share: true,
            },
            (SnapshotKind::Template, true) => unreachable!("refused above"),
        };
        let args = args::rewrite_for_restore(
            &manifest.vmm_args,
            &Rewrite {
                old_layout: &QemuLayout::of(old),
                old_disk: &old.disk,
                new_layout: &new_layout,
                new_disk: &spec.disk,
                ram,
                memory_mb: spec.memory_mb,
                egress: spec.egress,
            },
        )
        .map_err(|e| restore_err(QemuError::Args(e)))?;
        let mut args = args;
        args::confine(
            &mut args,
            self.jailed(),
            self.config.jail.unfiltered_network_unjailed,
        );
        // The guest never boots again: QEMU gets the kernel's stub, and
        // this driver's translation cache bound (a snapshot keeps the
        // arguments of the driver that took it).
        let kernel = spec.kernel.clone();
        let kernel = blocking(move || Ok(kernel_stub::for_restore(&kernel)))
            .await
            .unwrap_or_else(|_| spec.kernel.clone());
        args::set_value(&mut args, "-kernel", &kernel.display().to_string());
        if args::value_of(&args, "-accel").is_some_and(|a| a.starts_with("tcg")) {
            let accel = args::accel_arg(self.accel, self.config.tcg_tb_size_mb);
            if accel.starts_with("tcg") {
                args::set_value(&mut args, "-accel", &accel);
            }
        }

        prepare_dir(&new_layout).map_err(restore_err)?;
        let disk_src = snap.join(&manifest.disk_file);
        let disk_dst = spec.disk.clone();
        let copy_started = Instant::now();
        blocking(move || snapshot::sparse_copy(&disk_src, &disk_dst))
            .await
            .map_err(io_err("copy snapshot disk to", &spec.disk))
            .map_err(restore_err)?;
        let copy_ms = copy_started.elapsed().as_millis() as u64;

        let disk = spec.disk.clone();
        let launch_started = Instant::now();
        let template_ram = sealed.as_ref().map(|fd| fd.as_raw_fd());
        let vm = match self.launch(spec, args, true, template_ram).await {
            Ok(vm) => vm,
            Err(e) => {
                remove_disk_and_dir(&new_layout, &disk, true);
                return Err(restore_err(e));
            }
        };
        let launch_ms = launch_started.elapsed().as_millis() as u64;
        let incoming_started = Instant::now();
        let state_path = snap.join(&manifest.state_file);
        if let Err(e) = vm
            .incoming(&state_path, manifest.kind == SnapshotKind::Template)
            .await
        {
            vm.teardown(true).await;
            return Err(restore_err(e));
        }
        let incoming_ms = incoming_started.elapsed().as_millis() as u64;
        vm.set_state(VmState::Running);
        let timeout = Duration::from_millis(vm.spec.boot_timeout_ms);
        let agent_started = Instant::now();
        if let Err(e) = vm.wait_agent_and_init(timeout, "restore").await {
            vm.teardown(true).await;
            return Err(restore_err(e));
        }
        tracing::info!(
            pid = vm.process.pid(),
            kind = ?manifest.kind,
            copy_ms,
            launch_ms,
            incoming_ms,
            agent_ms = agent_started.elapsed().as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "vm restored"
        );
        Ok(vm)
    }
}
