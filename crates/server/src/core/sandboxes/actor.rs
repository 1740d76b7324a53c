//! One lifecycle actor per sandbox: a task that owns the sandbox's VM and
//! runs its operations (boot, pause, resume, destroy) one at a time from a
//! queue, so two pauses, or a pause and a destroy, can never interleave.
//! Between operations it watches the VMM process: a VM that dies puts the
//! sandbox in `error` with `metadata.last_error` and an event at once.
//!
//! Exec, files and terminals do not queue here: they talk to the agent
//! through the handle's client while the sandbox is `running`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Instant;

use hearth_agent_client::AgentClient;
use hearth_vmm::{EgressPolicy, SnapshotOptions, Vm, VmSpec};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::core::error::{Error, Kind, Result};
use crate::core::events::EventKind;
use crate::core::templates::ResolvedTemplate;
use crate::core::warm::Shape;
use crate::core::Core;
use crate::model::{BootPath, SandboxRecord, SandboxState};
use hearth_agent_protocol::error_chain;

/// Why a pause happens (it is reported in the event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseReason {
    Request,
    Timeout,
    Idle,
}

impl PauseReason {
    fn as_str(self) -> &'static str {
        match self {
            PauseReason::Request => "request",
            PauseReason::Timeout => "timeout",
            PauseReason::Idle => "idle",
        }
    }
}

type Reply = oneshot::Sender<Result<SandboxRecord>>;

#[derive(Debug)]
pub enum Op {
    /// First start: from `snapshot` (a fork) or the template (warm when its
    /// template snapshot exists, else cold).
    Boot {
        snapshot: Option<PathBuf>,
        reply: Option<Reply>,
    },
    /// A full snapshot into `dest`; the sandbox keeps running.
    Snapshot {
        dest: PathBuf,
        reply: Option<Reply>,
    },
    /// Rolls the sandbox back to the snapshot in `from`.
    Restore {
        from: PathBuf,
        reply: Option<Reply>,
    },
    Pause {
        reason: PauseReason,
        reply: Option<Reply>,
    },
    Resume {
        reply: Option<Reply>,
    },
    Destroy {
        reason: &'static str,
        reply: Option<Reply>,
    },
    /// Puts an egress policy in force: stored, and applied to the VM at
    /// once when one runs (every later start gets it from the record).
    SetEgressPolicy {
        policy: Option<EgressPolicy>,
        reply: Option<Reply>,
    },
}

/// What the rest of the server holds of a live sandbox.
#[derive(Debug)]
pub struct SandboxHandle {
    pub id: String,
    pub tenant_id: String,
    record: StdMutex<SandboxRecord>,
    /// Serializes store writes of this record, so the last write is the
    /// newest state.
    persist: tokio::sync::Mutex<()>,
    ops: mpsc::UnboundedSender<Op>,
    agent: StdMutex<Option<AgentClient>>,
    /// When `last_activity_at` was last written to the store.
    activity_persisted_at: AtomicI64,
}

impl SandboxHandle {
    pub fn record(&self) -> SandboxRecord {
        self.record
            .lock()
            .expect("record lock is never poisoned")
            .clone()
    }

    pub fn state(&self) -> SandboxState {
        self.record
            .lock()
            .expect("record lock is never poisoned")
            .state
    }

    /// The agent client while the sandbox runs.
    pub fn agent(&self) -> Option<AgentClient> {
        self.agent
            .lock()
            .expect("agent lock is never poisoned")
            .clone()
    }

    fn set_agent(&self, agent: Option<AgentClient>) {
        *self.agent.lock().expect("agent lock is never poisoned") = agent;
    }

    /// Queues an operation; the answer comes when the actor has run it.
    pub async fn call(&self, make: impl FnOnce(Reply) -> Op) -> Result<SandboxRecord> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(make(tx))
            .map_err(|_| Error::sandbox_not_found(&self.id))?;
        rx.await
            .map_err(|_| Error::internal(anyhow::anyhow!("sandbox actor {} ended", self.id)))?
    }

    /// Queues an operation without waiting for it.
    pub fn send(&self, op: Op) {
        let _ = self.ops.send(op);
    }
}

