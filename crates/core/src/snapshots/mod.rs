//! User-visible snapshots: create (the sandbox keeps running), list, get,
//! delete, restore in place or as a new sandbox, and fork. A snapshot is
//! `<data>/snapshots/<id>/` (manifest, device state and memory, sparse disk
//! copy), written under a staging name and renamed whole, fsynced before it
//! is `ready`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex as SyncMutex;

use serde_json::json;

use super::ids::new_id;
use super::keys::Caller;
use super::Core;
use crate::error::{Error, Kind, Result};
use crate::events::EventKind;
use crate::model::{SandboxRecord, SandboxState, SnapshotRecord, SnapshotStatus};
use crate::sandboxes::actor::Op;

/// What the snapshot service tracks in memory.
#[derive(Debug, Default)]
pub struct SnapshotState {
    in_use: InUse,
    /// Snapshots whose fast-clone form is being written.
    fast_forks: SyncMutex<HashSet<String>>,
}

/// Snapshots a restore or fork is reading right now (they cannot be
/// deleted meanwhile).
#[derive(Debug, Default)]
struct InUse(SyncMutex<HashMap<String, usize>>);

/// Marks a snapshot in use until dropped.
#[derive(Debug)]
struct InUseGuard<'a> {
    set: &'a InUse,
    id: String,
}

impl InUse {
    fn hold(&self, id: &str) -> InUseGuard<'_> {
        *self.0.lock().entry(id.to_string()).or_default() += 1;
        InUseGuard {
            set: self,
            id: id.to_string(),
        }
    }
    fn is_used(&self, id: &str) -> bool {
        self.0.lock().get(id).is_some_and(|n| *n > 0)
    }
}

impl Drop for InUseGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.set.0.lock();
        if let Some(n) = map.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.id);
            }
        }
    }
}

