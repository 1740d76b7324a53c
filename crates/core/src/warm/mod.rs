//! Warm boot: one template snapshot (the fast-clone form: RAM in a file
//! every clone maps privately, device state saved with `x-ignore-shared`)
//! per template version and VM shape, in
//! `<templates>/<template>/<version>/<cpus>c-<memory>m-<disk>d/`, where
//! `<templates>` is `templates/` of the image directory for a built-in
//! template (shared by every server sharing the images) and of the data
//! directory for a custom one. A
//! create whose shape has a ready snapshot clones it instead of booting;
//! the first create of a new shape boots cold and builds the snapshot in the
//! background from a separate build VM.
//!
//! The disk size is part of the shape: a clone gets a copy of the
//! template's sandbox disk, and growing a mounted ext4 from the host is not
//! built yet.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex as SyncMutex;
use serde::{Deserialize, Serialize};

use hearth_vmm::{AfterSnapshot, MemoryBacking, SnapshotOptions, Vm};

use super::templates::ResolvedTemplate;
use super::Core;

mod prune;

/// The shape a create gets when it names none: 1 vCPU, 1 GiB of memory,
/// 3 GiB of disk.
pub const DEFAULT_SHAPE: (u32, u32, u32) = (1, 1024, 3072);

/// The built-in templates whose default shape is written at start.
pub const BUILT_IN: [&str; 2] = ["minimal", "default"];

/// A shape the config asks to have written at start (`[[warm_shapes]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapeConfig {
    pub template_id: String,
    #[serde(default = "default_cpus")]
    pub cpu_count: u32,
    #[serde(default = "default_memory")]
    pub memory_mb: u32,
    #[serde(default = "default_disk")]
    pub disk_size_mb: u32,
}

fn default_cpus() -> u32 {
    DEFAULT_SHAPE.0
}
fn default_memory() -> u32 {
    DEFAULT_SHAPE.1
}
fn default_disk() -> u32 {
    DEFAULT_SHAPE.2
}

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
    /// `<template>/<version>/<vCPUs>c-<memory>m-<disk>d`: where its
    /// snapshot lives under `templates/`, and how nodes say they hold it.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}c-{}m-{}d",
            self.template_id, self.version, self.cpu_count, self.memory_mb, self.disk_size_mb
        )
    }
}

/// Removes staging directories in `parent` that a crashed writer left.
fn remove_stale_staging(parent: &Path) {
    for e in entries(parent) {
        let p = e.path();
        if is_staging(&p) && age(&p).is_some_and(|a| a > STALE_STAGING) {
            let _ = std::fs::remove_dir_all(&p);
        }
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

/// Template snapshots being written (a shape once at a time), the last
/// failure of each shape, and how long writing one and booting cold took
/// here last: what a create weighs when it decides to wait.
#[derive(Debug, Default)]
pub struct WarmBuilds {
    running: SyncMutex<HashMap<Shape, InFlight>>,
    failed: SyncMutex<HashMap<Shape, String>>,
    last_build_ms: AtomicU64,
    last_cold_ms: AtomicU64,
    /// (template, version) whose old versions were pruned here.
    pruned: SyncMutex<HashSet<(String, String)>>,
}

#[derive(Debug)]
struct InFlight {
    started: Instant,
    started_at_ms: i64,
    /// Dropped when the build ends, which wakes every waiter.
    _done: tokio::sync::watch::Sender<()>,
    done: tokio::sync::watch::Receiver<()>,
}

/// A cold boot's and a template snapshot's length before one was measured
/// here (TCG: about 4 s each). Equal, so a fresh node's first creates wait
/// for the snapshot being written: a clone ends up as fast to first
/// command (a cold-booted guest's first exec is slow), and costs a sixth
/// of a cold-booted VM's host memory for as long as it runs.
const GUESS_MS: u64 = 5_000;

/// How a template snapshot of one shape stands, for `GET
/// /sandbox-templates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotStatus {
    /// `<vCPUs>c-<memory>m-<disk>d`.
    pub shape: String,
    /// `ready`, `building` or `failed`.
    pub state: &'static str,
    /// When the build started (`building`), as Unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

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

/// What a template snapshot directory's name holds while it is written
/// (`<shape>.partial-<writer>`): several servers may write one shape into
/// a shared image directory at once, and the first rename wins.
const STAGING: &str = "partial";

/// A writer's staging directory older than this was left by a crash.
const STALE_STAGING: Duration = Duration::from_secs(3600);

/// A custom template's id (built from a BuildSpec); the rest are built in.
fn is_custom(template_id: &str) -> bool {
    template_id.starts_with("tpl_")
}

/// How long ago `p` was last modified.
fn age(p: &Path) -> Option<Duration> {
    std::fs::metadata(p).ok()?.modified().ok()?.elapsed().ok()
}

/// A name starting with a dot: a version being removed ([`prune`]).
fn is_hidden(e: &std::fs::DirEntry) -> bool {
    e.file_name().to_string_lossy().starts_with('.')
}

fn is_staging(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains(&format!(".{STAGING}")))
}

fn entries(p: &Path) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .collect()
}

