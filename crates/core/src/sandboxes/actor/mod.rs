//! One lifecycle actor per sandbox: a task that owns the sandbox's VM and
//! runs its operations (boot, pause, resume, destroy) one at a time from a
//! queue, so two pauses, or a pause and a destroy, can never interleave.
//! Between operations it watches the VMM process: a VM that dies puts the
//! sandbox in `error` with `metadata.last_error` and an event at once.
//!
//! Exec, files and terminals do not queue here: they talk to the agent
//! through the handle's client while the sandbox is `running`.

mod boot;
mod transitions;

use boot::*;
use transitions::*;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex as SyncMutex;
use std::time::Instant;

use hearth_agent_client::AgentClient;
use hearth_vmm::{EgressPolicy, SnapshotOptions, Vm, VmSpec};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Kind, Result};
use crate::events::EventKind;
use crate::model::{BootPath, SandboxRecord, SandboxState};
use crate::templates::ResolvedTemplate;
use crate::warm::Shape;
use crate::Core;
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
    /// A paused sandbox goes to another node: the actor ends, its files
    /// stay for that node to copy (`nodes/moves.rs`).
    Release {
        reply: Option<Reply>,
    },
}

/// What the rest of the server holds of a live sandbox.
#[derive(Debug)]
pub struct SandboxHandle {
    pub id: String,
    pub tenant_id: String,
    record: SyncMutex<SandboxRecord>,
    /// Serializes store writes of this record, so the last write is the
    /// newest state.
    persist: tokio::sync::Mutex<()>,
    ops: mpsc::UnboundedSender<Op>,
    agent: SyncMutex<Option<AgentClient>>,
    /// When `last_activity_at` was last written to the store.
    activity_persisted_at: AtomicI64,
}

impl SandboxHandle {
    pub fn record(&self) -> SandboxRecord {
        self.record.lock().clone()
    }

    pub fn state(&self) -> SandboxState {
        self.record.lock().state
    }

    /// The agent client while the sandbox runs.
    pub fn agent(&self) -> Option<AgentClient> {
        self.agent.lock().clone()
    }

    fn set_agent(&self, agent: Option<AgentClient>) {
        *self.agent.lock() = agent;
    }

    /// Queues an operation; the answer comes when the actor has run it.
    pub async fn call(&self, make: impl FnOnce(Reply) -> Op) -> Result<SandboxRecord> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(make(tx))
            .map_err(|_| Error::sandbox_not_found(&self.id))?;
        match rx.await {
            Ok(answer) => answer,
            // Sent in the moment the actor ended after a destroy.
            Err(_) if self.record().state == SandboxState::Destroyed => {
                Err(Error::not_running(&self.id, SandboxState::Destroyed))
            }
            Err(_) => Err(Error::internal(anyhow::anyhow!(
                "sandbox actor {} ended",
                self.id
            ))),
        }
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
            record: SyncMutex::new(record),
            persist: tokio::sync::Mutex::new(()),
            ops: tx,
            agent: SyncMutex::new(vm.as_ref().map(|v| v.agent())),
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
            let mut r = h.record.lock();
            let before = r.clone();
            change(&mut r);
            (before, r.clone())
        };
        if let Err(e) = self.store.update_sandbox(&after).await {
            *h.record.lock() = before;
            return Err(e.into());
        }
        h.activity_persisted_at
            .store(after.last_activity_at, Ordering::Relaxed);
        if before.state != after.state {
            self.metrics.state_changed(Some(before.state), after.state);
            if let Err(e) = crate::usage::switch(self, &after).await {
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
            let mut r = h.record.lock();
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
        // Secret values live only in memory: after a restart the record
        // has their names alone, and the guest keeps its copy.
        spec.keep_env = rec.secret_env.clone();
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
                crate::sandboxes::network::apply(&core, &h, vm.as_deref(), policy).await,
                reply,
            ),
            Op::Release { reply } => {
                let rec = h.record();
                if vm.is_some() || rec.state != SandboxState::Paused {
                    if let Some(tx) = reply {
                        let _ = tx.send(Err(Error::invalid_state(&h.id, rec.state, "move")));
                    }
                    continue;
                }
                core.remove_handle(&h.id);
                core.timers.schedule(&h.id, None);
                if let Some(tx) = reply {
                    let _ = tx.send(Ok(rec));
                }
                // Queued operations are for the node it went to.
                while let Ok(op) = rx.try_recv() {
                    answer_moved(&h, op);
                }
                return;
            }
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

/// Answers an operation that was queued behind the destroy: a destroy (or
/// the boot of a sandbox destroyed while it was being created) gets the
/// destroyed record; anything else fails, so a snapshot queued behind a
/// destroy is never taken for written.
fn answer_destroyed(h: &SandboxHandle, op: Op) {
    let (reply, what) = match op {
        Op::Boot { reply, .. } | Op::Destroy { reply, .. } => {
            if let Some(tx) = reply {
                let _ = tx.send(Ok(h.record()));
            }
            return;
        }
        Op::Snapshot { reply, .. } => (reply, "snapshot"),
        Op::Restore { reply, .. } => (reply, "restore"),
        Op::Pause { reply, .. } => (reply, "pause"),
        Op::Resume { reply } => (reply, "resume"),
        Op::SetEgressPolicy { reply, .. } => (reply, "change the network policy of"),
        Op::Release { reply } => (reply, "move"),
    };
    if let Some(tx) = reply {
        let _ = tx.send(Err(Error::invalid_state(
            &h.id,
            SandboxState::Destroyed,
            what,
        )));
    }
}

/// Answers an operation queued behind a move to another node: retry, it
/// is served there now.
fn answer_moved(h: &SandboxHandle, op: Op) {
    let reply = match op {
        Op::Boot { reply, .. }
        | Op::Destroy { reply, .. }
        | Op::Snapshot { reply, .. }
        | Op::Restore { reply, .. }
        | Op::Pause { reply, .. }
        | Op::Resume { reply }
        | Op::SetEgressPolicy { reply, .. }
        | Op::Release { reply } => reply,
    };
    if let Some(tx) = reply {
        let _ = tx.send(Err(Error::new(
            crate::error::Kind::Unavailable,
            "sandbox_moving",
            format!("sandbox {} is moving to another node; retry", h.id),
        )));
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
