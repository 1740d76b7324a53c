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
            jail: JailConfig::default(),
        }
    }
}
