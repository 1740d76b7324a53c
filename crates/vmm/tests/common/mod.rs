//! Fixtures of the VM tests: guest artifacts (built through `hearth-image`
//! on first use, or named by `HEARTH_TEST_{KERNEL,INITRD,BASE}`), sandbox
//! disks, and a guard that kills a test's VMs even when the test panics.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use hearth_agent_client::AgentClient;
use hearth_agent_protocol::ExecRequest;
use hearth_image::{ImageStore, Recipe};
use hearth_vmm::{QemuConfig, QemuVmm, VmSpec};

/// Cold boot takes ~4 s under TCG on 2 cores; leave plenty of room.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, Clone)]
pub struct Artifacts {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub minimal: PathBuf,
}

pub fn data_dir() -> PathBuf {
    std::env::var_os("HEARTH_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data"))
}

/// Kernel, initramfs and the `minimal` base image (built once per process).
pub fn artifacts() -> &'static Artifacts {
    static A: OnceLock<Artifacts> = OnceLock::new();
    A.get_or_init(|| {
        let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
        if let (Some(kernel), Some(initrd), Some(minimal)) = (
            env("HEARTH_TEST_KERNEL"),
            env("HEARTH_TEST_INITRD"),
            env("HEARTH_TEST_BASE"),
        ) {
            return Artifacts {
                kernel,
                initrd,
                minimal,
            };
        }
        let store = ImageStore::new(data_dir());
        let agent = hearth_image::static_agent_binary().expect("static agent binary");
        let kernel = store.kernel().expect("guest kernel");
        let initrd = store.initramfs(&kernel, &agent).expect("initramfs");
        let minimal = store
            .rootfs(Recipe::Minimal, &agent)
            .expect("minimal rootfs");
        Artifacts {
            kernel: kernel.vmlinuz,
            initrd,
            minimal,
        }
    })
}

/// The `debian` base image when it was built already (building it takes
/// minutes and network; `HEARTH_TEST_BUILD_DEBIAN=1` builds it here).
pub fn debian_image() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HEARTH_TEST_DEBIAN_BASE") {
        return Some(PathBuf::from(p));
    }
    let store = ImageStore::new(data_dir());
    let build = std::env::var("HEARTH_TEST_BUILD_DEBIAN").is_ok_and(|v| v == "1");
    let agent = match hearth_image::static_agent_binary() {
        Ok(a) => a,
        Err(e) if build => panic!("static agent build failed: {e}"),
        Err(_) => return None,
    };
    if !build {
        // Only use it if present: find the newest image whose manifest says debian.
        let images = data_dir().join("images");
        let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(images)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "ext4"))
            .filter(|p| {
                store
                    .manifest(p)
                    .is_ok_and(|m| m.recipe.recipe == Recipe::Debian.name())
            })
            .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
            .collect();
        found.sort();
        return found.pop().map(|(_, p)| p);
    }
    // Asked to build it: a failure must fail the test, not skip it.
    Some(
        store
            .rootfs(Recipe::Debian, &agent)
            .expect("HEARTH_TEST_BUILD_DEBIAN=1 but the debian image build failed"),
    )
}

pub fn driver() -> QemuVmm {
    init_tracing();
    QemuVmm::new(QemuConfig::default())
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "hearth_vmm=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A sandboxes root for one test; VMs started under it are killed on drop.
pub struct Sandboxes {
    pub root: tempfile::TempDir,
    pids: Mutex<Vec<u32>>,
}

impl Sandboxes {
    pub fn new() -> Sandboxes {
        Sandboxes {
            root: tempfile::Builder::new()
                .prefix("hvm")
                .tempdir()
                .expect("temp dir"),
            pids: Mutex::new(Vec::new()),
        }
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }

    /// A spec on the minimal image with a fresh 256 MiB sandbox disk.
    pub fn spec(&self, id: &str) -> VmSpec {
        self.spec_on(id, &artifacts().minimal.clone())
    }

    pub fn spec_on(&self, id: &str, base: &Path) -> VmSpec {
        let a = artifacts();
        let mut spec = VmSpec::new(id, self.path(), &a.kernel, &a.initrd, base);
        spec.boot_timeout_ms = BOOT_TIMEOUT.as_millis() as u64;
        std::fs::create_dir_all(&spec.dir).expect("sandbox dir");
        hearth_image::create_sparse_ext4(&spec.disk, 256).expect("sandbox disk");
        spec
    }

    /// A spec with no disk created (for restores, which bring their own).
    pub fn restore_spec(&self, id: &str) -> VmSpec {
        let a = artifacts();
        let mut spec = VmSpec::new(id, self.path(), &a.kernel, &a.initrd, &a.minimal);
        spec.boot_timeout_ms = BOOT_TIMEOUT.as_millis() as u64;
        spec
    }

    pub fn track(&self, pid: u32) {
        self.pids.lock().expect("pid list lock").push(pid);
    }
}

impl Drop for Sandboxes {
    fn drop(&mut self) {
        for pid in self.pids.lock().expect("pid list lock").drain(..) {
            // Session leader: its pid is its process group.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Runs `sh -c command` in the guest as root; fails on a non-zero exit.
pub async fn sh(agent: &AgentClient, command: &str) -> Result<String> {
    let r = agent
        .exec(&ExecRequest {
            command: command.into(),
            user: Some("root".into()),
            timeout_ms: Some(60_000),
            ..Default::default()
        })
        .await
        .with_context(|| format!("exec {command:?}"))?;
    let out = String::from_utf8_lossy(r.stdout.as_slice()).into_owned();
    anyhow::ensure!(
        r.exit_code == 0,
        "{command:?} exited {}: stdout {out:?} stderr {:?}",
        r.exit_code,
        String::from_utf8_lossy(r.stderr.as_slice())
    );
    Ok(out)
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let i = s.rfind(')').unwrap_or(0);
            !matches!(s[i + 1..].trim_start().chars().next(), Some('Z' | 'X'))
        })
        .unwrap_or(false)
}

/// VM tests in one binary run one at a time even under plain `cargo test`
/// (nextest runs them in the `vm` group, one at a time, anyway).
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}
