//! The QEMU driver: one `qemu-system-x86_64` per VM in its own session,
//! controlled over QMP, with its sockets, pidfile, logs and `vm.json` (the
//! spec and exact arguments) in the VM directory so a new driver instance
//! can re-adopt it. Snapshots migrate to a file QEMU receives over QMP
//! (`getfd` and an `fd:` URI): QEMU 7.2 has no `file:` URI, and an
//! `exec:cat` helper gets SIGTERM the moment QEMU closes its pipe.
//!
//! One file per concept: `config` and `error`, `boot` (and the launch
//! every start shares), `restore`, `adopt`, `snapshot` and `migration`,
//! `agent` (the first handshake), `vm` (a running VM and the `Vm` trait),
//! `record` (the VM directory's files), `args` (the command line),
//! `process` and `console`; `sealed_ram` (templates' RAM as clones map it).

mod adopt;
mod agent;
mod args;
mod boot;
mod config;
pub mod console;
mod error;
mod kernel_stub;
mod layout;
mod manifest;
mod migration;
mod process;
mod record;
mod restore;
mod sealed_ram;
mod snapshot;
mod vm;

use parking_lot::Mutex as SyncMutex;
use std::path::Path;
use std::time::Duration;

use hearth_agent_client::AgentClient;

pub use args::MachineKind;
pub use config::{AccelChoice, QemuConfig};
pub use error::QemuError;

use crate::host::{Accel, HostInfo};
use crate::jail::{JailError, JailHandle, Jailer};
use crate::qmp::QmpClient;
use crate::snapshot::SnapshotSummary;
use crate::spec::VmSpec;
use crate::{Capabilities, Vm, VmState, Vmm, VmmError, VmmFuture};
use error::io_err;
use layout::QemuLayout;
use manifest::SnapshotManifest;
use process::QemuProcess;
use record::VmRecord;

/// Lines of console log quoted in errors.
const CONSOLE_TAIL_LINES: usize = 25;

/// The QEMU driver.
#[derive(Debug)]
pub struct QemuVmm {
    config: QemuConfig,
    accel: Accel,
    /// The TSC rate (kHz) guests are told on their command line: the
    /// host's under TCG ([`crate::tsc`]); none under KVM, where the guest
    /// calibrates its own.
    guest_tsc_khz: Option<u32>,
    host: HostInfo,
    version: tokio::sync::OnceCell<String>,
    /// The jail builder, or why the jail config is unusable.
    jailer: Result<Jailer, String>,
    /// Templates' RAM as jailed clones map it.
    sealed_rams: std::sync::Arc<sealed_ram::SealedRams>,
}

