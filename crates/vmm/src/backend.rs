//! Choosing a driver: the `[vmm]` table of the server config names a
//! backend, and [`open`] is the one place that turns it into a driver, so
//! the server and the CLI never name one.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::qemu::{QemuConfig, QemuVmm};
use crate::{Vmm, VmmError};

/// The VMM a server runs its sandboxes on. An unknown name in the config
/// fails to parse, naming the ones there are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// `qemu-system-x86_64`, on KVM when usable, else TCG: runs anywhere.
    #[default]
    Qemu,
}

impl Backend {
    /// Every backend this build has.
    pub const ALL: &'static [Backend] = &[Backend::Qemu];

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Qemu => "qemu",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[vmm]` table of the server config: which backend, and each
/// backend's own table (`[vmm.qemu]`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmmConfig {
    pub backend: Backend,
    pub qemu: QemuConfig,
}

/// The driver `config` names, ready to start VMs (what it can do on this
/// host is in its [`crate::Capabilities`]). A backend that cannot run here
/// at all fails; QEMU always opens (it falls back to TCG, and a jail it
/// cannot build fails each start, saying why).
pub fn open(config: &VmmConfig) -> Result<Arc<dyn Vmm>, VmmError> {
    match config.backend {
        Backend::Qemu => Ok(Arc::new(QemuVmm::new(config.qemu.clone()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_defaults_to_qemu_and_unknown_ones_name_the_valid() {
        let c: VmmConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.backend, Backend::Qemu);
        let c: VmmConfig = serde_json::from_str(r#"{"backend": "qemu"}"#).unwrap();
        assert_eq!(c.backend, Backend::Qemu);
        let err = serde_json::from_str::<VmmConfig>(r#"{"backend": "firecracker"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `firecracker`"), "{err}");
        for b in Backend::ALL {
            assert!(err.contains(&format!("`{b}`")), "{err}");
        }
    }

    #[test]
    fn open_gives_the_named_driver() {
        let vmm = open(&VmmConfig::default()).unwrap();
        let caps = vmm.capabilities();
        assert_eq!(caps.backend, Backend::Qemu.as_str());
        assert_eq!(caps.kvm, caps.accel == crate::Accel::Kvm);
    }
}
