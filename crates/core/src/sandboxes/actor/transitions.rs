//! Transitions of a booted sandbox: snapshot, restore in place, pause to
//! disk and resume, and destroy.

use super::*;

/// A full snapshot of the running sandbox into `dest` (written whole or
/// not at all); the VM continues.
pub(super) async fn snapshot(
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
pub(super) async fn restore(
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

pub(super) async fn pause(
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

pub(super) async fn resume(
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
pub(super) async fn back_from_snapshot(
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

pub(super) async fn destroy(
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
