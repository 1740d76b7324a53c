//! Warm boot: one template snapshot (the fast-clone form: RAM in a file
//! every clone maps privately, device state saved with `x-ignore-shared`)
//! per template version and VM shape, in
//! `<data>/templates/<template>/<version>/<cpus>c-<memory>m-<disk>d/`. A
//! create whose shape has a ready snapshot clones it instead of booting;
//! the first create of a new shape boots cold and builds the snapshot in the
//! background from a separate build VM.
//!
//! The disk size is part of the shape: a clone gets a copy of the
//! template's sandbox disk, and growing a mounted ext4 from the host is not
//! built yet.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Instant;

use hearth_vmm::{AfterSnapshot, MemoryBacking, SnapshotManifest, SnapshotOptions, VmSpec};

use super::templates::ResolvedTemplate;
use super::Core;

/// What a template snapshot is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shape {
    pub template_id: String,
    pub version: String,
    pub cpu_count: u32,
    pub memory_mb: u32,
    pub disk_size_mb: u32,
}

impl Shape {
    fn dir(&self, data_dir: &Path) -> PathBuf {
        data_dir
            .join("templates")
            .join(&self.template_id)
            .join(&self.version)
            .join(format!(
                "{}c-{}m-{}d",
                self.cpu_count, self.memory_mb, self.disk_size_mb
            ))
    }
}

/// Builds in flight, so a shape is built once at a time.
#[derive(Debug, Default)]
pub struct WarmBuilds(StdMutex<HashSet<Shape>>);

impl Core {
    /// The ready template snapshot of `shape`, if any.
    pub fn warm_snapshot(&self, shape: &Shape) -> Option<PathBuf> {
        let dir = shape.dir(self.data_dir());
        SnapshotManifest::load(&dir).ok().map(|_| dir)
    }

    /// Starts building `shape`'s template snapshot unless it exists or is
    /// being built.
    pub fn ensure_warm(self: &Arc<Core>, shape: Shape, tpl: ResolvedTemplate) {
        if !self.config.warm_boot || self.warm_snapshot(&shape).is_some() {
            return;
        }
        {
            let mut building = self
                .warm_builds
                .0
                .lock()
                .expect("warm lock is never poisoned");
            if !building.insert(shape.clone()) {
                return;
            }
        }
        let core = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let res = core.build_warm(&shape, &tpl).await;
            core.warm_builds
                .0
                .lock()
                .expect("warm lock is never poisoned")
                .remove(&shape);
            match res {
                Ok(dir) => tracing::info!(
                    template = %shape.template_id,
                    dir = %dir.display(),
                    ms = started.elapsed().as_millis() as u64,
                    "template snapshot ready"
                ),
                Err(e) => {
                    tracing::warn!(template = %shape.template_id, error = %format!("{e:#}"), "template snapshot failed")
                }
            }
        });
    }

    /// Boots a build VM with its RAM in a file, waits for its agent, and
    /// writes the template snapshot (the VM exits with it).
    async fn build_warm(&self, shape: &Shape, tpl: &ResolvedTemplate) -> anyhow::Result<PathBuf> {
        let dest = shape.dir(self.data_dir());
        let staging = dest.with_extension("partial");
        let _ = std::fs::remove_dir_all(&staging);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let id = format!("tpl-{}", super::ids::new_id("b").replace('_', "-"));
        let mut spec = VmSpec::new(
            &id,
            &self.sandboxes_dir(),
            &tpl.kernel,
            &tpl.initrd,
            &tpl.base_image,
        );
        spec.vcpus = shape.cpu_count;
        spec.memory_mb = shape.memory_mb;
        spec.memory = MemoryBacking::SharedFile;
        spec.boot_timeout_ms = self.config.boot_timeout_ms;
        let dir = spec.dir.clone();
        let disk = spec.disk.clone();
        let size = u64::from(shape.disk_size_mb);
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            std::fs::create_dir_all(&dir)?;
            hearth_image::create_sparse_ext4(&disk, size)?;
            Ok(())
        })
        .await??;
        let vm = match self.vmm.boot(spec.clone()).await {
            Ok(vm) => vm,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&spec.dir);
                return Err(e.into());
            }
        };
        let snap = vm
            .snapshot(
                &staging,
                SnapshotOptions::template().then(AfterSnapshot::Exit),
            )
            .await;
        let _ = vm.destroy().await;
        let _ = std::fs::remove_dir_all(&spec.dir);
        if let Err(e) = snap {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e.into());
        }
        // Appears whole or not at all.
        std::fs::rename(&staging, &dest)?;
        Ok(dest)
    }
}