impl Core {
    /// Registers a live sandbox and starts its actor, owning `vm` if one
    /// already runs (re-adopted at start).
    pub(crate) fn spawn_actor(
        self: &Arc<Core>,
        record: SandboxRecord,
        vm: Option<Box<dyn Vm>>,
    ) -> Arc<SandboxHandle> {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = Arc::new(SandboxHandle {
            id: record.id.clone(),
            tenant_id: record.tenant_id.clone(),
            activity_persisted_at: AtomicI64::new(record.last_activity_at),
            record: StdMutex::new(record),
            persist: tokio::sync::Mutex::new(()),
            ops: tx,
            agent: StdMutex::new(vm.as_ref().map(|v| v.agent())),
        });
        self.insert_handle(handle.clone());
        let core = self.clone();
        let h = handle.clone();
        tokio::spawn(async move {
            let span = tracing::info_span!("sandbox", sandbox_id = %h.id);
            tracing::Instrument::instrument(run(core, h, rx, vm), span).await;
        });
        handle
    }

    /// Applies `change` to the sandbox's record and writes it through to
    /// the store; a state change also switches the usage interval and the
    /// timers follow the new deadlines.
    pub(crate) async fn commit(
        &self,
        h: &SandboxHandle,
        change: impl FnOnce(&mut SandboxRecord),
    ) -> Result<SandboxRecord> {
        let _write = h.persist.lock().await;
        let (before, after) = {
            let mut r = h.record.lock().expect("record lock is never poisoned");
            let before = r.clone();
            change(&mut r);
            (before, r.clone())
        };
        if let Err(e) = self.store.update_sandbox(&after).await {
            *h.record.lock().expect("record lock is never poisoned") = before;
            return Err(e.into());
        }
        h.activity_persisted_at
            .store(after.last_activity_at, Ordering::Relaxed);
        if before.state != after.state {
            self.metrics.state_changed(Some(before.state), after.state);
            if let Err(e) = crate::core::usage::switch(self, &after).await {
                tracing::warn!(error = %e, "usage interval not recorded");
            }
        }
        self.timers.schedule(&after.id, after.next_deadline());
        Ok(after)
    }

    /// Records activity (exec, file write, terminal input, preview
    /// traffic): the idle clock starts over. Written to the store at most
    /// every few seconds; the timer wheel sees it at once.
    pub fn touch(&self, h: &SandboxHandle) {
        let now = self.now_ms();
        let next = {
            let mut r = h.record.lock().expect("record lock is never poisoned");
            r.last_activity_at = now;
            r.next_deadline()
        };
        self.timers.schedule(&h.id, next);
        let persisted = h.activity_persisted_at.load(Ordering::Relaxed);
        if now - persisted >= ACTIVITY_PERSIST_MS {
            h.activity_persisted_at.store(now, Ordering::Relaxed);
            let store = self.store.clone();
            let id = h.id.clone();
            tokio::spawn(async move {
                // One column: a concurrent commit's other fields are safe.
                if let Err(e) = store.touch_sandbox(&id, now).await {
                    tracing::debug!(error = %e, "activity not persisted");
                }
            });
        }
    }

    /// A VM of `tpl` with this id and size, in `sandboxes/<id>/`.
    pub(crate) fn base_spec(
        &self,
        id: &str,
        tpl: &ResolvedTemplate,
        vcpus: u32,
        memory_mb: u32,
    ) -> VmSpec {
        let mut spec = VmSpec::new(
            id,
            &self.sandboxes_dir(),
            &tpl.kernel,
            &tpl.initrd,
            &tpl.base_image,
        );
        spec.vcpus = vcpus;
        spec.memory_mb = memory_mb;
        // Ids carry `_`, which hostnames may not.
        spec.hostname = Some(id.replace('_', "-"));
        spec.boot_timeout_ms = self.config.boot_timeout_ms;
        spec
    }

    fn vm_spec(&self, rec: &SandboxRecord, tpl: &ResolvedTemplate) -> VmSpec {
        let mut spec = self.base_spec(&rec.id, tpl, rec.cpu_count, rec.memory_mb);
        spec.egress = rec.egress;
        spec.egress_policy = rec.egress_policy.clone();
        spec.env = rec.env.clone();
        spec
    }
}

/// When a pause that failed (the VM still runs) is tried again by a timer.
const PAUSE_RETRY_MS: i64 = 60_000;

/// How often activity is written to the store at most (per sandbox).
const ACTIVITY_PERSIST_MS: i64 = 5_000;

enum Next {
    Op(Option<Op>),
    Died(String),
}

