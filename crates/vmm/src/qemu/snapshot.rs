//! Snapshots of a running VM: stop, migrate device (and memory) state to
//! a file, copy the disk sparsely (and a template's RAM file), write the
//! manifest, then continue or exit.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::manifest::{
    SnapshotManifest, DISK_FILE, MANIFEST_FILE, MANIFEST_FORMAT, MEMORY_FILE, STATE_FILE,
};
use super::record::remove_if_exists;
use super::{blocking, io_err, now_ms, QemuError, QemuVm};
use crate::qmp;
use crate::snapshot::{
    self, AfterSnapshot, SnapshotInfo, SnapshotKind, SnapshotOptions, SnapshotTimings,
};
use crate::spec::MemoryBacking;
use crate::{VmState, VmmError};

impl QemuVm {
    /// Writes a snapshot into `dest`; see [`Vm::snapshot`].
    pub async fn snapshot(
        &self,
        dest: &Path,
        opts: SnapshotOptions,
    ) -> Result<SnapshotInfo, VmmError> {
        let _op = self.op.lock().await;
        let before = self.check_state("snapshot", VmState::can_snapshot)?;
        let span = tracing::info_span!("snapshot", sandbox_id = %self.spec.id, kind = ?opts.kind);
        let res = self
            .snapshot_inner(dest, opts, before)
            .instrument(span)
            .await;
        res.map_err(|e| {
            let id = self.spec.id.clone();
            if e.is_no_space() {
                VmmError::NoSpace {
                    id,
                    op: "snapshot",
                    source: Box::new(e),
                }
            } else {
                VmmError::Snapshot {
                    id,
                    source: Box::new(e),
                }
            }
        })
    }

    pub(super) async fn snapshot_inner(
        &self,
        dest: &Path,
        opts: SnapshotOptions,
        before: VmState,
    ) -> Result<SnapshotInfo, QemuError> {
        if opts.kind == SnapshotKind::Template && self.spec.memory != MemoryBacking::SharedFile {
            return Err(QemuError::NotTemplateCapable);
        }
        if let Err(reason) = crate::spec::check_path(dest) {
            return Err(QemuError::BadSnapshot {
                dir: dest.to_path_buf(),
                reason: reason.into(),
            });
        }
        if dest.join(MANIFEST_FILE).exists() {
            return Err(QemuError::SnapshotExists {
                dir: dest.to_path_buf(),
            });
        }
        std::fs::create_dir_all(dest).map_err(io_err("create snapshot directory", dest))?;
        let started = Instant::now();
        let mut timings = SnapshotTimings::default();

        if before == VmState::Running {
            // Best effort: RAM and disk are captured together while stopped,
            // so a sync only shortens what the guest replays after restore.
            match tokio::time::timeout(Duration::from_secs(30), self.agent.sync()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "agent sync before snapshot failed"),
                Err(_) => tracing::warn!("agent sync before snapshot timed out"),
            }
        }
        timings.sync_ms = started.elapsed().as_millis() as u64;

        let t = Instant::now();
        self.qmp_run(&qmp::Stop {}).await?;
        self.set_state(VmState::Paused);
        timings.stop_ms = t.elapsed().as_millis() as u64;

