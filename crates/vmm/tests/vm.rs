//! Real QEMU VMs (TCG here) on the `minimal` image.

mod common;

use std::sync::Arc;

use common::{sh, Sandboxes};
use hearth_vmm::{AfterSnapshot, MemoryBacking, SnapshotKind, SnapshotOptions, VmState, Vmm};

#[tokio::test]
async fn boot_minimal_and_exec_echo() -> anyhow::Result<()> {
    let _serial = common::serial().await;
    let sb = Sandboxes::new();
    let vmm: Arc<dyn Vmm> = Arc::new(common::driver());
    let started = std::time::Instant::now();
    let vm = vmm.boot(sb.spec("boot1")).await?;
    sb.track(vm.pid());
    eprintln!("booted to agent in {:?}", started.elapsed());
    assert_eq!(vm.state(), VmState::Running);
    let out = sh(&vm.agent(), "echo hello from the guest").await?;
    assert_eq!(out, "hello from the guest\n");
    let health = vm.agent().health().await?;
    assert!(health.pid1);
    assert_eq!(health.sandbox_id.as_deref(), Some("boot1"));
    assert_eq!(sh(&vm.agent(), "hostname").await?.trim(), "boot1");
    // vda is the read-only base, vdb the sandbox disk.
    assert_eq!(
        sh(&vm.agent(), "cat /sys/block/vda/ro /sys/block/vdb/ro").await?,
        "1\n0\n"
    );
    vm.destroy().await?;
    assert_eq!(vm.state(), VmState::Destroyed);
    Ok(())
}

/// Reads the counter file a background loop in the guest keeps bumping.
async fn counter(agent: &hearth_agent_client::AgentClient, path: &str) -> anyhow::Result<u64> {
    let out = sh(agent, &format!("cat {path}")).await?;
    Ok(out.trim().parse()?)
}

/// Starts a counter written to `PATH` every 0.1 s (aside, then renamed:
/// a snapshot never catches the file empty).
async fn start_counter(agent: &hearth_agent_client::AgentClient, path: &str) -> anyhow::Result<()> {
    agent
        .process_start(&hearth_agent_protocol::StartProcessRequest {
            command: format!(
                "i=0; while :; do i=$((i+1)); echo $i > {path}.t; mv {path}.t {path}; sleep 0.1; done"
            ),
            user: Some("root".into()),
            ..Default::default()
        })
        .await?;
    common_wait(agent, path, 1).await?;
    Ok(())
}

/// Waits until the counter at `path` is above `above`.
async fn common_wait(
    agent: &hearth_agent_client::AgentClient,
    path: &str,
    above: u64,
) -> anyhow::Result<u64> {
    hearth_test_support::wait_until(
        std::time::Duration::from_secs(60),
        "counter to grow",
        || async { counter(agent, path).await.ok().filter(|v| *v > above) },
    )
    .await
}

#[tokio::test]
async fn full_snapshot_restores_files_and_running_process() -> anyhow::Result<()> {
    let _serial = common::serial().await;
    let sb = Sandboxes::new();
    let vmm: Arc<dyn Vmm> = Arc::new(common::driver());
    let vm = vmm.boot(sb.spec("src")).await?;
    sb.track(vm.pid());
    let agent = vm.agent();
    sh(&agent, "echo before-snapshot > /workspace/note.txt").await?;
    // In memory only: /tmp survives only through the RAM snapshot.
    start_counter(&agent, "/tmp/count").await?;
    let snap = sb.path().join("snap1");
    let t = std::time::Instant::now();
    let info = vm.snapshot(&snap, SnapshotOptions::full()).await?;
    eprintln!("snapshot in {:?}: {:?}", t.elapsed(), info.timings);
    assert_eq!(vm.state(), VmState::Running);
    let at_snapshot = counter(&agent, "/tmp/count").await?;
    // The source keeps running after the snapshot.
    common_wait(&agent, "/tmp/count", at_snapshot).await?;
    vm.destroy().await?;

    let t = std::time::Instant::now();
    let restored = vmm.restore(&snap, sb.restore_spec("dst")).await?;
    sb.track(restored.pid());
    eprintln!("restore in {:?}", t.elapsed());
    let agent = restored.agent();
    assert_eq!(
        sh(&agent, "cat /workspace/note.txt").await?,
        "before-snapshot\n"
    );
    let first = counter(&agent, "/tmp/count").await?;
    assert!(first >= 1, "{first}");
    common_wait(&agent, "/tmp/count", first).await?;
    assert_eq!(agent.health().await?.sandbox_id.as_deref(), Some("dst"));
    restored.destroy().await?;
    Ok(())
}

