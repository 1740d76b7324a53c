//! Backend-neutral virtual machine control for Hearth: the [`Vmm`] and [`Vm`]
//! traits, the [`VmSpec`] a sandbox VM is made from, and the QEMU driver.
//!
//! The trait is split in two, the way Cloud Hypervisor's `hypervisor` crate
//! splits `Hypervisor` from `Vm`: a [`Vmm`] is the driver (shared, one per
//! server: capabilities, boot, restore, re-adopt), and each call that starts
//! a machine hands back a [`Vm`] that owns exactly one running VMM process
//! (pause, resume, snapshot, destroy, agent channel). A lifecycle actor then
//! holds its own `Box<dyn Vm>` and never names the sandbox again on every
//! call, and a second driver (Firecracker) only implements the same two
//! traits.
//!
//! Nothing backend-specific crosses the seam: snapshots are described by
//! a [`SnapshotSummary`], console output by [`Vm::console_tail`], a full
//! disk by [`VmmError::NoSpace`], and [`open`] picks the driver the
//! config names ([`VmmConfig`]).
//!
//! Both traits are object safe (`Arc<dyn Vmm>`, `Box<dyn Vm>`): async methods
//! return a boxed [`VmmFuture`]. The allocation per call is noise next to a
//! VM operation, and it keeps the crate free of an `async-trait` macro.

pub mod backend;
pub mod error;
pub mod host;
pub mod jail;
pub mod qemu;
pub mod qmp;
pub mod snapshot;
pub mod spec;
pub mod tsc;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use hearth_agent_client::AgentClient;
use serde::{Deserialize, Serialize};

pub use backend::{open, Backend, VmmConfig};
pub use error::{BackendError, VmmError};
pub use host::{Accel, HostInfo};
pub use jail::policy::{Destination, Effect, EgressRule, Protocol};
pub use jail::{EgressPolicy, JailConfig, JailError, JailRecord};
pub use qemu::{AccelChoice, MachineKind, QemuConfig, QemuError, QemuVm, QemuVmm};
pub use snapshot::{
    AfterSnapshot, SnapshotInfo, SnapshotKind, SnapshotOptions, SnapshotSummary, SnapshotTimings,
};
pub use spec::{MemoryBacking, RunLayout, VmSpec};

/// What every async driver call returns: boxed so the traits stay object safe.
pub type VmmFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, VmmError>> + Send + 'a>>;

/// What a driver can do on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Driver name, e.g. `qemu` ([`Backend::as_str`]).
    pub backend: String,
    /// The accelerator VMs of this driver run on (what `hearth up` tells
    /// the user).
    pub accel: Accel,
    /// True when `accel` is KVM.
    pub kvm: bool,
    /// Template snapshots whose clones map the template's RAM file
    /// copy-on-write ([`SnapshotKind::Template`]).
    pub fast_clone: bool,
    /// Memory + device state snapshots ([`SnapshotKind::Full`]).
    pub full_snapshot: bool,
    /// Pause and resume of a running VM in memory.
    pub pause: bool,
    /// A new driver instance can take over a VM started by an earlier one.
    pub adopt: bool,
    /// Largest vCPU count a VM may have here.
    pub max_vcpus: u32,
    /// Memory available for new VMs when the driver was created, MiB.
    pub available_memory_mb: u64,
}

/// What a VM is doing, as far as its driver knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    Running,
    Paused,
    /// The VMM process exited (snapshot with [`AfterSnapshot::Exit`]);
    /// only `destroy` is left to do.
    Exited,
    Destroyed,
}

impl VmState {
    pub fn can_pause(self) -> bool {
        self == VmState::Running
    }
    pub fn can_resume(self) -> bool {
        self == VmState::Paused
    }
    pub fn can_snapshot(self) -> bool {
        matches!(self, VmState::Running | VmState::Paused)
    }
    pub fn is_live(self) -> bool {
        matches!(self, VmState::Running | VmState::Paused)
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Exited => "exited",
            VmState::Destroyed => "destroyed",
        })
    }
}

/// A VM driver: starts machines and takes over machines an earlier driver
/// instance started.
pub trait Vmm: Send + Sync + std::fmt::Debug {
    fn capabilities(&self) -> Capabilities;