        let res = self.capture(dest, opts, &mut timings, started).await;
        match (&res, opts.then) {
            (Ok(_), AfterSnapshot::Exit) => {
                self.shutdown_process().await?;
                self.release_jail().await;
                self.clean_run_files();
                self.set_state(VmState::Exited);
            }
            _ => {
                if res.is_err() {
                    for f in [STATE_FILE, MEMORY_FILE, DISK_FILE, MANIFEST_FILE] {
                        remove_if_exists(&dest.join(f));
                    }
                    let _ = std::fs::remove_dir(dest);
                }
                if before == VmState::Running && self.process.exit_status().is_none() {
                    self.qmp_run(&qmp::Cont {}).await?;
                    self.set_state(VmState::Running);
                }
            }
        }
        let manifest = res?;
        tracing::info!(
            dir = %dest.display(),
            total_ms = manifest.timings.total_ms,
            migrate_ms = manifest.timings.migrate_ms,
            copy_ms = manifest.timings.copy_ms,
            state_bytes = manifest.state_bytes,
            "snapshot written"
        );
        Ok(SnapshotInfo {
            dir: dest.to_path_buf(),
            summary: manifest.summary(),
            timings: manifest.timings,
        })
    }

    /// The part of a snapshot that runs while the VM is stopped.
    pub(super) async fn capture(
        &self,
        dest: &Path,
        opts: SnapshotOptions,
        timings: &mut SnapshotTimings,
        started: Instant,
    ) -> Result<SnapshotManifest, QemuError> {
        let template = opts.kind == SnapshotKind::Template;
        let t = Instant::now();
        self.set_capabilities(template).await?;
        let state_path = dest.join(STATE_FILE);
        let state_bytes = self.migrate_to(&state_path).await?;
        timings.migrate_ms = t.elapsed().as_millis() as u64;

        let t = Instant::now();
        let disk_src = self.spec.disk.clone();
        let disk_dst = dest.join(DISK_FILE);
        blocking(move || snapshot::sparse_copy(&disk_src, &disk_dst))
            .await
            .map_err(io_err("copy disk from", &self.spec.disk))?;
        let disk_bytes = std::fs::metadata(dest.join(DISK_FILE))
            .map_err(io_err("stat", dest))?
            .len();
        let mut memory_bytes = None;
        if template {
            let src = self.layout.memory_file.clone();
            let dst = dest.join(MEMORY_FILE);
            // Exiting anyway: once QEMU is gone its RAM file can simply move
            // (same filesystem); otherwise copy it while the guest is stopped.
            let moved = opts.then == AfterSnapshot::Exit
                && self.shutdown_process().await.is_ok()
                && std::fs::rename(&src, &dst).is_ok();
            if moved {
                std::fs::File::open(&dst)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err("fsync", &dst))?;
            } else {
                blocking(move || snapshot::sparse_copy(&src, &dst))
                    .await
                    .map_err(io_err("copy memory file", &self.layout.memory_file))?;
            }
            // The file QEMU wrote is its uid's: a template's RAM is the
            // driver's alone (clones map a sealed copy, `sealed_ram`).
            let ram = dest.join(MEMORY_FILE);
            if nix::unistd::geteuid().is_root() {
                std::os::unix::fs::chown(&ram, Some(0), Some(0))
                    .and_then(|()| {
                        std::fs::set_permissions(&ram, std::fs::Permissions::from_mode(0o600))
                    })
                    .map_err(io_err("make root's", &ram))?;
            }
            memory_bytes = Some(
                std::fs::metadata(dest.join(MEMORY_FILE))
                    .map_err(io_err("stat", dest))?
                    .len(),
            );
        }
        timings.copy_ms = t.elapsed().as_millis() as u64;
        timings.total_ms = started.elapsed().as_millis() as u64;

        let manifest = SnapshotManifest {
            format: MANIFEST_FORMAT,
            kind: opts.kind,
            spec: self.spec.clone(),
            vmm_args: self.record.args.clone(),
            vmm_binary: self.record.binary.clone(),
            vmm_version: self.record.version.clone(),
            accel: self.record.accel,
            state_file: STATE_FILE.into(),
            state_bytes,
            memory_file: template.then(|| MEMORY_FILE.to_string()),
            memory_bytes,
            disk_file: DISK_FILE.into(),
            disk_bytes,
            created_at_ms: now_ms(),
            timings: timings.clone(),
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            .map_err(io_err("encode manifest", dest))?;
        snapshot::write_durable(&dest.join(MANIFEST_FILE), &json)
            .map_err(io_err("write manifest in", dest))?;
        Ok(manifest)
    }
}