async fn run(
    core: Arc<Core>,
    h: Arc<SandboxHandle>,
    mut rx: mpsc::UnboundedReceiver<Op>,
    mut vm: Option<Box<dyn Vm>>,
) {
    loop {
        let next = match &vm {
            Some(v) => tokio::select! {
                op = rx.recv() => Next::Op(op),
                status = v.exited() => Next::Died(status),
            },
            None => Next::Op(rx.recv().await),
        };
        let op = match next {
            Next::Op(Some(op)) => op,
            Next::Op(None) => return,
            Next::Died(status) => {
                if let Some(dead) = vm.take() {
                    vm_died(&core, &h, dead, &status).await;
                }
                continue;
            }
        };
        let (result, reply) = match op {
            Op::Boot { snapshot, reply } => (boot(&core, &h, &mut vm, snapshot).await, reply),
            Op::Snapshot { dest, reply } => (snapshot(&core, &h, &mut vm, &dest).await, reply),
            Op::Restore { from, reply } => (restore(&core, &h, &mut vm, &from).await, reply),
            Op::Pause { reason, reply } => (pause(&core, &h, &mut vm, reason).await, reply),
            Op::Resume { reply } => (resume(&core, &h, &mut vm).await, reply),
            Op::SetEgressPolicy { policy, reply } => (
                crate::core::sandboxes::network::apply(&core, &h, vm.as_deref(), policy).await,
                reply,
            ),
            Op::Destroy { reason, reply } => {
                let r = destroy(&core, &h, &mut vm, reason).await;
                let done = r.is_ok();
                if let Some(tx) = reply {
                    let _ = tx.send(r);
                }
                if done {
                    core.remove_handle(&h.id);
                    core.timers.schedule(&h.id, None);
                    // Later queued operations find the sandbox destroyed.
                    while let Ok(op) = rx.try_recv() {
                        answer_destroyed(&h, op);
                    }
                    return;
                }
                continue;
            }
        };
        if let Some(tx) = reply {
            let _ = tx.send(result);
        }
    }
}

fn answer_destroyed(h: &SandboxHandle, op: Op) {
    let reply = match op {
        Op::Boot { reply, .. }
        | Op::Snapshot { reply, .. }
        | Op::Restore { reply, .. }
        | Op::Pause { reply, .. }
        | Op::Resume { reply }
        | Op::Destroy { reply, .. }
        | Op::SetEgressPolicy { reply, .. } => reply,
    };
    if let Some(tx) = reply {
        let _ = tx.send(Ok(h.record()));
    }
}

async fn fail(core: &Core, h: &SandboxHandle, message: String) -> Result<SandboxRecord> {
    h.set_agent(None);
    let rec = core
        .commit(h, |r| {
            r.state = SandboxState::Error;
            r.metadata.insert(
                "last_error".into(),
                serde_json::Value::String(message.clone()),
            );
        })
        .await?;
    core.events
        .emit_logged(
            &h.tenant_id,
            Some(&h.id),
            EventKind::SandboxError,
            json!({ "error": message }),
        )
        .await;
    Ok(rec)
}

async fn vm_died(core: &Core, h: &SandboxHandle, dead: Box<dyn Vm>, status: &str) {
    let tail = tail_of(&dead.console_tail(5));
    tracing::error!(status, "vmm exited unexpectedly");
    let message = if tail.is_empty() {
        format!("vmm exited unexpectedly ({status})")
    } else {
        format!("vmm exited unexpectedly ({status}); console: {tail}")
    };
    let _ = fail(core, h, message).await;
    if let Err(e) = dead.destroy().await {
        tracing::warn!(error = %e, "clean up after a dead vmm");
    }
}

/// The last lines of a console (the driver reads only its last few KiB)
/// on one line, for error messages, cut to [`TAIL_MAX`] characters.
fn tail_of(console: &str) -> String {
    let joined = console.lines().collect::<Vec<_>>().join(" | ");
    keep_tail(&joined, TAIL_MAX)
}

/// Most characters of console output quoted in `last_error` and events.
const TAIL_MAX: usize = 1024;

/// The last `max` characters of `s` (the end of a log says why it ended).
fn keep_tail(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let skip = s.char_indices().nth(n - max).map_or(0, |(i, _)| i);
    format!("...{}", &s[skip..])
}

