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

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex as SyncMutex;
use std::time::Instant;

use hearth_vmm::{AfterSnapshot, MemoryBacking, SnapshotOptions, Vm};

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
    pub(crate) fn dir(&self, data_dir: &Path) -> PathBuf {
        data_dir.join("templates").join(self.key())
    }

    /// `<template>/<version>/<vCPUs>c-<memory>m-<disk>d`: where its
    /// snapshot lives under `templates/`, and how nodes say they hold it.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}c-{}m-{}d",
            self.template_id, self.version, self.cpu_count, self.memory_mb, self.disk_size_mb
        )
    }
}

/// Runs what a clone's first requests will run, so the guest's page and
/// dentry caches already hold the shell, the workspace and the exec path
/// when the snapshot is taken: a clone's first exec then reads nothing from
/// disk. Best effort.
async fn prewarm(agent: &hearth_agent_client::AgentClient) {
    for command in [
        "true",
        "cd /workspace && ls -la >/dev/null; echo ok >/dev/null",
        "true",
    ] {
        let req = hearth_agent_protocol::ExecRequest {
            command: command.into(),
            timeout_ms: Some(30_000),
            ..Default::default()
        };
        if let Err(e) = agent.exec(&req).await {
            tracing::debug!(error = %e, "template prewarm exec");
        }
    }
}

/// Builds in flight, so a shape is built once at a time.
#[derive(Debug, Default)]
pub struct WarmBuilds(SyncMutex<HashSet<Shape>>);

/// A VM already cloned from a template snapshot and warmed up (its first
/// exec, the slow one under TCG, is done), waiting for a create. Its id is
/// the id the sandbox that takes it will have: the VM's directory and
/// hostname are already right.
#[derive(Debug)]
pub struct Pooled {
    pub id: String,
    pub vm: Box<dyn Vm>,
}

/// Pre-cloned VMs per shape (`warm_pool_size` each; 0 = off). They serve
/// creates with egress on (the default); they have no store record until
/// taken, and a restarted server destroys any left behind.
#[derive(Debug, Default)]
pub struct WarmPool {
    vms: SyncMutex<HashMap<Shape, Vec<Pooled>>>,
    filling: SyncMutex<HashSet<Shape>>,
}

/// The extension of a template snapshot directory while it is written.
const STAGING: &str = "partial";

impl Core {
    /// The ready template snapshot of `shape`, if any.
    pub fn warm_snapshot(&self, shape: &Shape) -> Option<PathBuf> {
        let dir = shape.dir(self.data_dir());
        self.vmm.snapshot_exists(&dir).then_some(dir)
    }

    /// The shapes of built-in template `id` (any version) whose template
    /// snapshot is written whole; one being written is staged beside them
    /// and does not count.
    pub fn warm_shapes(&self, id: &str) -> Vec<String> {
        let Ok(versions) = std::fs::read_dir(self.data_dir().join("templates").join(id)) else {
            return Vec::new();
        };
        versions
            .flatten()
            .flat_map(|v| std::fs::read_dir(v.path()).into_iter().flatten().flatten())
            .filter(|shape| {
                let p = shape.path();
                p.extension().is_none_or(|e| e != STAGING) && self.vmm.snapshot_exists(&p)
            })
            .filter_map(|shape| shape.file_name().into_string().ok())
            .collect()
    }

    /// Every template snapshot written whole on this node, as
    /// `<template>/<version>/<shape>` ([`Shape::key`]): what placement
    /// prefers a node for.
    pub fn warm_templates(&self) -> Vec<String> {
        let root = self.data_dir().join("templates");
        let dirs = |p: &Path| -> Vec<std::fs::DirEntry> {
            std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .collect()
        };
        let mut out = Vec::new();
        for t in dirs(&root) {
            for v in dirs(&t.path()) {
                for s in dirs(&v.path()) {
                    let p = s.path();
                    if p.extension().is_some_and(|e| e == STAGING) || !self.vmm.snapshot_exists(&p)
                    {
                        continue;
                    }
                    let name = |e: &std::fs::DirEntry| e.file_name().to_string_lossy().into_owned();
                    out.push(format!("{}/{}/{}", name(&t), name(&v), name(&s)));
                }
            }
        }
        out.sort();
        out
    }

