//! The `[vmm.qemu]` table: which QEMU, which accelerator and machine,
//! deadlines, and the jail its processes run in.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::MachineKind;
use crate::jail::JailConfig;

/// Which accelerator to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccelChoice {
    /// KVM when usable ([`crate::host::kvm_usable`]), else TCG.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// Driver configuration (the `[vmm.qemu]` table of the server config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QemuConfig {
    /// `qemu-system-x86_64`, looked up on `PATH` unless absolute.
    pub binary: PathBuf,
    pub accel: AccelChoice,
    pub machine: MachineKind,
    /// Deadline of one QMP command, and of the QMP socket appearing.
    pub qmp_timeout_ms: u64,
    /// Deadline of a migration to or from a file.
    pub migrate_timeout_ms: u64,
    /// TCG translation cache size (QEMU's default is 1 GiB of address space).
    pub tcg_tb_size_mb: Option<u32>,
    /// Transparent huge pages for the VMM process (guest RAM, the
    /// translation cache). Off by default: every page a guest or the
    /// translator touches would cost 2 MiB instead of 4 KiB of host
    /// memory. On hosts with KVM and few, large VMs, turning it on speeds
    /// up guest memory access a little.
    pub transparent_huge_pages: bool,
    /// glibc's `MALLOC_ARENA_MAX` for the VMM process: how many heaps
    /// QEMU's threads allocate from (none: glibc's default, 8 per core).
    /// One by default: a thread's own arena held 2 MiB of an idle VM.
    pub malloc_arenas: Option<u32>,
    /// The jail each QEMU process runs in.
    pub jail: JailConfig,
}

impl Default for QemuConfig {
    fn default() -> Self {
        QemuConfig {
            binary: PathBuf::from("qemu-system-x86_64"),
            accel: AccelChoice::Auto,
            machine: MachineKind::Microvm,
            qmp_timeout_ms: 10_000,
            migrate_timeout_ms: 300_000,
            tcg_tb_size_mb: None,
            transparent_huge_pages: false,
            malloc_arenas: Some(1),
            jail: JailConfig::default(),
        }
    }
}