/// Creates the sandbox disk and cold-boots `spec`.
async fn cold_boot(core: &Core, spec: &VmSpec, disk_size_mb: u32) -> Result<Box<dyn Vm>, String> {
    let dir = spec.dir.clone();
    let disk = spec.disk.clone();
    let size = u64::from(disk_size_mb);
    let made = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        std::fs::create_dir_all(&dir)?;
        hearth_image::create_sparse_ext4(&disk, size)?;
        Ok(())
    })
    .await;
    match made {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("sandbox disk: {e:#}")),
        Err(e) => return Err(format!("sandbox disk: {e}")),
    }
    core.vmm.boot(spec.clone()).await.map_err(|e| {
        let _ = std::fs::remove_file(&spec.disk);
        let _ = std::fs::remove_dir(&spec.dir);
        error_chain(&e)
    })
}

async fn boot(
    core: &Arc<Core>,
    h: &SandboxHandle,
    vm: &mut Option<Box<dyn Vm>>,
    fork_from: Option<PathBuf>,
) -> Result<SandboxRecord> {
    let rec = h.record();
    if !rec.state.needs_boot() {
        return Ok(rec);
    }
    let started = Instant::now();
    let tpl = match core.resolve_template(&rec.template_id).await {
        Ok(t) => t,
        Err(e) => return fail_boot(core, h, error_chain(&e)).await,
    };
    if let Some(pooled) = vm.as_ref() {
        // A warm-pool VM, cloned and warmed up ahead: it only needs this
        // sandbox's env (its id, hostname and entropy are its own already).
        let init = hearth_agent_protocol::InitRequest {
            sandbox_id: rec.id.clone(),
            hostname: Some(rec.id.replace('_', "-")),
            env: rec.env.clone(),
            clock_unix_ms: Some(chrono::Utc::now().timestamp_millis()),
            entropy: Some(hearth_agent_protocol::Base64Bytes::from(
                rand::random::<[u8; 32]>().to_vec(),
            )),
        };
        let policed = match &rec.egress_policy {
            Some(p) => pooled
                .set_egress_policy(Some(p))
                .await
                .map_err(|e| error_chain(&e)),
            None => Ok(()),
        };
        let taken = match policed {
            Ok(()) => pooled.agent().init(&init).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match taken {
            Ok(_) => return running(core, h, &tpl, started, BootPath::Snapshot).await,
            Err(e) => {
                tracing::warn!(error = %e, "warm-pool VM did not take its identity; booting");
                if let Some(v) = vm.take() {
                    let _ = v.destroy().await;
                }
                h.set_agent(None);
            }
        }
    }
    let spec = core.vm_spec(&rec, &tpl);
    if let Err(e) = std::fs::create_dir_all(&spec.dir) {
        return fail_boot(core, h, format!("sandbox directory: {e}")).await;
    }
    let shape = Shape {
        template_id: tpl.id.clone(),
        version: tpl.version.clone(),
        cpu_count: rec.cpu_count,
        memory_mb: rec.memory_mb,
        disk_size_mb: rec.disk_size_mb,
    };
    // A fork, or a custom template (its version's snapshot is all there
    // is of it), must restore: booting the base image would be wrong.
    let forked = fork_from.is_some();
    let must_restore = forked || tpl.custom;
    let from = fork_from.or_else(|| core.warm_snapshot(&shape));
    if from.is_none() && tpl.custom {
        let msg = format!(
            "template {} {} has no snapshot for {} vCPU, {} MiB, {} MiB disk",
            tpl.id, tpl.version, rec.cpu_count, rec.memory_mb, rec.disk_size_mb
        );
        return fail_boot(core, h, msg).await;
    }
    let restored = match &from {
        Some(snap) => match core.vmm.restore(snap, spec.clone()).await {
            Ok(v) => Some(v),
            Err(e) if must_restore => return fail_boot(core, h, error_chain(&e)).await,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "warm boot failed; booting cold");
                None
            }
        },
        None => None,
    };
    let (new_vm, path) = match restored {
        Some(v) => {
            if !forked {
                // Keeps the warm pool (if any) topped up.
                core.ensure_warm(shape, tpl.clone());
            }
            (v, BootPath::Snapshot)
        }
        None => match cold_boot(core, &spec, rec.disk_size_mb).await {
            Ok(v) => {
                core.ensure_warm(shape, tpl.clone());
                (v, BootPath::Cold)
            }
            Err(msg) => return fail_boot(core, h, msg).await,
        },
    };
    h.set_agent(Some(new_vm.agent()));
    *vm = Some(new_vm);
    running(core, h, &tpl, started, path).await
}

