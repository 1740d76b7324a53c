//! Snapshots on the driver: full snapshots and their restores, template
//! clones and stacked templates, pause to disk, a full disk, and refusing
//! a snapshot with any file cut short.

use super::*;

/// A full snapshot keeps disk and memory (a process and its files in
/// RAM); the source runs on; inspect_snapshot describes it; a restore is a
/// new VM with its own identity.
pub async fn full_snapshot_restores_disk_memory_and_processes(open: Open) -> Result<()> {
    let sb = Sandboxes::new();
    let vmm = open();
    let vm = vmm.boot(sb.spec("src")).await?;
    sb.track(vm.pid());
    let agent = vm.agent();
    sh(&agent, "echo before-snapshot > /workspace/note.txt").await?;
    // In memory only: /tmp survives only through the RAM snapshot.
    start_counter(&agent, "/tmp/count").await?;
    let snap = sb.path().join("snap1");
    assert!(!vmm.snapshot_exists(&snap));
    let info = vm.snapshot(&snap, SnapshotOptions::full()).await?;
    eprintln!("snapshot: {:?}", info.timings);
    assert_eq!(vm.state(), VmState::Running);
    assert_eq!(info.dir, snap);
    assert_eq!(info.summary.kind, SnapshotKind::Full);
    assert_eq!(
        (info.summary.vcpus, info.summary.memory_mb),
        (vm.spec().vcpus, vm.spec().memory_mb)
    );
    assert!(info.summary.state_bytes > 0);
    assert!(vmm.snapshot_exists(&snap));
    assert_eq!(vmm.inspect_snapshot(&snap)?, info.summary);
    // A second snapshot into the same place is refused.
    assert!(vm.snapshot(&snap, SnapshotOptions::full()).await.is_err());
    let at_snapshot = counter(&agent, "/tmp/count").await?;
    // The source keeps running after the snapshot.
    wait_counter(&agent, "/tmp/count", at_snapshot).await?;
    destroy_and_check(vm.as_ref()).await?;

    let restored = vmm.restore(&snap, sb.restore_spec("dst")).await?;
    sb.track(restored.pid());
    assert_eq!(restored.state(), VmState::Running);
    let agent = restored.agent();
    assert_eq!(
        sh(&agent, "cat /workspace/note.txt").await?,
        "before-snapshot\n"
    );
    let first = counter(&agent, "/tmp/count").await?;
    assert!(first >= 1, "{first}");
    wait_counter(&agent, "/tmp/count", first).await?;
    assert_eq!(agent.health().await?.sandbox_id.as_deref(), Some("dst"));
    assert_eq!(sh(&agent, "hostname").await?.trim(), "dst");
    destroy_and_check(restored.as_ref()).await?;
    assert!(vmm.snapshot_exists(&snap), "a restore consumes nothing");
    Ok(())
}

/// Two VMs restored from one snapshot are independent: own disks, own
/// identities, own random state.
pub async fn restores_of_one_snapshot_are_independent(open: Open) -> Result<()> {
    let sb = Sandboxes::new();
    let vmm = open();
    let vm = vmm.boot(sb.spec("origin")).await?;
    sb.track(vm.pid());
    sh(&vm.agent(), "echo shared > /workspace/s.txt").await?;
    let snap = sb.path().join("snap");
    vm.snapshot(&snap, SnapshotOptions::full().then(AfterSnapshot::Exit))
        .await?;
    assert_eq!(vm.state(), VmState::Exited);
    destroy_and_check(vm.as_ref()).await?;

    let a = vmm.restore(&snap, sb.restore_spec("fork-a")).await?;
    sb.track(a.pid());
    let b = vmm.restore(&snap, sb.restore_spec("fork-b")).await?;
    sb.track(b.pid());
    assert_ne!(a.pid(), b.pid());
    for vm in [&a, &b] {
        let agent = vm.agent();
        assert_eq!(sh(&agent, "cat /workspace/s.txt").await?, "shared\n");
        assert_eq!(sh(&agent, "hostname").await?.trim(), vm.id());
        sh(&agent, &format!("echo {} > /workspace/s.txt", vm.id())).await?;
    }
    for vm in [&a, &b] {
        assert_eq!(
            sh(&vm.agent(), "cat /workspace/s.txt").await?.trim(),
            vm.id()
        );
    }
    let ra = sh(&a.agent(), "head -c16 /dev/urandom | od -x").await?;
    let rb = sh(&b.agent(), "head -c16 /dev/urandom | od -x").await?;
    assert_ne!(ra, rb, "clones share random state");
    // Destroying one leaves the other running.
    destroy_and_check(a.as_ref()).await?;
    assert_eq!(
        sh(&b.agent(), "cat /workspace/s.txt").await?.trim(),
        "fork-b"
    );
    destroy_and_check(b.as_ref()).await
}