#[tokio::test]
async fn fast_clones_from_template_answer_exec_and_differ() -> anyhow::Result<()> {
    let _serial = common::serial().await;
    let sb = Sandboxes::new();
    let vmm: Arc<dyn Vmm> = Arc::new(common::driver());
    let mut spec = sb.spec("tmpl");
    spec.memory = MemoryBacking::SharedFile;
    let vm = vmm.boot(spec).await?;
    sb.track(vm.pid());
    sh(&vm.agent(), "echo from-template > /workspace/t.txt").await?;
    let snap = sb.path().join("template");
    let info = vm
        .snapshot(&snap, SnapshotOptions::template().then(AfterSnapshot::Exit))
        .await?;
    assert_eq!(info.summary.kind, SnapshotKind::Template);
    assert!(
        info.summary.state_bytes < 4 << 20,
        "template state should be device state only: {}",
        info.summary.state_bytes
    );
    assert_eq!(vm.state(), VmState::Exited);
    eprintln!("template: {:?}", info.timings);
    vm.destroy().await?;
    let ram_before = std::fs::read(snap.join("memory.ram"))?;

    let mut clones = Vec::new();
    for id in ["clone-a", "clone-b"] {
        let t = std::time::Instant::now();
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
        randoms.push(sh(&a, "head -c16 /dev/urandom | od -x").await?);
    }
    assert_ne!(randoms[0], randoms[1]);
    for c in &clones {
        assert_eq!(
            sh(&c.agent(), "cat /workspace/own.txt").await?.trim(),
            c.id()
        );
    }
    for c in &clones {
        c.destroy().await?;
    }
    // Clones map the RAM file privately: the template is untouched.
    assert!(std::fs::read(snap.join("memory.ram"))? == ram_before);
    Ok(())
}

#[tokio::test]
async fn new_driver_instance_adopts_running_vm() -> anyhow::Result<()> {
    let _serial = common::serial().await;
    let sb = Sandboxes::new();
    let dir;
    let pid;
    {
        let first: Arc<dyn Vmm> = Arc::new(common::driver());
        let vm = first.boot(sb.spec("adoptee")).await?;
        sb.track(vm.pid());
        pid = vm.pid();
        dir = vm.spec().dir.clone();
        sh(&vm.agent(), "echo kept > /workspace/k.txt").await?;
        // The first driver goes away without destroying the VM (as when
        // the server process exits, its connections close).
        vm.agent().disconnect().await;
    }
    assert!(common::alive(pid));
    let second: Arc<dyn Vmm> = Arc::new(common::driver());
    let t = std::time::Instant::now();
    let vm = second.adopt(&dir).await?;
    assert_eq!(vm.pid(), pid);
    assert_eq!(vm.id(), "adoptee");
    assert_eq!(vm.state(), VmState::Running);
    assert_eq!(sh(&vm.agent(), "cat /workspace/k.txt").await?, "kept\n");
    eprintln!("adopted and exec answered in {:?}", t.elapsed());
    vm.pause().await?;
    vm.resume().await?;
    vm.destroy().await?;
    assert!(!common::alive(pid));
    assert!(!dir.exists());
    Ok(())
}

#[tokio::test]
async fn file_round_trip_through_the_agent() -> anyhow::Result<()> {
    let _serial = common::serial().await;
    let sb = Sandboxes::new();
    let vmm: Arc<dyn Vmm> = Arc::new(common::driver());
    let vm = vmm.boot(sb.spec("files")).await?;
    sb.track(vm.pid());
    let agent = vm.agent();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    agent
        .write_file(&hearth_agent_protocol::WriteFileRequest {
            path: "/workspace/blob.bin".into(),
            content: data.clone().into(),
            mode: None,
        })
        .await?;
    let back = agent.read_file_bytes("/workspace/blob.bin").await?;
    assert_eq!(back.as_ref(), &data[..]);
    let sum = sh(&agent, "md5sum /workspace/blob.bin | cut -d' ' -f1").await?;
    assert_eq!(sum.trim().len(), 32);
    vm.destroy().await?;
    Ok(())
}