/// A first boot is done: the sandbox runs.
async fn running(
    core: &Arc<Core>,
    h: &SandboxHandle,
    tpl: &ResolvedTemplate,
    started: Instant,
    path: BootPath,
) -> Result<SandboxRecord> {
    let boot_ms = started.elapsed().as_millis() as u64;
    core.metrics.observe_boot(boot_ms);
    let now = core.now_ms();
    let rec = core
        .commit(h, |r| {
            r.state = SandboxState::Running;
            r.template_version = tpl.version.clone();
            r.started_at = Some(now);
            r.boot_ms = Some(boot_ms);
            r.boot_path = Some(path);
            r.deadline_at = Some(now + i64::from(r.timeout_sec) * 1000);
            r.last_activity_at = now;
        })
        .await?;
    tracing::info!(boot_ms, boot_path = path.as_str(), "sandbox running");
    core.events
        .emit_logged(
            &h.tenant_id,
            Some(&h.id),
            EventKind::SandboxRunning,
            json!({ "boot_ms": boot_ms, "boot_path": path.as_str() }),
        )
        .await;
    Ok(rec)
}

/// A full snapshot of the running sandbox into `dest` (written whole or
/// not at all); the VM continues.
async fn snapshot(
    core: &Arc<Core>,
    h: &SandboxHandle,
    vm: &mut Option<Box<dyn Vm>>,
    dest: &Path,
) -> Result<SandboxRecord> {
    let rec = h.record();
    let Some(running) = vm.as_ref().filter(|_| rec.state.can_snapshot()) else {
        return Err(Error::not_running(&h.id, rec.state));
    };
    core.commit(h, |r| r.state = SandboxState::Snapshotting)
        .await?;
    let staging = dest.with_extension("partial");
    let _ = std::fs::remove_dir_all(&staging);
    if let Some(parent) = staging.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let res = running.snapshot(&staging, SnapshotOptions::full()).await;
    let res = res
        .map_err(|e| Error::from_snapshot_error(&e, "the snapshot"))
        .and_then(|_| {
            std::fs::rename(&staging, dest).map_err(Error::internal)?;
            hearth_vmm::snapshot::sync_dir(dest.parent().unwrap_or(dest)).map_err(Error::internal)
        });
    if res.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    let alive = running.state().is_live();
    let rec = core
        .commit(h, |r| {
            r.state = if alive {
                SandboxState::Running
            } else {
                SandboxState::Error
            }
        })
        .await?;
    res.map(|_| rec)
}

/// Rolls back to the snapshot in `from`. The current state is saved first,
/// so a snapshot that does not restore leaves the sandbox as it was.
async fn restore(
    core: &Arc<Core>,
    h: &SandboxHandle,
    vm: &mut Option<Box<dyn Vm>>,
    from: &Path,
) -> Result<SandboxRecord> {
    let rec = h.record();
    if !rec.state.can_restore() {
        return Err(Error::invalid_state(&h.id, rec.state, "restore"));
    }
    let summary = core.vmm.inspect_snapshot(from).map_err(|e| {
        // The driver's reason, without the host path the error names.
        let why = std::error::Error::source(&e).map_or_else(|| e.to_string(), error_chain);
        Error::conflict(
            "snapshot_corrupt",
            format!("snapshot cannot be restored: {why}"),
        )
    })?;
    if summary.vcpus != rec.cpu_count || summary.memory_mb != rec.memory_mb {
        return Err(Error::conflict(
            "invalid_state",
            "the snapshot was taken of a VM of another size",
        ));
    }
    let started = Instant::now();
    let tpl = core
        .resolve_template(&rec.template_id)
        .await
        .map_err(Error::internal)?;
    let spec = core.vm_spec(&rec, &tpl);
    // Save what runs now (or keep the paused snapshot) to fall back on.
    let rollback = core.data_dir().join("rollback").join(&h.id);
    let _ = std::fs::remove_dir_all(&rollback);
    std::fs::create_dir_all(rollback.parent().unwrap_or(&rollback)).map_err(Error::internal)?;
    let fallback: PathBuf = match vm.take() {
        Some(running) => {
            let saved = running
                .snapshot(
                    &rollback,
                    SnapshotOptions::full().then(hearth_vmm::AfterSnapshot::Exit),
                )
                .await;
            if let Err(e) = saved {
                let alive = running.state().is_live();
                if alive {
                    *vm = Some(running);
                } else {
                    let _ = running.destroy().await;
                }
                let _ = std::fs::remove_dir_all(&rollback);
                return Err(Error::internal(e));
            }
            let _ = running.destroy().await;
            rollback.clone()
        }
        None => core.paused_dir(&h.id),
    };
    h.set_agent(None);
    std::fs::create_dir_all(&spec.dir).map_err(Error::internal)?;
    let restored = match core.vmm.restore(from, spec.clone()).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "restore failed; going back");
            if fallback == rollback {
                match core.vmm.restore(&rollback, spec).await {
                    Ok(v) => {
                        h.set_agent(Some(v.agent()));
                        *vm = Some(v);
                    }
                    Err(e2) => {
                        fail(
                            core,
                            h,
                            format!(
                                "restore failed and so did the way back: {}",
                                error_chain(&e2)
                            ),
                        )
                        .await?;
                    }
                }
                let _ = std::fs::remove_dir_all(&rollback);
            }
            return Err(Error::conflict(
                "snapshot_corrupt",
                format!("snapshot cannot be restored: {}", error_chain(&e)),
            ));
        }
    };
    let _ = std::fs::remove_dir_all(&rollback);
    let _ = std::fs::remove_dir_all(core.paused_dir(&h.id));
    back_from_snapshot(core, h, vm, restored, started, EventKind::SandboxRestored).await
}