    /// Cold boot: validates `spec` against the host, starts the VMM, waits
    /// for the agent and hands it its identity (`init`).
    fn boot(&self, spec: VmSpec) -> VmmFuture<'_, Box<dyn Vm>>;

    /// Starts a new VM from a snapshot directory written by [`Vm::snapshot`]
    /// (either kind), with `spec`'s id, directory and disk path, then hands
    /// the agent a fresh identity, clock and entropy. RAM is private to the
    /// VM unless `spec.memory` is `SharedFile`: then it lives in the VM's
    /// own file, and the VM can be snapshotted as a template (how a full
    /// snapshot becomes a fast-clone one, and how templates stack).
    /// Whatever the backend needs for that is the driver's business.
    fn restore<'a>(&'a self, snapshot: &'a Path, spec: VmSpec) -> VmmFuture<'a, Box<dyn Vm>>;

    /// Takes over a VM still running from its directory (after a server
    /// restart).
    fn adopt<'a>(&'a self, dir: &'a Path) -> VmmFuture<'a, Box<dyn Vm>>;

    /// Reads the snapshot in `dir` (written by [`Vm::snapshot`] of this
    /// driver) and checks that every file it needs is there and whole,
    /// without reading memory or disk contents: a restore of it can then
    /// fail only inside the VMM. [`VmmError::InspectSnapshot`] when it is
    /// missing, unreadable, incomplete or another driver's.
    fn inspect_snapshot(&self, dir: &Path) -> Result<SnapshotSummary, VmmError>;

    /// Whether `dir` holds a snapshot that was written whole (its own
    /// description is there and readable). Cheap, for deciding whether to
    /// use one; [`Vmm::inspect_snapshot`] checks its files too.
    fn snapshot_exists(&self, dir: &Path) -> bool;

    /// What a guest this driver boots here depends on besides its files
    /// and shape, as a short tag, when a snapshot of it restored where the
    /// tag differs would run wrong; `None` when nothing is. The QEMU driver
    /// under TCG: the TSC rate its guests are told, in MHz (`tsc2596`), for
    /// a restored guest keeps the rate it booted with. What a server
    /// writes of its own accord (built-in templates' snapshots) carries it
    /// in its identity, so one written for another rate is rebuilt, not
    /// cloned.
    fn guest_clock_tag(&self) -> Option<String> {
        None
    }
}

/// One running VM and the VMM process behind it.
pub trait Vm: Send + Sync + std::fmt::Debug {
    fn id(&self) -> &str;
    fn spec(&self) -> &VmSpec;
    /// Host pid of the VMM process.
    fn pid(&self) -> u32;
    fn state(&self) -> VmState;
    /// A client of the guest agent (cheap to clone; connects on demand).
    fn agent(&self) -> AgentClient;
    /// The jail the VMM process runs in (none: it runs unjailed).
    fn jail(&self) -> Option<&JailRecord>;

    fn pause(&self) -> VmmFuture<'_, ()>;
    fn resume(&self) -> VmmFuture<'_, ()>;
    /// Writes a snapshot into `dest` (created; must not hold one already).
    fn snapshot<'a>(&'a self, dest: &'a Path, opts: SnapshotOptions)
        -> VmmFuture<'a, SnapshotInfo>;
    /// Stops the VMM and removes every file and socket the VM had in its
    /// directory (and the directory when nothing else is left in it).
    fn destroy(&self) -> VmmFuture<'_, ()>;
    /// Puts `policy` in force on the running VM at once (none: everything
    /// the host's fixed rules leave). Never widens those rules.
    fn set_egress_policy<'a>(&'a self, policy: Option<&'a jail::EgressPolicy>)
        -> VmmFuture<'a, ()>;
    /// The last `max_lines` lines the guest wrote to its console (only the
    /// end of the log is read); empty when it wrote nothing or the log is
    /// gone. A VM that failed to start has no `Vm`: its error carries the
    /// tail instead ([`VmmError::console_tail`]).
    fn console_tail(&self, max_lines: usize) -> String;
    /// Resolves when the VMM process has exited (for whatever reason), with
    /// its exit status: how a supervisor learns that a VM died.
    fn exited(&self) -> Pin<Box<dyn Future<Output = String> + Send + '_>>;
}
