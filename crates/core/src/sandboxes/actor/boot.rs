//! The first boot: resolve the template, then restore its warm snapshot
//! (or a pooled clone, or a fork's snapshot) or boot cold, and hand the
//! agent its identity.

use super::*;

/// Creates the sandbox disk and cold-boots `spec`.
pub(super) async fn cold_boot(
    core: &Core,
    spec: &VmSpec,
    disk_size_mb: u32,
) -> Result<Box<dyn Vm>, String> {
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

pub(super) async fn boot(
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
            keep_env: Vec::new(),
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
    let mut from = fork_from.or_else(|| core.warm_snapshot(&shape));
    if from.is_none() && !tpl.custom && core.wait_warm(&shape).await {
        from = core.warm_snapshot(&shape);
    }
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
    let cold_started = Instant::now();
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
                // The boot alone: not the template or a wait for a snapshot.
                core.observe_cold_boot(cold_started.elapsed().as_millis() as u64);
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
pub(super) async fn running(
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

pub(super) async fn fail_boot(
    core: &Core,
    h: &SandboxHandle,
    message: String,
) -> Result<SandboxRecord> {
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