/// Fast clones of a template snapshot answer, differ from each other, and
/// leave the template as it was.
pub async fn template_clones_are_independent_and_leave_it_untouched(open: Open) -> Result<()> {
    let sb = Sandboxes::new();
    let vmm = open();
    if !vmm.capabilities().fast_clone {
        eprintln!("SKIP: the driver has no template snapshots");
        return Ok(());
    }
    let mut spec = sb.spec("tmpl");
    spec.memory = MemoryBacking::SharedFile;
    let vm = vmm.boot(spec).await?;
    sb.track(vm.pid());
    sh(&vm.agent(), "echo from-template > /workspace/t.txt").await?;
    let snap = sb.path().join("template");
    let info = vm
        .snapshot(&snap, SnapshotOptions::template().then(AfterSnapshot::Exit))
        .await?;
    assert_eq!(vm.state(), VmState::Exited);
    assert_eq!(info.summary.kind, SnapshotKind::Template);
    assert!(
        info.summary.state_bytes < 4 << 20,
        "template state should be device state only: {}",
        info.summary.state_bytes
    );
    assert!(info.summary.memory_bytes.is_some());
    assert_eq!(vmm.inspect_snapshot(&snap)?.kind, SnapshotKind::Template);
    destroy_and_check(vm.as_ref()).await?;
    let before = dir_contents(&snap)?;

    let mut clones = Vec::new();
    for id in ["clone-a", "clone-b"] {
        let t = Instant::now();
        let c = vmm.restore(&snap, sb.restore_spec(id)).await?;
        sb.track(c.pid());
        eprintln!("{id}: restored and initialized in {:?}", t.elapsed());
        clones.push(c);
    }
    let mut randoms = Vec::new();
    for c in &clones {
        let a = c.agent();
        assert_eq!(sh(&a, "cat /workspace/t.txt").await?, "from-template\n");
        assert_eq!(sh(&a, "hostname").await?.trim(), c.id());
        sh(&a, &format!("echo {} > /workspace/own.txt", c.id())).await?;
        // Memory written by a clone is its own.
        sh(&a, &format!("echo {} > /tmp/own", c.id())).await?;
        randoms.push(sh(&a, "head -c16 /dev/urandom | od -x").await?);
    }
    assert_ne!(randoms[0], randoms[1]);
    for c in &clones {
        assert_eq!(
            sh(&c.agent(), "cat /workspace/own.txt /tmp/own").await?,
            format!("{0}\n{0}\n", c.id())
        );
    }
    for c in &clones {
        destroy_and_check(c.as_ref()).await?;
    }
    assert!(dir_contents(&snap)? == before, "the template changed");
    Ok(())
}