impl Core {
    /// Where template `id`'s snapshots live. A built-in template's are a
    /// pure function of its images (the version names them), so they sit
    /// beside the images and every server sharing the image directory
    /// shares them: a fresh data directory starts warm. A custom
    /// template's are the tenant's, in the data directory.
    pub(crate) fn templates_root(&self, id: &str) -> PathBuf {
        if is_custom(id) {
            self.data_dir().join("templates")
        } else {
            self.config.images_dir().join("templates")
        }
    }

    /// The directory of `shape`'s template snapshot.
    pub(crate) fn shape_dir(&self, shape: &Shape) -> PathBuf {
        self.templates_root(&shape.template_id).join(shape.key())
    }

    /// The ready template snapshot of `shape`, if any. Asking is using:
    /// a built-in template's version is marked used ([`prune`]).
    pub fn warm_snapshot(&self, shape: &Shape) -> Option<PathBuf> {
        let dir = self.shape_dir(shape);
        if !self.vmm.snapshot_exists(&dir) {
            return None;
        }
        if !is_custom(&shape.template_id) {
            if let Some(version) = dir.parent() {
                prune::mark_used(version);
            }
        }
        Some(dir)
    }

    /// Once per built-in template version and server: removes the
    /// template's other versions no server has used for
    /// [`prune::RETENTION`], in the background.
    fn prune_template_versions(&self, shape: &Shape) {
        if is_custom(&shape.template_id)
            || !self
                .warm_builds
                .pruned
                .lock()
                .insert((shape.template_id.clone(), shape.version.clone()))
        {
            return;
        }
        let dir = self
            .templates_root(&shape.template_id)
            .join(&shape.template_id);
        let current = shape.version.clone();
        tokio::task::spawn_blocking(move || {
            let removed = prune::prune_versions(
                &dir,
                &current,
                prune::RETENTION,
                std::time::SystemTime::now(),
            );
            if !removed.is_empty() {
                tracing::info!(dir = %dir.display(), ?removed, "old template versions removed");
            }
        });
    }