/// Bytes a directory's files really occupy on disk (sparse files count
/// only their data).
pub fn disk_usage(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

/// How long a delete waits for a snapshot's fast-clone form to be written.
const FAST_FORK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl Core {
    pub fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.data_dir().join("snapshots").join(id)
    }

    /// Takes a snapshot of a running sandbox; answers once it is ready.
    pub async fn create_snapshot(
        &self,
        caller: &Caller,
        sandbox_id: &str,
        comment: Option<String>,
    ) -> Result<SnapshotRecord> {
        let rec = self.get_sandbox(caller, sandbox_id).await?;
        let Some(h) = self.handle(sandbox_id).filter(|_| rec.state.can_exec()) else {
            return Err(Error::not_running(sandbox_id, rec.state));
        };
        let mut snap = SnapshotRecord {
            id: new_id("snap"),
            tenant_id: caller.tenant_id.clone(),
            sandbox_id: sandbox_id.to_string(),
            status: SnapshotStatus::Creating,
            comment,
            size_bytes: 0,
            error: None,
            created_at: self.now_ms(),
        };
        {
            let need = crate::quotas::Quotas {
                snapshots: 1,
                ..Default::default()
            };
            let _quota = self.reserve(&caller.tenant_id, need).await?;
            self.store.put_snapshot(&snap).await?;
        }
        let dest = self.snapshot_dir(&snap.id);
        let res = h
            .call(|tx| Op::Snapshot {
                dest: dest.clone(),
                reply: Some(tx),
            })
            .await;
        match res {
            Ok(_) => {
                snap.status = SnapshotStatus::Ready;
                snap.size_bytes = disk_usage(&dest);
                self.store.put_snapshot(&snap).await?;
                self.events
                    .emit_logged(
                        &snap.tenant_id,
                        Some(sandbox_id),
                        EventKind::SnapshotReady,
                        json!({ "snapshot_id": snap.id, "size_bytes": snap.size_bytes }),
                    )
                    .await;
                Ok(snap)
            }
            Err(e) => {
                snap.status = SnapshotStatus::Failed;
                snap.error = Some(e.message.clone());
                self.store.put_snapshot(&snap).await?;
                Err(e)
            }
        }
    }

    pub async fn list_snapshots(
        &self,
        caller: &Caller,
        sandbox_id: &str,
    ) -> Result<Vec<SnapshotRecord>> {
        self.get_sandbox(caller, sandbox_id).await?;
        Ok(self.store.list_snapshots(sandbox_id).await?)
    }

    /// The caller's snapshots of all their sandboxes, newest first.
    pub async fn tenant_snapshots(
        &self,
        caller: &Caller,
        limit: u32,
    ) -> Result<Vec<SnapshotRecord>> {
        Ok(self
            .store
            .tenant_snapshots(&caller.tenant_id, limit)
            .await?)
    }

    /// One of the caller's snapshots by its id alone (its sandbox may be
    /// destroyed).
    pub async fn find_snapshot(&self, caller: &Caller, id: &str) -> Result<SnapshotRecord> {
        match self.store.get_snapshot(id).await? {
            Some(s) if s.tenant_id == caller.tenant_id => Ok(s),
            _ => Err(Error::new(
                Kind::NotFound,
                "snapshot_not_found",
                format!("snapshot {id} not found"),
            )),
        }
    }

    /// One snapshot of one of the caller's sandboxes.
    pub async fn get_snapshot(
        &self,
        caller: &Caller,
        sandbox_id: &str,
        id: &str,
    ) -> Result<SnapshotRecord> {
        self.get_sandbox(caller, sandbox_id).await?;
        match self.store.get_snapshot(id).await? {
            Some(s) if s.tenant_id == caller.tenant_id && s.sandbox_id == sandbox_id => Ok(s),
            _ => Err(Error::new(
                Kind::NotFound,
                "snapshot_not_found",
                format!("snapshot {id} not found"),
            )),
        }
    }

    pub async fn delete_snapshot(
        &self,
        caller: &Caller,
        sandbox_id: &str,
        id: &str,
    ) -> Result<SnapshotRecord> {
        let snap = self.get_snapshot(caller, sandbox_id, id).await?;
        // Writing its fast-clone form is the server's own business: a
        // delete waits for it (seconds) rather than refusing.
        let deadline = tokio::time::Instant::now() + FAST_FORK_WAIT;
        while self.snapshots.fast_forks.lock().contains(id)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if self.snapshots.in_use.is_used(id) {
            return Err(Error::conflict(
                "snapshot_in_use",
                format!("snapshot {id} is being restored"),
            ));
        }
        let dir = self.snapshot_dir(id);
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir))
            .await
            .map_err(Error::internal)?
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(Error::internal(e)),
            })?;
        self.store.delete_snapshot(id).await?;
        Ok(snap)
    }

    fn ready_snapshot(snap: &SnapshotRecord) -> Result<()> {
        if snap.status != SnapshotStatus::Ready {
            return Err(Error::conflict(
                "invalid_state",
                format!("snapshot {} is {}", snap.id, snap.status.as_str()),
            ));
        }
        Ok(())
    }

    /// Rolls a sandbox back to one of its snapshots (same id).
    pub async fn restore_snapshot(
        &self,
        caller: &Caller,
        sandbox_id: &str,
        id: &str,
    ) -> Result<SandboxRecord> {
        let snap = self.get_snapshot(caller, sandbox_id, id).await?;
        Self::ready_snapshot(&snap)?;
        let rec = self.get_sandbox(caller, sandbox_id).await?;
        let Some(h) = self.handle(sandbox_id) else {
            return Err(Error::invalid_state(sandbox_id, rec.state, "restore"));
        };
        let _using = self.snapshots.in_use.hold(id);
        h.call(|tx| Op::Restore {
            from: self.snapshot_dir(id),
            reply: Some(tx),
        })
        .await
    }

    /// A new sandbox from a snapshot of `source` (taken now when `snapshot`
    /// is `None`; the source keeps running). Same template and size as the
    /// source; `name`, `timeout_sec` and `metadata` may differ. A named
    /// snapshot outlives its sandbox: it forks even a destroyed one.
    pub async fn fork_sandbox(
        self: &Arc<Core>,
        caller: &Caller,
        source_id: &str,
        snapshot: Option<&str>,
        overrides: ForkOverrides,
    ) -> Result<SandboxRecord> {
        let source = self.get_sandbox(caller, source_id).await?;
        if snapshot.is_none() && !source.state.can_fork() {
            return Err(Error::invalid_state(source_id, source.state, "fork"));
        }
        let snap = match snapshot {
            Some(id) => self.get_snapshot(caller, source_id, id).await?,
            None => {
                self.create_snapshot(caller, source_id, Some("fork".into()))
                    .await?
            }
        };
        Self::ready_snapshot(&snap)?;
        let _using = self.snapshots.in_use.hold(&snap.id);
        let now = self.now_ms();
        let mut rec = source.clone();
        rec.id = new_id("sbx");
        rec.state = SandboxState::Provisioning;
        rec.name = overrides.name;
        if let Some(t) = overrides.timeout_sec {
            rec.timeout_sec = t;
        }
        if let Some(m) = overrides.metadata {
            rec.metadata = m;
        }
        if let Some(t) = &caller.scope {
            rec.external_user_id = Some(t.user_id.clone());
            rec.external_workspace_id = Some(t.workspace_id.clone());
        }
        rec.metadata.remove("last_error");
        rec.metadata.insert("forked_from".into(), json!(source_id));
        rec.metadata.insert("snapshot_id".into(), json!(snap.id));
        rec.boot_ms = None;
        rec.boot_path = None;
        rec.created_at = now;
        rec.started_at = None;
        rec.paused_at = None;
        rec.destroyed_at = None;
        rec.deadline_at = None;
        rec.last_activity_at = now;
        let fast = self.fast_fork_dir(&snap.id);
        if self.vmm.snapshot_exists(&fast) {
            return self.start_new(rec, Some(fast)).await;
        }
        let forked = self
            .start_new(rec.clone(), Some(self.snapshot_dir(&snap.id)))
            .await;
        // A snapshot taken just for this fork is not worth converting.
        if forked.is_ok() && snapshot.is_some() {
            self.make_fast_fork(snap.id.clone(), rec);
        }
        forked
    }

    /// The fast-clone form of snapshot `id`, inside its directory.
    fn fast_fork_dir(&self, id: &str) -> PathBuf {
        self.snapshot_dir(id).join("fast")
    }

    /// After the first fork of snapshot `id` (a full snapshot, restored
    /// whole), writes its fast-clone form in the background: a clone of it
    /// with RAM in a file, saved as a template snapshot. Later forks map
    /// that RAM instead of loading it, like a create from a template. The
    /// clone runs for the moment it takes to save it, so later forks start
    /// from a state a fraction of a second past the snapshot's.
    fn make_fast_fork(self: &Arc<Core>, id: String, like: SandboxRecord) {
        if !self.snapshots.fast_forks.lock().insert(id.clone()) {
            return;
        }
        let core = self.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let res = core.write_fast_fork(&id, &like).await;
            core.snapshots.fast_forks.lock().remove(&id);
            match res {
                Ok(()) => tracing::info!(
                    snapshot_id = %id,
                    ms = started.elapsed().as_millis() as u64,
                    "fast-clone form of a forked snapshot ready"
                ),
                Err(e) => {
                    tracing::warn!(snapshot_id = %id, error = %format!("{e:#}"), "fast-clone form not written")
                }
            }
        });
    }

    async fn write_fast_fork(&self, id: &str, like: &SandboxRecord) -> anyhow::Result<()> {
        let _using = self.snapshots.in_use.hold(id);
        let full = self.snapshot_dir(id);
        if !full.is_dir() {
            anyhow::bail!("the snapshot was deleted");
        }
        let tpl = self.resolve_template(&like.template_id).await?;
        let shape = super::warm::Shape {
            template_id: tpl.id.clone(),
            version: tpl.version.clone(),
            cpu_count: like.cpu_count,
            memory_mb: like.memory_mb,
            disk_size_mb: like.disk_size_mb,
        };
        let vm = self
            .restore_shared(&full, &tpl, &shape, &like.env, like.egress)
            .await?;
        self.save_template(vm, &self.fast_fork_dir(id)).await
    }
}

/// What a fork may change from its source.
#[derive(Debug, Clone, Default)]
pub struct ForkOverrides {
    pub name: Option<String>,
    pub timeout_sec: Option<u32>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}
