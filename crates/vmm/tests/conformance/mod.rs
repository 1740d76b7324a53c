//! The driver conformance suite: what every [`Vmm`] must do, written
//! against `Arc<dyn Vmm>` and the neutral types only, on real VMs booted
//! from the `minimal` image. A driver's test binary runs each function with
//! a way to open a fresh instance of it (`qemu_conformance.rs` for QEMU);
//! a test of something the driver says it cannot do ([`Capabilities`])
//! passes after saying so.
//!
//! What only one backend has (its files, its wire formats) is tested next
//! to it (`vm.rs` for QEMU), not here.
//!
//! [`Capabilities`]: hearth_vmm::Capabilities

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use hearth_agent_client::AgentClient;
use hearth_vmm::{
    AfterSnapshot, JailRecord, MemoryBacking, SnapshotKind, SnapshotOptions, Vm, VmState, Vmm,
    VmmError,
};

use crate::common::{self, sh, Sandboxes};

/// Opens a new instance of the driver under test.
pub type Open = fn() -> Arc<dyn Vmm>;

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

/// Destroys `vm` and checks that nothing of it is left: its process, its
/// directory, any process naming it, its jail.
async fn destroy_and_check(vm: &dyn Vm) -> Result<()> {
    let (pid, dir) = (vm.pid(), vm.spec().dir.clone());
    let jail = vm.jail().cloned();
    vm.destroy().await?;
    assert_eq!(vm.state(), VmState::Destroyed);
    assert!(!common::alive(pid), "vmm {pid} still alive");
    assert!(
        !dir.exists(),
        "left behind in {}: {:?}",
        dir.display(),
        std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    assert_no_process_mentions(&dir)?;
    assert_jail_gone(jail.as_ref()).await
}

async fn assert_jail_gone(jail: Option<&JailRecord>) -> Result<()> {
    if let Some(j) = jail {
        let left = j.leftovers().await;
        ensure!(left.is_empty(), "jail slot {} left: {left:?}", j.slot);
    }
    Ok(())
}

/// No process on the host has `dir` in its command line.
fn assert_no_process_mentions(dir: &Path) -> Result<()> {
    let dir = dir.to_str().context("utf-8 dir")?;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd);
            ensure!(!cmd.contains(dir), "leftover process: {cmd}");
        }
    }
    Ok(())
}

/// Every file of `dir` with a fingerprint of its bytes: to show that a
/// snapshot was not touched.
fn dir_contents(dir: &Path) -> Result<BTreeMap<PathBuf, (u64, u64)>> {
    use std::hash::Hasher;
    use std::io::Read;
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.is_file() {
            continue;
        }
        // SipHash with fixed keys: the same bytes give the same value.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut f = std::fs::File::open(&path)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.write(&buf[..n]);
            len += n as u64;
        }
        out.insert(path, (len, h.finish()));
    }
    Ok(out)
}

/// Reads the counter file a background loop in the guest keeps bumping.
async fn counter(agent: &AgentClient, path: &str) -> Result<u64> {
    let out = sh(agent, &format!("cat {path}")).await?;
    Ok(out.trim().parse()?)
}

/// Starts a counter written to `path` every 0.1 s (aside, then renamed:
/// a snapshot never catches the file empty).
async fn start_counter(agent: &AgentClient, path: &str) -> Result<()> {
    agent
        .process_start(&hearth_agent_protocol::StartProcessRequest {
            command: format!(
                "i=0; while :; do i=$((i+1)); echo $i > {path}.t; mv {path}.t {path}; sleep 0.1; done"
            ),
            user: Some("root".into()),
            ..Default::default()
        })
        .await?;
    wait_counter(agent, path, 1).await?;
    Ok(())
}

/// Waits until the counter at `path` is above `above`.
async fn wait_counter(agent: &AgentClient, path: &str, above: u64) -> Result<u64> {
    hearth_test_support::wait_until(Duration::from_secs(60), "counter to grow", || async {
        counter(agent, path).await.ok().filter(|v| *v > above)
    })
    .await
}

/// The host's static busybox, else the one inside the minimal image.
fn static_busybox() -> Result<Vec<u8>> {
    if let Ok(b) = std::fs::read("/bin/busybox") {
        return Ok(b);
    }
    let out = tempfile::tempdir()?;
    let dst = out.path().join("busybox");
    let status = std::process::Command::new("debugfs")
        .arg("-R")
        .arg(format!("dump /bin/busybox {}", dst.display()))
        .arg(&common::artifacts().minimal)
        .stderr(std::process::Stdio::null())
        .status()?;
    ensure!(status.success(), "debugfs dump of busybox failed");
    Ok(std::fs::read(dst)?)
}

/// An initramfs whose `/init` is busybox sh printing a line and sleeping:
/// the guest runs, but no agent ever answers.
fn agentless_initrd(path: &Path) -> Result<()> {
    let busybox = static_busybox()?;
    let mut w = hearth_image::cpio::NewcWriter::new(std::fs::File::create(path)?);
    w.dir("bin", 0o755)?;
    w.dir("dev", 0o755)?;
    w.char_device("dev/console", 0o600, 5, 1)?;
    w.file("bin/busybox", 0o755, &busybox)?;
    w.symlink("bin/sh", "busybox")?;
    w.symlink("bin/sleep", "busybox")?;
    w.file(
        "init",
        0o755,
        b"#!/bin/sh\necho 'bogus-init: no agent in this guest' > /dev/console\nexec /bin/sleep 100000\n",
    )?;
    w.finish()?;
    Ok(())
}

/// A tmpfs of a few MiB, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// `None` when this process may not mount (not root).
    fn mount(at: &Path, size_mb: u64) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