async fn fail_boot(core: &Core, h: &SandboxHandle, message: String) -> Result<SandboxRecord> {
    tracing::warn!(error = %message, "sandbox failed to start");
    fail(core, h, message.clone()).await?;
    // The client learns that and why the boot failed; internals such as
    // host paths stay in the log and in the sandbox's last_error.
    Err(Error::new(
        Kind::Internal,
        "sandbox_start_failed",
        format!(
            "sandbox {} failed to start; see its metadata.last_error",
            h.id
        ),
    ))
}

async fn pause(
    core: &Arc<Core>,
    h: &SandboxHandle,
    vm: &mut Option<Box<dyn Vm>>,
    reason: PauseReason,
) -> Result<SandboxRecord> {
    let rec = h.record();
    if rec.state == SandboxState::Paused {
        return Ok(rec);
    }
    let Some(running) = vm.as_ref().filter(|_| rec.state.can_pause()) else {
        return Err(Error::invalid_state(&h.id, rec.state, "pause"));
    };
    let started = Instant::now();
    core.commit(h, |r| r.state = SandboxState::Snapshotting)
        .await?;
    let dest = core.paused_dir(&h.id);
    let _ = std::fs::remove_dir_all(&dest);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(Error::internal)?;
    }
    let snap = running
        .snapshot(
            &dest,
            SnapshotOptions::full().then(hearth_vmm::AfterSnapshot::Exit),
        )
        .await;
    if let Err(e) = snap {
        let _ = std::fs::remove_dir_all(&dest);
        let alive = running.state().is_live();
        tracing::warn!(error = %error_chain(&e), alive, "pause failed");
        if alive {
            // A timer asked for this pause: without a later deadline it
            // would fire again at once, over and over. Try again in a while.
            let retry = core.now_ms() + PAUSE_RETRY_MS;
            core.commit(h, |r| {
                r.state = SandboxState::Running;
                if r.deadline_at.is_some_and(|d| d < retry) {
                    r.deadline_at = Some(retry);
                }
                r.last_activity_at = r.last_activity_at.max(core.now_ms());
            })
            .await?;
            return Err(Error::from_snapshot_error(&e, "the pause"));
        }
        if let Some(dead) = vm.take() {
            let _ = dead.destroy().await;
        }
        fail(core, h, format!("pause failed: {}", error_chain(&e))).await?;
        return Err(Error::internal(e));
    }
    if let Some(stopped) = vm.take() {
        if let Err(e) = stopped.destroy().await {
            tracing::warn!(error = %e, "clean up after pause");
        }
    }
    h.set_agent(None);
    let now = core.now_ms();
    let rec = core
        .commit(h, |r| {
            r.state = SandboxState::Paused;
            r.paused_at = Some(now);
        })
        .await?;
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        reason = reason.as_str(),
        "sandbox paused"
    );
    core.events
        .emit_logged(
            &h.tenant_id,
            Some(&h.id),
            EventKind::SandboxPaused,
            json!({ "reason": reason.as_str() }),
        )
        .await;
    Ok(rec)
}