/// A VM restored into shared memory can be snapshotted as a template, from
/// a full snapshot and from a template alike, so templates stack; the
/// lower template is left as it was.
pub async fn templates_stack_through_shared_memory_restores(open: Open) -> Result<()> {
    let sb = Sandboxes::new();
    let vmm = open();
    if !vmm.capabilities().fast_clone {
        eprintln!("SKIP: the driver has no template snapshots");
        return Ok(());
    }
    let vm = vmm.boot(sb.spec("src")).await?;
    sb.track(vm.pid());
    sh(&vm.agent(), "echo layer0 > /workspace/0.txt").await?;
    start_counter(&vm.agent(), "/tmp/count").await?;
    let full = sb.path().join("full");
    vm.snapshot(&full, SnapshotOptions::full()).await?;
    destroy_and_check(vm.as_ref()).await?;

    // A full snapshot restored into shared-file RAM, then written as a
    // template snapshot: the fast-clone form of it.
    let mut spec = sb.restore_spec("conv");
    spec.memory = MemoryBacking::SharedFile;
    let conv = vmm.restore(&full, spec).await?;
    sb.track(conv.pid());
    sh(&conv.agent(), "echo layer1 > /workspace/1.txt").await?;
    let t1 = sb.path().join("t1");
    conv.snapshot(&t1, SnapshotOptions::template().then(AfterSnapshot::Exit))
        .await?;
    destroy_and_check(conv.as_ref()).await?;
    let t1_before = dir_contents(&t1)?;

    // A template goes one layer up by a restore into shared memory.
    let mut spec = sb.restore_spec("layer");
    spec.memory = MemoryBacking::SharedFile;
    let layer = vmm.restore(&t1, spec).await?;
    sb.track(layer.pid());
    assert_eq!(sh(&layer.agent(), "hostname").await?.trim(), "layer");
    sh(&layer.agent(), "echo layer2 > /workspace/2.txt").await?;
    let t2 = sb.path().join("t2");
    layer
        .snapshot(&t2, SnapshotOptions::template().then(AfterSnapshot::Exit))
        .await?;
    destroy_and_check(layer.as_ref()).await?;
    assert!(
        dir_contents(&t1)? == t1_before,
        "the lower template changed"
    );

    // A plain clone of the top layer has all of it, the process included.
    let clone = vmm.restore(&t2, sb.restore_spec("clone")).await?;
    sb.track(clone.pid());
    let a = clone.agent();
    assert_eq!(
        sh(&a, "cat /workspace/0.txt /workspace/1.txt /workspace/2.txt").await?,
        "layer0\nlayer1\nlayer2\n"
    );
    let first = counter(&a, "/tmp/count").await?;
    wait_counter(&a, "/tmp/count", first).await?;
    assert_eq!(sh(&a, "hostname").await?.trim(), "clone");
    destroy_and_check(clone.as_ref()).await
}

/// Pause to disk (snapshot, then the VMM exits) and resume in place: the
/// same id and directory, disk and memory as they were.
pub async fn pause_to_disk_then_restore_in_place(open: Open) -> Result<()> {
    let sb = Sandboxes::new();
    let vmm = open();
    let spec = sb.spec("sleeper");
    let vm = vmm.boot(spec.clone()).await?;
    sb.track(vm.pid());
    let pid = vm.pid();
    let jail = vm.jail().cloned();
    sh(
        &vm.agent(),
        "echo 1 > /workspace/state; echo mem > /tmp/in-ram",
    )
    .await?;
    let snap = sb.path().join("paused-sleeper");
    vm.snapshot(&snap, SnapshotOptions::full().then(AfterSnapshot::Exit))
        .await?;
    assert_eq!(vm.state(), VmState::Exited);
    assert!(!common::alive(pid), "vmm still running after pause to disk");
    assert_jail_gone(jail.as_ref()).await?;
    tokio::time::timeout(Duration::from_secs(10), vm.exited())
        .await
        .context("exited() of a paused-to-disk VM")?;
    assert!(matches!(
        vm.resume().await,
        Err(VmmError::InvalidState {
            state: VmState::Exited,
            ..
        })
    ));
    drop(vm);

    // Same id, same directory: the snapshot's disk replaces the sandbox's.
    let vm = vmm.restore(&snap, spec.clone()).await?;
    sb.track(vm.pid());
    assert_eq!(
        sh(&vm.agent(), "cat /workspace/state /tmp/in-ram").await?,
        "1\nmem\n"
    );
    assert_eq!(vm.spec().dir, spec.dir);
    destroy_and_check(vm.as_ref()).await
}

