//! A VM's life on the driver: boot and the agent, pause/resume, adoption
//! by a new driver instance, poweroff, a mute guest, refused specs, and a
//! destroy that leaves nothing on the host.

use super::*;

/// A cold boot, the agent's answers (identity, disks, files both ways) and
/// the console the guest writes to; destroy leaves nothing.
pub async fn boot_exec_and_identity(open: Open) -> Result<()> {
    let sb = Sandboxes::new();
    let vmm = open();
    let caps = vmm.capabilities();
    ensure!(caps.max_vcpus >= 1, "{caps:?}");
    let started = Instant::now();
    let vm = vmm.boot(sb.spec("boot1")).await?;
    sb.track(vm.pid());
    eprintln!("booted to agent in {:?}", started.elapsed());
    assert_eq!(vm.state(), VmState::Running);
    assert_eq!(vm.id(), "boot1");
    let agent = vm.agent();
    assert_eq!(
        sh(&agent, "echo hello from the guest").await?,
        "hello from the guest\n"
    );
    let health = agent.health().await?;
    assert!(health.pid1);
    assert_eq!(health.sandbox_id.as_deref(), Some("boot1"));
    assert_eq!(sh(&agent, "hostname").await?.trim(), "boot1");
    // vda is the read-only base, vdb the sandbox disk.
    assert_eq!(
        sh(&agent, "cat /sys/block/vda/ro /sys/block/vdb/ro").await?,
        "1\n0\n"
    );

    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    agent
        .write_file(&hearth_agent_protocol::WriteFileRequest {
            path: "/workspace/blob.bin".into(),
            content: data.clone().into(),
            mode: None,
        })
        .await?;
    assert_eq!(
        agent.read_file_bytes("/workspace/blob.bin").await?.as_ref(),
        &data[..]
    );
    assert_eq!(
        sh(&agent, "wc -c < /workspace/blob.bin").await?.trim(),
        "200000"
    );

    // What the guest prints on its console reaches the driver's tail.
    sh(&agent, "echo conformance-console-marker > /dev/console").await?;
    hearth_test_support::wait_until(Duration::from_secs(30), "console marker", || async {
        vm.console_tail(5)
            .contains("conformance-console-marker")
            .then_some(())
    })
    .await?;
    assert!(vm.console_tail(1).lines().count() <= 1);

    destroy_and_check(vm.as_ref()).await
}

/// A paused guest runs no code; resume continues where it stopped;
/// misuse is a typed error.
pub async fn pause_stops_the_guest_and_resume_continues(open: Open) -> Result<()> {
    let sb = Sandboxes::new();
    let vmm = open();
    if !vmm.capabilities().pause {
        eprintln!("SKIP: the driver cannot pause");
        return Ok(());
    }
    let vm = vmm.boot(sb.spec("pauser")).await?;
    sb.track(vm.pid());
    let agent = vm.agent();
    start_counter(&agent, "/workspace/count").await?;
    let before = counter(&agent, "/workspace/count").await?;
    vm.pause().await?;
    assert_eq!(vm.state(), VmState::Paused);
    let err = vm.pause().await.expect_err("a paused VM paused again");
    assert!(
        matches!(
            err,
            VmmError::InvalidState {
                state: VmState::Paused,
                ..
            }
        ),
        "{err}"
    );
    // Running, the counter would gain 25-50 in this time; paused, it
    // gains only what runs around the pause (an exec before, one after).
    tokio::time::sleep(Duration::from_secs(5)).await;
    vm.resume().await?;
    assert_eq!(vm.state(), VmState::Running);
    let after = counter(&agent, "/workspace/count").await?;
    assert!(
        after < before + 15,
        "the guest ran while paused: {before} -> {after}"
    );
    wait_counter(&agent, "/workspace/count", after + 3).await?;
    assert!(matches!(
        vm.resume().await,
        Err(VmmError::InvalidState {
            state: VmState::Running,
            ..
        })
    ));
    destroy_and_check(vm.as_ref()).await
}

/// A new driver instance takes over a VM an earlier one started (a server
/// restart) and fully controls it.
pub async fn a_new_driver_instance_adopts_a_running_vm(open: Open) -> Result<()> {
    let sb = Sandboxes::new();
    let first = open();
    if !first.capabilities().adopt {
        eprintln!("SKIP: the driver cannot adopt");
        return Ok(());
    }
    let vm = first.boot(sb.spec("adoptee")).await?;
    sb.track(vm.pid());
    let (pid, dir) = (vm.pid(), vm.spec().dir.clone());
    let jail = vm.jail().cloned();
    sh(&vm.agent(), "echo kept > /workspace/k.txt").await?;
    // The first driver goes away without destroying the VM (as when the
    // server process exits, its connections close).
    vm.agent().disconnect().await;
    drop(vm);
    drop(first);
    assert!(common::alive(pid));

    let second = open();
    let t = Instant::now();
    let vm = second.adopt(&dir).await?;
    eprintln!("adopted in {:?}", t.elapsed());
    assert_eq!((vm.pid(), vm.id()), (pid, "adoptee"));
    assert_eq!(vm.state(), VmState::Running);
    assert_eq!(vm.jail(), jail.as_ref());
    assert_eq!(sh(&vm.agent(), "cat /workspace/k.txt").await?, "kept\n");
    vm.pause().await?;
    assert_eq!(vm.state(), VmState::Paused);
    vm.resume().await?;
    let snap = sb.path().join("adopted-snap");
    vm.snapshot(&snap, SnapshotOptions::full()).await?;
    assert_eq!(second.inspect_snapshot(&snap)?.kind, SnapshotKind::Full);
    assert_eq!(sh(&vm.agent(), "echo still").await?, "still\n");
    destroy_and_check(vm.as_ref()).await?;
    // Nothing to adopt any more.
    assert!(second.adopt(&dir).await.is_err());
    Ok(())
}