#[tokio::test]
async fn pause_and_resume_keep_a_background_process() -> anyhow::Result<()> {
    let _serial = common::serial().await;
    let sb = Sandboxes::new();
    let vmm: Arc<dyn Vmm> = Arc::new(common::driver());
    let vm = vmm.boot(sb.spec("pauser")).await?;
    sb.track(vm.pid());
    let agent = vm.agent();
    start_counter(&agent, "/workspace/count").await?;
    vm.pause().await?;
    assert_eq!(vm.state(), VmState::Paused);
    // Misuse is a typed error, not a hang.
    let err = vm.pause().await.unwrap_err();
    assert!(
        matches!(err, hearth_vmm::VmmError::InvalidState { .. }),
        "{err}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    vm.resume().await?;
    assert_eq!(vm.state(), VmState::Running);
    let after = counter(&agent, "/workspace/count").await?;
    common_wait(&agent, "/workspace/count", after + 3).await?;
    vm.destroy().await?;
    Ok(())
}

#[tokio::test]
async fn destroy_leaves_no_process_socket_or_file() -> anyhow::Result<()> {
    let _serial = common::serial().await;
    let sb = Sandboxes::new();
    let vmm: Arc<dyn Vmm> = Arc::new(common::driver());
    let vm = vmm.boot(sb.spec("doomed")).await?;
    sb.track(vm.pid());
    let pid = vm.pid();
    let dir = vm.spec().dir.clone();
    for f in [
        "qmp.sock",
        "agent.sock",
        "vmm.pid",
        "console.log",
        "vm.json",
        "disk.ext4",
    ] {
        assert!(dir.join(f).exists(), "{f} missing while running");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("vmm.pid"))?.trim(),
        pid.to_string()
    );
    vm.destroy().await?;
    assert!(!common::alive(pid), "vmm {pid} still alive");
    assert!(
        !dir.exists(),
        "left behind: {:?}",
        std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    // No process of ours anywhere mentions the directory.
    for entry in std::fs::read_dir("/proc")?.flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd);
            assert!(
                !cmd.contains(dir.to_str().unwrap()),
                "leftover process: {cmd}"
            );
        }
    }
    // Destroy is idempotent; everything else is a typed error now.
    vm.destroy().await?;
    assert!(matches!(
        vm.resume().await,
        Err(hearth_vmm::VmmError::InvalidState { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn two_restores_of_one_snapshot_are_independent() -> anyhow::Result<()> {
    let _serial = common::serial().await;
    let sb = Sandboxes::new();
    let vmm: Arc<dyn Vmm> = Arc::new(common::driver());
    let vm = vmm.boot(sb.spec("origin")).await?;
    sb.track(vm.pid());
    sh(&vm.agent(), "echo shared > /workspace/s.txt").await?;
    let snap = sb.path().join("snap");
    vm.snapshot(&snap, SnapshotOptions::full().then(AfterSnapshot::Exit))
        .await?;
    assert_eq!(vm.state(), VmState::Exited);
    vm.destroy().await?;

    let a = vmm.restore(&snap, sb.restore_spec("fork-a")).await?;
    sb.track(a.pid());
    let b = vmm.restore(&snap, sb.restore_spec("fork-b")).await?;
    sb.track(b.pid());
    for vm in [&a, &b] {
        let agent = vm.agent();
        assert_eq!(sh(&agent, "cat /workspace/s.txt").await?, "shared\n");
        assert_eq!(sh(&agent, "hostname").await?.trim(), vm.id());
        sh(&agent, &format!("echo {} > /workspace/s.txt", vm.id())).await?;
    }
    assert_eq!(
        sh(&a.agent(), "cat /workspace/s.txt").await?.trim(),
        "fork-a"
    );
    assert_eq!(
        sh(&b.agent(), "cat /workspace/s.txt").await?.trim(),
        "fork-b"
    );
    let ra = sh(&a.agent(), "head -c16 /dev/urandom | od -x").await?;
    let rb = sh(&b.agent(), "head -c16 /dev/urandom | od -x").await?;
    assert_ne!(ra, rb, "clones share random state");
    a.destroy().await?;
    b.destroy().await?;
    Ok(())
}

#[tokio::test]
async fn corrupt_or_truncated_snapshot_is_a_typed_error_and_leaks_nothing() -> anyhow::Result<()> {
    let _serial = common::serial().await;
    let sb = Sandboxes::new();
    let vmm: Arc<dyn Vmm> = Arc::new(common::driver());
    let vm = vmm.boot(sb.spec("tobreak")).await?;
    sb.track(vm.pid());
    let snap = sb.path().join("snap");
    vm.snapshot(&snap, SnapshotOptions::full()).await?;
    vm.destroy().await?;
    let state = snap.join("state.bin");
    let len = std::fs::metadata(&state)?.len();

    // Truncated: refused before any VMM starts.
    std::fs::copy(&state, sb.path().join("state.orig"))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&state)?
        .set_len(len / 2)?;
    let spec = sb.restore_spec("broken1");
    let dir = spec.dir.clone();
    let err = vmm.restore(&snap, spec).await.unwrap_err();
    assert!(
        matches!(err, hearth_vmm::VmmError::Restore { .. }),
        "{err:?}"
    );
    assert!(err.chain().contains("manifest says"), "{}", err.chain());
    assert!(!dir.exists());

    // Same size, garbage inside: QEMU refuses the stream and exits.
    let mut bytes = std::fs::read(sb.path().join("state.orig"))?;
    for b in bytes.iter_mut().skip(64).take(4096) {
        *b ^= 0x5a;
    }
    std::fs::write(&state, &bytes)?;
    let spec = sb.restore_spec("broken2");
    let dir = spec.dir.clone();
    let err = vmm.restore(&snap, spec).await.unwrap_err();
    assert!(
        matches!(err, hearth_vmm::VmmError::Restore { .. }),
        "{err:?}"
    );
    let qemu_err = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<hearth_vmm::QemuError>())
        .expect("qemu error inside");
    assert!(
        matches!(qemu_err, hearth_vmm::QemuError::Exited { .. }),
        "{}",
        err.chain()
    );
    assert!(!dir.exists(), "restore left files behind");
    for entry in std::fs::read_dir("/proc")?.flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd);
            assert!(!cmd.contains(dir.to_str().unwrap()), "leaked: {cmd}");
        }
    }
    Ok(())
}