impl QemuVmm {
    pub fn new(config: QemuConfig) -> QemuVmm {
        let host = HostInfo::probe();
        let accel = match config.accel {
            AccelChoice::Kvm => Accel::Kvm,
            AccelChoice::Tcg => Accel::Tcg,
            AccelChoice::Auto if host.kvm_usable => Accel::Kvm,
            AccelChoice::Auto => Accel::Tcg,
        };
        // Found once per process (~0.1 s when measured), here rather
        // than on the path of the first boot.
        let guest_tsc_khz = (accel == Accel::Tcg).then(crate::tsc::host_tsc_khz);
        tracing::info!(
            %accel,
            ?guest_tsc_khz,
            choice = ?config.accel,
            kvm_usable = host.kvm_usable,
            machine = ?config.machine,
            "qemu driver ready"
        );
        let jailer = Jailer::new(config.jail.clone()).map_err(|e| {
            tracing::error!(error = %e, "vm jail unusable: every VM start will fail");
            e.to_string()
        });
        QemuVmm {
            config,
            accel,
            guest_tsc_khz,
            host,
            version: tokio::sync::OnceCell::new(),
            jailer,
            sealed_rams: Default::default(),
        }
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    pub fn config(&self) -> &QemuConfig {
        &self.config
    }

    fn host_memory(&self) -> process::HostMemory {
        process::HostMemory {
            huge_pages: self.config.transparent_huge_pages,
            malloc_arenas: self.config.malloc_arenas,
        }
    }

    fn qmp_timeout(&self) -> Duration {
        Duration::from_millis(self.config.qmp_timeout_ms)
    }

    /// `qemu-system-x86_64 --version`, first line, cached.
    pub async fn version(&self) -> String {
        self.version
            .get_or_init(|| async {
                match tokio::process::Command::new(&self.config.binary)
                    .arg("--version")
                    .output()
                    .await
                {
                    Ok(o) => String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string(),
                    Err(e) => format!("unknown ({e})"),
                }
            })
            .await
            .clone()
    }

    /// The exact argument vector a cold boot of `spec` uses.
    pub fn boot_args(&self, spec: &VmSpec) -> Vec<String> {
        let mut a = args::build(
            spec,
            &QemuLayout::of(spec),
            self.accel,
            self.config.machine,
            self.config.tcg_tb_size_mb,
            self.guest_tsc_khz,
        );
        args::confine(
            &mut a,
            self.jailed(),
            self.config.jail.unfiltered_network_unjailed,
        );
        a
    }

    /// Whether VMs run jailed (and so may have a network).
    pub fn jailed(&self) -> bool {
        self.jailer.as_ref().is_ok_and(|j| j.enabled())
    }

    fn jailer(&self) -> Result<&Jailer, QemuError> {
        self.jailer
            .as_ref()
            .map_err(|e| QemuError::Jail(JailError::Config(e.clone())))
    }
}

/// One QEMU VM.
#[derive(Debug)]
pub struct QemuVm {
    spec: VmSpec,
    layout: QemuLayout,
    record: VmRecord,
    process: QemuProcess,
    qmp: tokio::sync::Mutex<Option<QmpClient>>,
    qmp_timeout: Duration,
    migrate_timeout: Duration,
    agent: AgentClient,
    state: SyncMutex<VmState>,
    /// Serializes lifecycle operations on this VM.
    op: tokio::sync::Mutex<()>,
    /// Released once the process is gone for good.
    jail: tokio::sync::Mutex<Option<JailHandle>>,
    /// Reads the serial console into its capped log.
    console: SyncMutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for QemuVm {
    /// A dropped handle (a server shutting down, a boot cut short) stops
    /// its console pump, so no task of ours writes into a VM directory
    /// that is being reaped; the next adopter starts its own.
    fn drop(&mut self) {
        if let Some(task) = self.console.get_mut().take() {
            task.abort();
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Vmm for QemuVmm {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: crate::Backend::Qemu.as_str().into(),
            accel: self.accel,
            kvm: self.accel == Accel::Kvm,
            fast_clone: true,
            full_snapshot: true,
            pause: true,
            adopt: true,
            max_vcpus: self.host.cpus,
            available_memory_mb: self.host.mem_available_mb,
        }
    }

    fn boot(&self, spec: VmSpec) -> VmmFuture<'_, Box<dyn Vm>> {
        Box::pin(async move { Ok(Box::new(self.boot_vm(spec).await?) as Box<dyn Vm>) })
    }

    fn restore<'a>(&'a self, snapshot: &'a Path, spec: VmSpec) -> VmmFuture<'a, Box<dyn Vm>> {
        Box::pin(async move { Ok(Box::new(self.restore_vm(snapshot, spec).await?) as Box<dyn Vm>) })
    }

    fn adopt<'a>(&'a self, dir: &'a Path) -> VmmFuture<'a, Box<dyn Vm>> {
        Box::pin(async move { Ok(Box::new(self.adopt_vm(dir).await?) as Box<dyn Vm>) })
    }

    fn inspect_snapshot(&self, dir: &Path) -> Result<SnapshotSummary, VmmError> {
        SnapshotManifest::load_checked(dir)
            .map(|m| m.summary())
            .map_err(|source| VmmError::InspectSnapshot {
                dir: dir.to_path_buf(),
                source: Box::new(source),
            })
    }

    fn snapshot_exists(&self, dir: &Path) -> bool {
        SnapshotManifest::load(dir).is_ok()
    }

    fn guest_clock_tag(&self) -> Option<String> {
        self.guest_tsc_khz
            .map(|khz| format!("tsc{}", crate::tsc::mhz(khz)))
    }
}
