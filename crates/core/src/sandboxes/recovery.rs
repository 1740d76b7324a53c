//! Start-up reconciliation of the store with the VMM processes that
//! survived the previous server (they run in their own sessions): running
//! sandboxes are re-adopted; paused ones stay paused; operations that were
//! in flight end in a clear state; nothing is left orphaned.

use std::sync::Arc;

use serde_json::json;

use crate::events::EventKind;
use crate::model::{SandboxRecord, SandboxState};
use crate::store::StoreResult;
use crate::Core;

pub(crate) async fn recover(core: &Arc<Core>) -> StoreResult<()> {
    let live = core.store.live_sandboxes(core.node_id()).await?;
    reap_orphans(core, &live).await;
    core.fail_interrupted_builds().await;
    let mut adopted = 0usize;
    let mut failed = 0usize;
    for mut rec in live {
        // Made before nodes existed: this (the only) node's from now on.
        if rec.node_id.is_none() {
            rec.node_id = Some(core.node_id().to_string());
            core.store.update_sandbox(&rec).await?;
        }
        let id = rec.id.clone();
        match recover_one(core, rec).await {
            Ok(true) => adopted += 1,
            Ok(false) => {}
            Err(e) => {
                failed += 1;
                tracing::error!(sandbox_id = %id, error = %e, "recovery failed");
            }
        }
    }
    tracing::info!(adopted, failed, "recovery done");
    Ok(())
}

/// VM directories no live sandbox owns (warm-pool VMs and template build
/// VMs of an earlier run, a destroy cut short): their VMMs are stopped and
/// the directories removed. So are paused snapshots of sandboxes this node
/// no longer answers for (another node took them over while it was away).
async fn reap_orphans(core: &Arc<Core>, live: &[SandboxRecord]) {
    if let Ok(paused) = std::fs::read_dir(core.data_dir().join("paused")) {
        for entry in paused.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with("sbx_") && !live.iter().any(|r| r.id == name) {
                tracing::info!(sandbox_id = %name, "paused snapshot of a sandbox no longer here removed");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let Ok(entries) = std::fs::read_dir(core.sandboxes_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        // Only directories this server makes (sandboxes, template builds):
        // anything else in the directory is not ours to stop.
        let ours = name.starts_with("sbx_") || name.starts_with("tpl-");
        if !ours || live.iter().any(|r| r.id == name) {
            continue;
        }
        reap_dir(core, &entry.path()).await;
    }
}

/// Stops the VMM of VM directory `dir` (adopted and destroyed, or killed
/// by its pidfile when it never got as far as `vm.json`) and removes it.
pub(crate) async fn reap_dir(core: &Arc<Core>, dir: &std::path::Path) {
    if dir.join("vm.json").exists() {
        if let Ok(vm) = core.vmm.adopt(dir).await {
            let _ = vm.destroy().await;
        }
    }
    // A VMM whose boot was cut short has a pidfile but no vm.json.
    let pid = std::fs::read_to_string(dir.join("vmm.pid")).unwrap_or_default();
    if let Ok(pid) = pid.trim().parse::<i32>() {
        let pid = nix::unistd::Pid::from_raw(pid);
        if nix::sys::signal::kill(pid, None).is_ok() {
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            // A killed process may finish the system call it is in (a
            // socket bound in the directory): wait until it is gone.
            let deadline = std::time::Instant::now() + REAP_WAIT;
            while hearth_vmm::host::process_alive(pid.as_raw())
                && std::time::Instant::now() < deadline
            {
                tokio::time::sleep(REAP_POLL).await;
            }
        }
    }
    // Something still finishing with the directory (the VMM's last
    // writes) can make one removal meet a new entry: try a few times.
    let mut tries = 0;
    loop {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "orphan VM directory reaped");
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if tries < REAP_TRIES => {
                tracing::debug!(dir = %dir.display(), error = %e, "orphan directory removal retried");
                tries += 1;
                tokio::time::sleep(REAP_POLL).await;
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "orphan directory not removed");
                return;
            }
        }
    }
}

/// How long a reap waits for a killed VMM to exit.
const REAP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// The pause between checks while reaping.
const REAP_POLL: std::time::Duration = std::time::Duration::from_millis(50);
/// Removal attempts after the first.
const REAP_TRIES: u32 = 5;