    /// The shapes of template `id` (any version) whose template snapshot
    /// is written whole; one being written is staged beside them and does
    /// not count.
    pub fn warm_shapes(&self, id: &str) -> Vec<String> {
        let mut out: Vec<String> = entries(&self.templates_root(id).join(id))
            .iter()
            .filter(|v| !is_hidden(v))
            .flat_map(|v| entries(&v.path()))
            .filter(|shape| {
                let p = shape.path();
                !is_staging(&p) && self.vmm.snapshot_exists(&p)
            })
            .filter_map(|shape| shape.file_name().into_string().ok())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every template snapshot written whole that this node can clone, as
    /// `<template>/<version>/<shape>` ([`Shape::key`]): what placement
    /// prefers a node for.
    pub fn warm_templates(&self) -> Vec<String> {
        let mut roots = vec![
            self.data_dir().join("templates"),
            self.config.images_dir().join("templates"),
        ];
        roots.dedup();
        let mut out = Vec::new();
        for root in roots {
            for t in entries(&root) {
                let name = |e: &std::fs::DirEntry| e.file_name().to_string_lossy().into_owned();
                // Each root holds its own kind (built-in or custom) only.
                if self.templates_root(&name(&t)) != root {
                    continue;
                }
                for v in entries(&t.path()).iter().filter(|v| !is_hidden(v)) {
                    for s in entries(&v.path()) {
                        let p = s.path();
                        if is_staging(&p) || !self.vmm.snapshot_exists(&p) {
                            continue;
                        }
                        out.push(format!("{}/{}/{}", name(&t), name(v), name(&s)));
                    }
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
        self.prune_template_versions(&shape);
        if self.warm_snapshot(&shape).is_some() {
            self.refill_pool(shape, tpl);
            return;
        }
        if tpl.custom {
            // Only a build makes a custom template's snapshot.
            return;
        }
        {
            let mut running = self.warm_builds.running.lock();
            if running.contains_key(&shape) {
                return;
            }
            let (tx, rx) = tokio::sync::watch::channel(());
            running.insert(
                shape.clone(),
                InFlight {
                    started: Instant::now(),
                    started_at_ms: self.now_ms(),
                    _done: tx,
                    done: rx,
                },
            );
        }
        tracing::info!(template = %shape.template_id, shape = %shape.key(), "writing the template snapshot");
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
            let ms = started.elapsed().as_millis() as u64;
            match &res {
                Ok(dir) => {
                    core.warm_builds.last_build_ms.store(ms, Ordering::Relaxed);
                    core.warm_builds.failed.lock().remove(&shape);
                    tracing::info!(
                        template = %shape.template_id,
                        dir = %dir.display(),
                        ms,
                        "template snapshot ready"
                    );
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    tracing::warn!(template = %shape.template_id, error = %msg, "template snapshot failed");
                    core.warm_builds.failed.lock().insert(shape.clone(), msg);
                }
            }
            // Wakes the creates waiting for it.
            core.warm_builds.running.lock().remove(&shape);
            if res.is_ok() {
                core.refill_pool(shape.clone(), tpl.clone());
            }
        });
    }

    /// Starts writing the template snapshot of each built-in template's
    /// default shape (those whose image is built) and of each
    /// `[[warm_shapes]]` entry (server start).
    /// Templates whose files are at hand start before this returns, so a
    /// create that comes right after finds their builds and waits for
    /// them; one whose image must be built first starts when it is. A
    /// template whose files cannot be had is logged and skipped.
    pub async fn prebuild_warm(self: &Arc<Core>) {
        if !self.config.warm_boot || !self.config.warm_prebuild {
            return;
        }
        let (cpus, memory, disk) = DEFAULT_SHAPE;
        let mut wanted: Vec<ShapeConfig> = BUILT_IN
            .iter()
            .filter(|t| {
                let quick = self.templates.is_quick(t);
                if !quick {
                    tracing::info!(template = %t, "its image is not built: no template snapshot at start (the first create builds both)");
                }
                quick
            })
            .map(|t| ShapeConfig {
                template_id: (*t).to_string(),
                cpu_count: cpus,
                memory_mb: memory,
                disk_size_mb: disk,
            })
            .collect();
        wanted.extend(self.config.warm_shapes.iter().cloned());
        for want in wanted {
            let core = self.clone();
            let start = async move {
                match core.resolve_template(&want.template_id).await {
                    Ok(tpl) => {
                        let shape = Shape {
                            template_id: tpl.id.clone(),
                            version: tpl.version.clone(),
                            cpu_count: want.cpu_count,
                            memory_mb: want.memory_mb,
                            disk_size_mb: want.disk_size_mb,
                        };
                        core.ensure_warm(shape, tpl);
                    }
                    Err(e) => {
                        tracing::warn!(template = %want.template_id, error = %format!("{e:#}"), "no template snapshot written at start")
                    }
                }
            };
            let mut start = Box::pin(start);
            // Files at hand resolve in milliseconds; an image to build
            // (minutes) goes on in the background.
            if tokio::time::timeout(Duration::from_secs(2), &mut start)
                .await
                .is_err()
            {
                tokio::spawn(start);
            }
        }
    }

    /// Waits for `shape`'s template snapshot when it is being written and
    /// should be ready sooner than a cold boot would be; true when it is
    /// ready.
    pub async fn wait_warm(&self, shape: &Shape) -> bool {
        let measured = |a: &AtomicU64| match a.load(Ordering::Relaxed) {
            0 => GUESS_MS,
            ms => ms,
        };
        let cold = measured(&self.warm_builds.last_cold_ms);
        let build = measured(&self.warm_builds.last_build_ms);
        let wait = {
            let running = self.warm_builds.running.lock();
            let Some(b) = running.get(shape) else {
                return false;
            };
            let elapsed = b.started.elapsed().as_millis() as u64;
            let left = build.saturating_sub(elapsed);
            // A restore costs a fraction of a cold boot; waiting for a
            // build whose end is past the cold boot's only loses time.
            if left >= cold {
                return false;
            }
            Some(b.done.clone())
        };
        if let Some(mut done) = wait {
            let _ = tokio::time::timeout(Duration::from_millis(cold), done.changed()).await;
        }
        self.warm_snapshot(shape).is_some()
    }

    /// A cold boot took `ms` here: what [`Core::wait_warm`] weighs.
    pub(crate) fn observe_cold_boot(&self, ms: u64) {
        self.warm_builds.last_cold_ms.store(ms, Ordering::Relaxed);
    }

    /// Every template snapshot of template `id` (any version) that is
    /// ready, being written, or failed last time, for the API.
    pub fn warm_status(&self, id: &str) -> Vec<SnapshotStatus> {
        let mut out: Vec<SnapshotStatus> = self
            .warm_shapes(id)
            .into_iter()
            .map(|shape| SnapshotStatus {
                shape,
                state: "ready",
                started_at_ms: None,
                error: None,
            })
            .collect();
        let short = |s: &Shape| format!("{}c-{}m-{}d", s.cpu_count, s.memory_mb, s.disk_size_mb);
        for (s, b) in self.warm_builds.running.lock().iter() {
            if s.template_id == id {
                out.push(SnapshotStatus {
                    shape: short(s),
                    state: "building",
                    started_at_ms: Some(b.started_at_ms),
                    error: None,
                });
            }
        }
        for (s, e) in self.warm_builds.failed.lock().iter() {
            if s.template_id == id && !out.iter().any(|o| o.shape == short(s)) {
                out.push(SnapshotStatus {
                    shape: short(s),
                    state: "failed",
                    started_at_ms: None,
                    error: Some(e.clone()),
                });
            }
        }
        out.sort_by(|a, b| a.shape.cmp(&b.shape));
        out
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
        let dest = self.shape_dir(shape);
        self.save_template(vm, &dest).await?;
        Ok(dest)
    }

    /// Warms `vm` (RAM in a file) up and writes it as a template snapshot
    /// in `dest`, which appears whole or not at all; the VM is gone
    /// afterwards either way.
    pub(crate) async fn save_template(&self, vm: Box<dyn Vm>, dest: &Path) -> anyhow::Result<()> {
        let staging = dest.with_extension(format!(
            "{STAGING}-{}",
            super::ids::new_id("w").replace('_', "-")
        ));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
            remove_stale_staging(parent);
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
        if let Err(e) = std::fs::rename(&staging, dest) {
            let _ = std::fs::remove_dir_all(&staging);
            // Another server sharing the directory wrote it first.
            if !self.vmm.snapshot_exists(dest) {
                return Err(e.into());
            }
        }
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

#[cfg(test)]
mod tests;