/// A snapshot into a filesystem that fills up is [`VmmError::NoSpace`]
/// (whatever the backend's own words), leaves nothing half-written, and
/// the VM runs on.
pub async fn a_snapshot_on_a_full_disk_is_no_space_and_the_vm_runs_on(open: Open) -> Result<()> {
    let sb = Sandboxes::new();
    // Real-VM tests run as root (the jail needs it): a mount that fails is
    // a failure, never a silent pass.
    let small = SmallDisk::mount(&sb.path().join("small"), 8)
        .ok_or_else(|| anyhow::anyhow!("mounting a small tmpfs failed (needs root)"))?;
    let vmm = open();
    let vm = vmm.boot(sb.spec("filler")).await?;
    sb.track(vm.pid());
    sh(&vm.agent(), "echo kept > /workspace/k.txt").await?;
    let dest = small.0.join("snap");
    let err = vm
        .snapshot(&dest, SnapshotOptions::full())
        .await
        .expect_err("a 256 MiB guest's state does not fit in 8 MiB");
    assert!(err.is_no_space(), "not typed as no space: {}", err.chain());
    assert!(matches!(err, VmmError::NoSpace { .. }), "{}", err.chain());
    assert!(!vmm.snapshot_exists(&dest));
    assert!(!dest.exists(), "half-written snapshot left");
    assert_eq!(vm.state(), VmState::Running);
    assert_eq!(sh(&vm.agent(), "cat /workspace/k.txt").await?, "kept\n");
    // The same VM snapshots fine where there is room.
    vm.snapshot(&sb.path().join("roomy"), SnapshotOptions::full())
        .await?;
    destroy_and_check(vm.as_ref()).await
}

/// inspect_snapshot refuses a directory without a whole snapshot: nothing
/// there, or any of its files cut short; a restore of it fails without
/// leaving anything behind.
pub async fn inspect_refuses_a_snapshot_with_any_file_cut_short(open: Open) -> Result<()> {
    let sb = Sandboxes::new();
    let vmm = open();
    let empty = sb.path().join("empty");
    std::fs::create_dir_all(&empty)?;
    assert!(matches!(
        vmm.inspect_snapshot(&empty),
        Err(VmmError::InspectSnapshot { .. })
    ));
    assert!(!vmm.snapshot_exists(&empty));

    let vm = vmm.boot(sb.spec("tobreak")).await?;
    sb.track(vm.pid());
    let snap = sb.path().join("snap");
    vm.snapshot(&snap, SnapshotOptions::full().then(AfterSnapshot::Exit))
        .await?;
    destroy_and_check(vm.as_ref()).await?;
    let whole = vmm.inspect_snapshot(&snap)?;
    let files: Vec<PathBuf> = std::fs::read_dir(&snap)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    ensure!(!files.is_empty(), "an empty snapshot directory");
    for (i, file) in files.iter().filter(|f| f.is_file()).enumerate() {
        let len = std::fs::metadata(file)?.len();
        if len == 0 {
            continue;
        }
        let aside = sb.path().join("aside");
        std::fs::copy(file, &aside)?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(file)?
            .set_len(len / 2)?;
        let err = vmm
            .inspect_snapshot(&snap)
            .expect_err(&format!("{} cut short went unnoticed", file.display()));
        assert!(
            matches!(err, VmmError::InspectSnapshot { .. }),
            "{}",
            err.chain()
        );
        let spec = sb.restore_spec(&format!("broken{i}"));
        let dir = spec.dir.clone();
        assert!(vmm.restore(&snap, spec).await.is_err());
        assert!(!dir.exists(), "a failed restore left {}", dir.display());
        assert_no_process_mentions(&dir)?;
        std::fs::rename(&aside, file)?;
    }
    assert_eq!(vmm.inspect_snapshot(&snap)?, whole);
    Ok(())
}