/// The host's static busybox, else the one inside the minimal image.
fn static_busybox() -> anyhow::Result<Vec<u8>> {
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
    anyhow::ensure!(status.success(), "debugfs dump of busybox failed");
    Ok(std::fs::read(dst)?)
}

/// An initramfs whose `/init` is busybox sh printing a line and sleeping: the
/// guest runs, but no agent ever answers.
fn agentless_initrd(path: &std::path::Path) -> anyhow::Result<()> {
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

#[tokio::test]
async fn agent_that_never_answers_fails_with_console_tail() -> anyhow::Result<()> {
    let _serial = common::serial().await;
    let sb = Sandboxes::new();
    let vmm: Arc<dyn Vmm> = Arc::new(common::driver());
    let mut spec = sb.spec("mute");
    let initrd = sb.path().join("agentless.cpio");
    agentless_initrd(&initrd)?;
    spec.initrd = initrd;
    spec.boot_timeout_ms = 20_000;
    let dir = spec.dir.clone();
    let t = std::time::Instant::now();
    let err = vmm.boot(spec).await.unwrap_err();
    let chain = err.chain();
    assert!(t.elapsed() < std::time::Duration::from_secs(60));
    assert!(matches!(err, hearth_vmm::VmmError::Boot { .. }), "{chain}");
    assert!(chain.contains("did not answer within"), "{chain}");
    assert!(
        chain.contains("bogus-init: no agent in this guest"),
        "{chain}"
    );
    // The disk was the caller's; everything the driver made is gone.
    assert!(dir.join("disk.ext4").exists());
    for f in ["qmp.sock", "agent.sock", "vmm.pid", "vm.json"] {
        assert!(!dir.join(f).exists(), "{f} left behind");
    }
    Ok(())
}

#[tokio::test]
async fn boot_debian_and_run_python() -> anyhow::Result<()> {
    let _serial = common::serial().await;
    let Some(debian) = common::debian_image() else {
        eprintln!("SKIP: no debian image built (HEARTH_TEST_BUILD_DEBIAN=1 builds it)");
        return Ok(());
    };
    let sb = Sandboxes::new();
    let vmm: Arc<dyn Vmm> = Arc::new(common::driver());
    let mut spec = sb.spec_on("deb", &debian);
    spec.memory_mb = 512;
    let vm = vmm.boot(spec).await?;
    sb.track(vm.pid());
    let r = vm
        .agent()
        .exec(&hearth_agent_protocol::ExecRequest {
            command: "python3 -c 'print(6*7)'".into(),
            timeout_ms: Some(60_000),
            ..Default::default()
        })
        .await?;
    assert_eq!(
        String::from_utf8_lossy(r.stdout.as_slice()),
        "42\n",
        "stderr: {:?}",
        String::from_utf8_lossy(r.stderr.as_slice())
    );
    vm.destroy().await?;
    Ok(())
}

#[tokio::test]
async fn oversized_spec_is_refused_before_anything_starts() -> anyhow::Result<()> {
    let sb = Sandboxes::new();
    let vmm: Arc<dyn Vmm> = Arc::new(common::driver());
    let mut spec = sb.spec("huge");
    spec.vcpus = vmm.capabilities().max_vcpus + 1;
    spec.memory_mb = 64 * 1024 * 1024;
    let err = vmm.boot(spec.clone()).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, hearth_vmm::VmmError::Resources { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("vcpus requested") && msg.contains("MiB memory requested"),
        "{msg}"
    );
    assert!(!spec.layout().pidfile.exists());
    assert!(!spec.layout().record.exists());
    Ok(())
}

#[tokio::test]
async fn pause_to_disk_then_restore_in_place() -> anyhow::Result<()> {
    let _serial = common::serial().await;
    let sb = Sandboxes::new();
    let vmm: Arc<dyn Vmm> = Arc::new(common::driver());
    let spec = sb.spec("sleeper");
    let vm = vmm.boot(spec.clone()).await?;
    sb.track(vm.pid());
    let pid = vm.pid();
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
    assert!(!spec.dir.join("qmp.sock").exists());
    drop(vm);

    // Same id, same directory: the snapshot's disk replaces the sandbox's.
    let vm = vmm.restore(&snap, spec.clone()).await?;
    sb.track(vm.pid());
    assert_eq!(
        sh(&vm.agent(), "cat /workspace/state /tmp/in-ram").await?,
        "1\nmem\n"
    );
    assert_eq!(vm.spec().dir, spec.dir);
    vm.destroy().await?;
    assert!(!spec.dir.exists());
    Ok(())
}

#[tokio::test]
async fn guest_poweroff_shows_as_exited_and_destroy_cleans_up() -> anyhow::Result<()> {
    let _serial = common::serial().await;
    let sb = Sandboxes::new();
    let vmm: Arc<dyn Vmm> = Arc::new(common::driver());
    let vm = vmm.boot(sb.spec("poweroff")).await?;
    sb.track(vm.pid());
    let dir = vm.spec().dir.clone();
    // The answer may or may not make it out before the power goes.
    let _ = vm
        .agent()
        .shutdown(&hearth_agent_protocol::ShutdownRequest { reboot: false })
        .await;
    hearth_test_support::wait_until(
        std::time::Duration::from_secs(60),
        "vmm to exit after guest poweroff",
        || async { (vm.state() == VmState::Exited).then_some(()) },
    )
    .await?;
    assert!(matches!(
        vm.pause().await,
        Err(hearth_vmm::VmmError::InvalidState {
            state: VmState::Exited,
            ..
        })
    ));
    vm.destroy().await?;
    assert!(!dir.exists());
    Ok(())
}

#[tokio::test]
async fn restores_with_shared_memory_become_templates_and_stack() -> anyhow::Result<()> {
    let _serial = common::serial().await;
    let sb = Sandboxes::new();
    let vmm: Arc<dyn Vmm> = Arc::new(common::driver());
    let vm = vmm.boot(sb.spec("src")).await?;
    sb.track(vm.pid());
    sh(&vm.agent(), "echo layer0 > /workspace/0.txt").await?;
    start_counter(&vm.agent(), "/tmp/count").await?;
    let full = sb.path().join("full");
    vm.snapshot(&full, SnapshotOptions::full()).await?;
    vm.destroy().await?;

    // A full snapshot restored into shared-file RAM, then written as a
    // template snapshot: the fast-clone form of it.
    let mut spec = sb.restore_spec("conv");
    spec.memory = MemoryBacking::SharedFile;
    let conv = vmm.restore(&full, spec).await?;
    sb.track(conv.pid());
    sh(&conv.agent(), "echo layer1 > /workspace/1.txt").await?;
    let t1 = sb.path().join("t1");
    let info = conv
        .snapshot(&t1, SnapshotOptions::template().then(AfterSnapshot::Exit))
        .await?;
    assert_eq!(info.summary.kind, SnapshotKind::Template);
    conv.destroy().await?;

    // A template goes one layer up by a restore straight into shared
    // memory (the driver takes whatever detour its VMM needs).
    let t1_ram = std::fs::read(t1.join("memory.ram"))?;
    let mut spec = sb.restore_spec("layer");
    spec.memory = MemoryBacking::SharedFile;
    let layer = vmm.restore(&t1, spec).await?;
    sb.track(layer.pid());
    sh(&layer.agent(), "echo layer2 > /workspace/2.txt").await?;
    let t2 = sb.path().join("t2");
    layer
        .snapshot(&t2, SnapshotOptions::template().then(AfterSnapshot::Exit))
        .await?;
    layer.destroy().await?;
    assert!(
        std::fs::read(t1.join("memory.ram"))? == t1_ram,
        "the lower template's RAM is untouched"
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
    common_wait(&a, "/tmp/count", first).await?;
    assert_eq!(sh(&a, "hostname").await?.trim(), "clone");
    clone.destroy().await?;
    Ok(())
}