/// Brings one stored sandbox back under an actor. True when a running VM
/// was re-adopted.
async fn recover_one(core: &Arc<Core>, mut rec: SandboxRecord) -> StoreResult<bool> {
    let dir = core.sandboxes_dir().join(&rec.id);
    let paused_snapshot = core.paused_dir(&rec.id);
    let paused_ok = core.vmm.snapshot_exists(&paused_snapshot);
    let vm = if dir.join("vm.json").exists() {
        match core.vmm.adopt(&dir).await {
            Ok(vm) => Some(vm),
            Err(e) => {
                tracing::warn!(sandbox_id = %rec.id, error = %e, "vm not re-adopted");
                None
            }
        }
    } else {
        None
    };
    let before = rec.state;
    let mut error: Option<String> = None;
    let mut keep_vm = false;
    match (before, vm.is_some()) {
        (SandboxState::Running, true) => keep_vm = true,
        // A snapshot (pause) was in flight: the VM is whole, so it goes on
        // running; a half-written snapshot is dropped below.
        (SandboxState::Snapshotting, true) => {
            keep_vm = true;
            rec.state = SandboxState::Running;
        }
        (SandboxState::Snapshotting, false) if paused_ok => {
            rec.state = SandboxState::Paused;
            rec.paused_at = Some(core.now_ms());
        }
        // Others gave this node up while it was away, and the VM ran on.
        (SandboxState::Error, true) if rec.metadata.contains_key(crate::nodes::LOST_NODE) => {
            keep_vm = true;
            rec.state = SandboxState::Running;
            rec.metadata.remove("last_error");
            rec.metadata.remove(crate::nodes::LOST_NODE);
        }
        (SandboxState::Running | SandboxState::Snapshotting, false) => {
            error = Some("the sandbox's VM did not survive a server restart".into());
        }
        (SandboxState::Provisioning, _) => {
            error = Some("the server restarted while the sandbox was starting".into());
        }
        (SandboxState::Paused, _) if !paused_ok => {
            error = Some("the paused sandbox's snapshot is missing or unreadable".into());
        }
        _ => {}
    }
    let mut vm = vm;
    if keep_vm {
        if let Some(v) = &vm {
            // A VM stopped for a snapshot that never finished.
            if v.state() == hearth_vmm::VmState::Paused {
                if let Err(e) = v.resume().await {
                    error = Some(format!("resume the re-adopted VM: {e}"));
                    keep_vm = false;
                }
            }
        }
    }
    if !keep_vm {
        if let Some(v) = vm.take() {
            let _ = v.destroy().await;
        }
    }
    if rec.state != SandboxState::Paused && paused_snapshot.exists() && keep_vm {
        let _ = std::fs::remove_dir_all(&paused_snapshot);
    }
    if let Some(msg) = &error {
        rec.state = SandboxState::Error;
        rec.metadata
            .insert("last_error".into(), serde_json::Value::String(msg.clone()));
    }
    let changed = rec.state != before || error.is_some();
    let now = core.now_ms();
    if keep_vm && rec.deadline_at.is_none() {
        rec.deadline_at = Some(now + i64::from(rec.timeout_sec) * 1000);
    }
    core.store.update_sandbox(&rec).await?;
    core.metrics.state_changed(None, rec.state);
    if changed {
        if let Err(e) = crate::usage::switch(core, &rec).await {
            tracing::warn!(error = %e, "usage interval not recorded");
        }
    }
    if let Some(msg) = error {
        core.events
            .emit_logged(
                &rec.tenant_id,
                Some(&rec.id),
                EventKind::SandboxError,
                json!({ "error": msg }),
            )
            .await;
    }
    let next = rec.next_deadline();
    let id = rec.id.clone();
    let policy = rec.egress_policy.clone();
    let h = core.spawn_actor(rec, if keep_vm { vm } else { None });
    if keep_vm && policy.is_some() {
        // The kernel kept the VM's filter across the restart; this brings
        // back what lives in the server (hostname rules' DNS tracking).
        h.send(crate::sandboxes::actor::Op::SetEgressPolicy {
            policy,
            reply: None,
        });
    }
    core.timers.schedule(&id, next);
    Ok(keep_vm)
}