/// Destroy stops the VMM and removes everything it had: process, the
/// files in its directory (and the directory), its jail. The pidfile
/// names the VMM while it runs (recovery reads it).
pub async fn destroy_leaves_nothing(open: Open) -> Result<()> {
    let sb = Sandboxes::new();
    let vmm = open();
    let spec = sb.spec("doomed");
    let layout = spec.layout();
    let vm = vmm.boot(spec).await?;
    sb.track(vm.pid());
    assert_eq!(
        std::fs::read_to_string(&layout.pidfile)?.trim(),
        vm.pid().to_string()
    );
    assert!(layout.record.exists());
    // While it runs, its jail is on the host (so the check after destroy
    // can see each part missing).
    if let Some(jail) = vm.jail() {
        let there = jail.leftovers().await;
        let has = |what: &str| there.iter().any(|l| l.starts_with(what));
        assert!(has("network namespace"), "{there:?}");
        if jail.connected {
            assert!(has("interface") && has("nftables chain"), "{there:?}");
        }
        assert_eq!(
            there.iter().filter(|l| l.starts_with("cgroup")).count(),
            jail.cgroups.len(),
            "{there:?}"
        );
    }
    destroy_and_check(vm.as_ref()).await?;
    assert_eq!(vm.state(), VmState::Destroyed);
    // Destroy is idempotent; everything else is a typed error now.
    vm.destroy().await?;
    assert!(matches!(
        vm.resume().await,
        Err(VmmError::InvalidState {
            state: VmState::Destroyed,
            ..
        })
    ));
    assert!(vm
        .snapshot(&sb.path().join("late"), SnapshotOptions::full())
        .await
        .is_err());
    Ok(())
}

/// A guest that powers off shows as exited; its `exited` future resolves;
/// destroy still cleans up.
pub async fn guest_poweroff_shows_as_exited(open: Open) -> Result<()> {
    let sb = Sandboxes::new();
    let vmm = open();
    let vm = vmm.boot(sb.spec("poweroff")).await?;
    sb.track(vm.pid());
    // The answer may or may not make it out before the power goes.
    let _ = vm
        .agent()
        .shutdown(&hearth_agent_protocol::ShutdownRequest { reboot: false })
        .await;
    tokio::time::timeout(Duration::from_secs(60), vm.exited())
        .await
        .context("vmm to exit after guest poweroff")?;
    assert_eq!(vm.state(), VmState::Exited);
    assert!(matches!(
        vm.pause().await,
        Err(VmmError::InvalidState {
            state: VmState::Exited,
            ..
        })
    ));
    destroy_and_check(vm.as_ref()).await
}

/// A guest whose agent never answers fails the boot within its deadline,
/// with the end of its console in the error; nothing the driver made is
/// left, the caller's disk is.
pub async fn a_guest_that_never_answers_fails_with_its_console(open: Open) -> Result<()> {
    let sb = Sandboxes::new();
    let vmm = open();
    let mut spec = sb.spec("mute");
    let initrd = sb.path().join("agentless.cpio");
    agentless_initrd(&initrd)?;
    spec.initrd = initrd;
    spec.boot_timeout_ms = 20_000;
    let (dir, disk) = (spec.dir.clone(), spec.disk.clone());
    let t = Instant::now();
    let err = vmm
        .boot(spec)
        .await
        .expect_err("a guest without an agent booted");
    let chain = err.chain();
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    assert!(matches!(err, VmmError::Boot { .. }), "{chain}");
    let tail = err
        .console_tail()
        .with_context(|| format!("no console tail in: {chain}"))?;
    assert!(
        tail.contains("bogus-init: no agent in this guest"),
        "{tail}"
    );
    let left: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    assert_eq!(left, vec![disk], "only the caller's disk is left");
    assert_no_process_mentions(&dir)?;
    Ok(())
}

/// A spec the host cannot hold is refused before anything starts.
pub async fn an_oversized_spec_is_refused_before_anything_starts(open: Open) -> Result<()> {
    let sb = Sandboxes::new();
    let vmm = open();
    let mut spec = sb.spec("huge");
    spec.vcpus = vmm.capabilities().max_vcpus + 1;
    spec.memory_mb = 64 * 1024 * 1024;
    let err = vmm
        .boot(spec.clone())
        .await
        .expect_err("an oversized spec booted");
    let msg = err.to_string();
    assert!(matches!(err, VmmError::Resources { .. }), "{msg}");
    assert!(
        msg.contains("vcpus requested") && msg.contains("MiB memory requested"),
        "{msg}"
    );
    assert!(!spec.layout().pidfile.exists());
    assert!(!spec.layout().record.exists());
    Ok(())
}
