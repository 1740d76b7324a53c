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

mod clock;
mod lifecycle;
mod snapshots;

pub use clock::*;
pub use lifecycle::*;
pub use snapshots::*;

/// Opens a new instance of the driver under test.
pub type Open = fn() -> Arc<dyn Vmm>;

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