async fn resume(
    core: &Arc<Core>,
    h: &SandboxHandle,
    vm: &mut Option<Box<dyn Vm>>,
) -> Result<SandboxRecord> {
    let rec = h.record();
    if rec.state == SandboxState::Running {
        return Ok(rec);
    }
    if !rec.state.can_resume() {
        return Err(Error::invalid_state(&h.id, rec.state, "resume"));
    }
    let started = Instant::now();
    let tpl = core
        .resolve_template(&rec.template_id)
        .await
        .map_err(Error::internal)?;
    let spec = core.vm_spec(&rec, &tpl);
    let snap = core.paused_dir(&h.id);
    std::fs::create_dir_all(&spec.dir).map_err(Error::internal)?;
    let restored = match core.vmm.restore(&snap, spec).await {
        Ok(v) => v,
        Err(e) => {
            // The snapshot stays: a later resume may succeed.
            tracing::warn!(error = %error_chain(&e), "resume failed");
            return Err(Error::internal(e));
        }
    };
    let _ = std::fs::remove_dir_all(&snap);
    back_from_snapshot(core, h, vm, restored, started, EventKind::SandboxResumed).await
}

/// A VM restored from a snapshot (resume, restore in place) takes over:
/// the sandbox runs again with fresh clocks, and `event` says how.
async fn back_from_snapshot(
    core: &Arc<Core>,
    h: &SandboxHandle,
    vm: &mut Option<Box<dyn Vm>>,
    restored: Box<dyn Vm>,
    started: Instant,
    event: EventKind,
) -> Result<SandboxRecord> {
    let boot_ms = started.elapsed().as_millis() as u64;
    core.metrics.observe_boot(boot_ms);
    h.set_agent(Some(restored.agent()));
    *vm = Some(restored);
    let now = core.now_ms();
    let rec = core
        .commit(h, |r| {
            r.state = SandboxState::Running;
            r.paused_at = None;
            r.boot_ms = Some(boot_ms);
            r.boot_path = Some(BootPath::Snapshot);
            r.deadline_at = Some(now + i64::from(r.timeout_sec) * 1000);
            r.last_activity_at = now;
        })
        .await?;
    core.events
        .emit_logged(
            &h.tenant_id,
            Some(&h.id),
            event,
            json!({ "boot_ms": boot_ms, "boot_path": "snapshot" }),
        )
        .await;
    Ok(rec)
}

async fn destroy(
    core: &Arc<Core>,
    h: &SandboxHandle,
    vm: &mut Option<Box<dyn Vm>>,
    reason: &'static str,
) -> Result<SandboxRecord> {
    h.set_agent(None);
    if let Some(v) = vm.take() {
        if let Err(e) = v.destroy().await {
            tracing::warn!(error = %error_chain(&e), "vm destroy");
        }
    }
    let paused = core.paused_dir(&h.id);
    let dir = core.sandboxes_dir().join(&h.id);
    let _ = tokio::task::spawn_blocking(move || {
        let _ = std::fs::remove_dir_all(&paused);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
    let now = core.now_ms();
    let rec = core
        .commit(h, |r| {
            r.state = SandboxState::Destroyed;
            r.destroyed_at = Some(now);
            r.deadline_at = None;
        })
        .await?;
    tracing::info!(reason, "sandbox destroyed");
    core.events
        .emit_logged(
            &h.tenant_id,
            Some(&h.id),
            EventKind::SandboxDestroyed,
            json!({ "reason": reason }),
        )
        .await;
    Ok(rec)
}

#[cfg(test)]
mod tail_tests {
    use super::*;

    #[test]
    fn a_console_tail_is_bounded_and_keeps_the_end() {
        // One endless line, as a hostile guest would write it.
        let mut text = "x".repeat(16 << 10);
        text.push_str("the end");
        let t = tail_of(&text);
        assert!(t.chars().count() <= TAIL_MAX + 3, "{}", t.len());
        assert!(t.ends_with("the end") && t.starts_with("..."));
        assert_eq!(tail_of("a\nb\n"), "a | b");
        assert_eq!(tail_of(""), "");
        assert_eq!(keep_tail("short", 10), "short");
    }
}
