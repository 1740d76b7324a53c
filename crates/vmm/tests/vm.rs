//! What only the QEMU driver has, on real QEMU VMs (TCG here): its files
//! in the VM directory, the exact arguments a snapshot records, its
//! migration stream. What every driver must do is the conformance suite
//! (`conformance/`, run on QEMU by `qemu_conformance.rs`).

mod common;

use std::sync::Arc;

use common::Sandboxes;
use hearth_vmm::{AfterSnapshot, SnapshotOptions, Vmm};

/// The `args` array of a QEMU `vm.json` or `manifest.json`.
fn recorded_args(file: &std::path::Path, key: &str) -> anyhow::Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(file)?)?;
    Ok(serde_json::from_value(v[key].clone())?)
}

#[tokio::test]
async fn qemu_keeps_its_files_and_exact_arguments_in_the_vm_directory() -> anyhow::Result<()> {
    let _serial = common::serial().await;
    let sb = Sandboxes::new();
    let vmm = common::driver();
    let vm = vmm.boot_vm(sb.spec("files")).await?;
    sb.track(vm.pid());
    let dir = vm.spec().dir.clone();
    for f in [
        "qmp.sock",
        "agent.sock",
        "console.sock",
        "vmm.pid",
        "console.log",
        "vmm.log",
        "vm.json",
        "disk.ext4",
    ] {
        assert!(dir.join(f).exists(), "{f} missing while running");
    }
    // vm.json holds the arguments QEMU runs with (what adopt checks).
    let args = recorded_args(&dir.join("vm.json"), "args")?;
    assert_eq!(args, vm.vmm_args());
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", vm.pid()))?;
    let running: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .skip(1)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert_eq!(running, args);
    // A snapshot records them too: a restore must start the same devices.
    let snap = sb.path().join("snap");
    vm.snapshot(&snap, SnapshotOptions::full().then(AfterSnapshot::Exit))
        .await?;
    assert_eq!(
        recorded_args(&snap.join("manifest.json"), "vmm_args")?,
        args
    );
    for f in ["state.bin", "disk.ext4"] {
        assert!(snap.join(f).is_file(), "{f} missing from the snapshot");
    }
    // Exited: QEMU's sockets and record are gone, the disk stays.
    for f in [
        "qmp.sock",
        "agent.sock",
        "console.sock",
        "vm.json",
        "vmm.pid",
    ] {
        assert!(!dir.join(f).exists(), "{f} left after exit");
    }
    assert!(dir.join("disk.ext4").exists());
    vm.destroy().await?;
    assert!(!dir.exists());
    Ok(())
}

#[tokio::test]
async fn a_corrupt_migration_stream_makes_qemu_exit_and_leaks_nothing() -> anyhow::Result<()> {
    let _serial = common::serial().await;
    let sb = Sandboxes::new();
    let vmm: Arc<dyn Vmm> = Arc::new(common::driver());
    let vm = vmm.boot(sb.spec("tobreak")).await?;
    sb.track(vm.pid());
    let snap = sb.path().join("snap");
    vm.snapshot(&snap, SnapshotOptions::full()).await?;
    vm.destroy().await?;

    // Same size, garbage inside: every file checks out, QEMU refuses the
    // stream and exits.
    let state = snap.join("state.bin");
    let mut bytes = std::fs::read(&state)?;
    for b in bytes.iter_mut().skip(64).take(4096) {
        *b ^= 0x5a;
    }
    std::fs::write(&state, &bytes)?;
    vmm.inspect_snapshot(&snap)?;
    let spec = sb.restore_spec("broken");
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
    assert!(err.console_tail().is_some(), "{}", err.chain());
    assert!(!dir.exists(), "restore left files behind");
    for entry in std::fs::read_dir("/proc")?.flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd);
            assert!(!cmd.contains(dir.to_str().unwrap()), "leaked: {cmd}");
        }
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