    /// Starts building `shape`'s template snapshot unless it exists or is
    /// being built.
    pub fn ensure_warm(self: &Arc<Core>, shape: Shape, tpl: ResolvedTemplate) {
        if !self.config.warm_boot {
            return;
        }
        if self.warm_snapshot(&shape).is_some() {
            self.refill_pool(shape, tpl);
            return;
        }
        if tpl.custom {
            // Only a build makes a custom template's snapshot.
            return;
        }
        {
            let mut building = self.warm_builds.0.lock();
            if !building.insert(shape.clone()) {
                return;
            }
        }
        let core = self.clone();
        let stop = self.shutdown_token();
        tokio::spawn(async move {
            let started = Instant::now();
            // A shutdown drops the build where it is; the server then stops
            // its VM (`stop_build_vms`), which belongs to no sandbox.
            let res = tokio::select! {
                res = core.build_warm(&shape, &tpl) => res,
                _ = stop.cancelled() => Err(anyhow::anyhow!("the server is shutting down")),
            };
            core.warm_builds.0.lock().remove(&shape);
            match res {
                Ok(dir) => {
                    tracing::info!(
                        template = %shape.template_id,
                        dir = %dir.display(),
                        ms = started.elapsed().as_millis() as u64,
                        "template snapshot ready"
                    );
                    core.refill_pool(shape.clone(), tpl.clone());
                }
                Err(e) => {
                    tracing::warn!(template = %shape.template_id, error = %format!("{e:#}"), "template snapshot failed")
                }
            }
        });
    }

    /// A pooled VM of `shape`, if one is ready; the pool refills itself.
    pub fn take_pooled(self: &Arc<Core>, shape: &Shape, tpl: &ResolvedTemplate) -> Option<Pooled> {
        if self.config.warm_pool_size == 0 {
            return None;
        }
        let got = self.warm_pool.vms.lock().get_mut(shape).and_then(Vec::pop);
        self.refill_pool(shape.clone(), tpl.clone());
        got
    }

    /// Clones VMs of `shape` from its template snapshot until the pool
    /// holds `warm_pool_size` of them (one filler task per shape).
    pub fn refill_pool(self: &Arc<Core>, shape: Shape, tpl: ResolvedTemplate) {
        let want = self.config.warm_pool_size;
        if want == 0 || self.warm_snapshot(&shape).is_none() {
            return;
        }
        if !self.warm_pool.filling.lock().insert(shape.clone()) {
            return;
        }
        let core = self.clone();
        tokio::spawn(async move {
            loop {
                let have = core.warm_pool.vms.lock().get(&shape).map_or(0, Vec::len);
                if have >= want || core.shutdown_token().is_cancelled() {
                    break;
                }
                match core.clone_for_pool(&shape, &tpl).await {
                    Ok(p) => core
                        .warm_pool
                        .vms
                        .lock()
                        .entry(shape.clone())
                        .or_default()
                        .push(p),
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "warm pool clone failed");
                        break;
                    }
                }
            }
            core.warm_pool.filling.lock().remove(&shape);
        });
    }

    async fn clone_for_pool(
        &self,
        shape: &Shape,
        tpl: &ResolvedTemplate,
    ) -> anyhow::Result<Pooled> {
        let snap = self
            .warm_snapshot(shape)
            .ok_or_else(|| anyhow::anyhow!("template snapshot is gone"))?;
        let id = super::ids::new_id("sbx");
        let spec = self.base_spec(&id, tpl, shape.cpu_count, shape.memory_mb);
        std::fs::create_dir_all(&spec.dir)?;
        let vm = match self.vmm.restore(&snap, spec.clone()).await {
            Ok(vm) => vm,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&spec.dir);
                return Err(e.into());
            }
        };
        // The first exec of a fresh clone is the slow one: pay it here.
        prewarm(&vm.agent()).await;
        Ok(Pooled { id, vm })
    }

    /// Destroys every pooled VM (server shutdown).
    pub async fn drain_pool(&self) {
        let all: Vec<Pooled> = self
            .warm_pool
            .vms
            .lock()
            .drain()
            .flat_map(|(_, v)| v)
            .collect();
        for p in all {
            let _ = p.vm.destroy().await;
        }
    }

    /// Stops every template build VM (`tpl-` directories) and removes its
    /// directory: at shutdown, after the builds were cancelled, so no
    /// build VM outlives the server that started it.
    pub async fn stop_build_vms(self: &Arc<Core>) {
        let Ok(entries) = std::fs::read_dir(self.sandboxes_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("tpl-") {
                crate::sandboxes::recovery::reap_dir(self, &entry.path()).await;
            }
        }
    }

    /// Boots a build VM with its RAM in a file, waits for its agent, and
    /// writes the template snapshot (the VM exits with it).
    async fn build_warm(&self, shape: &Shape, tpl: &ResolvedTemplate) -> anyhow::Result<PathBuf> {
        let vm = self
            .boot_build_vm(shape, tpl, &std::collections::BTreeMap::new(), false)
            .await?;
        self.snapshot_build_vm(vm, shape).await
    }

    /// A VM of `tpl` and `shape` with its RAM in a file, ready to become a
    /// template snapshot; its directory starts with `tpl-` (a restarted
    /// server reaps those).
    pub(crate) async fn boot_build_vm(
        &self,
        shape: &Shape,
        tpl: &ResolvedTemplate,
        env: &std::collections::BTreeMap<String, String>,
        egress: bool,
    ) -> anyhow::Result<Box<dyn Vm>> {
        let id = format!("tpl-{}", super::ids::new_id("b").replace('_', "-"));
        let mut spec = self.base_spec(&id, tpl, shape.cpu_count, shape.memory_mb);
        spec.memory = MemoryBacking::SharedFile;
        spec.egress = egress;
        spec.env = env.clone();
        let dir = spec.dir.clone();
        let disk = spec.disk.clone();
        let size = u64::from(shape.disk_size_mb);
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            std::fs::create_dir_all(&dir)?;
            hearth_image::create_sparse_ext4(&disk, size)?;
            Ok(())
        })
        .await??;
        match self.vmm.boot(spec.clone()).await {
            Ok(vm) => Ok(vm),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&spec.dir);
                Err(e.into())
            }
        }
    }

    /// Warms `vm` up and writes it as `shape`'s template snapshot.
    pub(crate) async fn snapshot_build_vm(
        &self,
        vm: Box<dyn Vm>,
        shape: &Shape,
    ) -> anyhow::Result<PathBuf> {
        let dest = shape.dir(self.data_dir());
        self.save_template(vm, &dest).await?;
        Ok(dest)
    }

    /// Warms `vm` (RAM in a file) up and writes it as a template snapshot
    /// in `dest`, which appears whole or not at all; the VM is gone
    /// afterwards either way.
    pub(crate) async fn save_template(&self, vm: Box<dyn Vm>, dest: &Path) -> anyhow::Result<()> {
        let staging = dest.with_extension(STAGING);
        let _ = std::fs::remove_dir_all(&staging);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        prewarm(&vm.agent()).await;
        let snap = vm
            .snapshot(
                &staging,
                SnapshotOptions::template().then(AfterSnapshot::Exit),
            )
            .await;
        let _ = vm.destroy().await;
        let _ = std::fs::remove_dir_all(&vm.spec().dir);
        if let Err(e) = snap {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e.into());
        }
        std::fs::rename(&staging, dest)?;
        Ok(())
    }

    /// A build VM (RAM in its own file, id `tpl-...`) restored from
    /// `snapshot` (full or template): a clone that can become a template
    /// snapshot.
    pub(crate) async fn restore_shared(
        &self,
        snapshot: &Path,
        tpl: &ResolvedTemplate,
        shape: &Shape,
        env: &std::collections::BTreeMap<String, String>,
        egress: bool,
    ) -> anyhow::Result<Box<dyn Vm>> {
        let id = format!("tpl-{}", super::ids::new_id("c").replace('_', "-"));
        let mut spec = self.base_spec(&id, tpl, shape.cpu_count, shape.memory_mb);
        spec.memory = MemoryBacking::SharedFile;
        spec.egress = egress;
        spec.env = env.clone();
        std::fs::create_dir_all(&spec.dir)?;
        match self.vmm.restore(snapshot, spec.clone()).await {
            Ok(vm) => Ok(vm),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&spec.dir);
                Err(e.into())
            }
        }
    }
}
