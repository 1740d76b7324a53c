//! A QEMU snapshot directory: `manifest.json` (kind, the spec and the
//! exact QEMU binary and arguments the VM ran with, since a restore must
//! start the identical device layout; file names and sizes; timings),
//! `state.bin` (the migration stream), `disk.ext4` (sparse copy of vdb),
//! and for templates `memory.ram`. Only this driver reads the manifest;
//! the rest of Hearth sees a [`SnapshotSummary`].

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::Accel;
use crate::snapshot::{SnapshotKind, SnapshotSummary, SnapshotTimings};
use crate::spec::VmSpec;

/// Version of the manifest layout.
pub(crate) const MANIFEST_FORMAT: u32 = 1;
pub(crate) const MANIFEST_FILE: &str = "manifest.json";
pub(crate) const STATE_FILE: &str = "state.bin";
pub(crate) const MEMORY_FILE: &str = "memory.ram";
pub(crate) const DISK_FILE: &str = "disk.ext4";

/// `manifest.json` of a snapshot directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnapshotManifest {
    pub(crate) format: u32,
    pub(crate) kind: SnapshotKind,
    /// Spec of the VM the snapshot was taken from.
    pub(crate) spec: VmSpec,
    /// The exact VMM arguments the VM ran with: a restore starts the same
    /// device layout with only paths (and the RAM backing) swapped.
    pub(crate) vmm_args: Vec<String>,
    pub(crate) vmm_binary: PathBuf,
    pub(crate) vmm_version: String,
    pub(crate) accel: Accel,
    pub(crate) state_file: String,
    pub(crate) state_bytes: u64,
    /// Template snapshots only.
    pub(crate) memory_file: Option<String>,
    pub(crate) memory_bytes: Option<u64>,
    pub(crate) disk_file: String,
    pub(crate) disk_bytes: u64,
    pub(crate) created_at_ms: i64,
    pub(crate) timings: SnapshotTimings,
}

impl SnapshotManifest {
    pub(crate) fn load(dir: &Path) -> io::Result<SnapshotManifest> {
        let bytes = std::fs::read(dir.join(MANIFEST_FILE))?;
        let m: SnapshotManifest = serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if m.format != MANIFEST_FORMAT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("manifest format {} (expected {MANIFEST_FORMAT})", m.format),
            ));
        }
        for name in [
            Some(&m.state_file),
            m.memory_file.as_ref(),
            Some(&m.disk_file),
        ]
        .into_iter()
        .flatten()
        {
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("file name {name:?} in manifest"),
                ));
            }
        }
        Ok(m)
    }

    /// Checks that every file the manifest names is there with its size:
    /// a truncated copy is refused before any VMM starts.
    pub(crate) fn check_files(&self, dir: &Path) -> io::Result<()> {
        let mut expect = vec![
            (&self.state_file, self.state_bytes),
            (&self.disk_file, self.disk_bytes),
        ];
        if let (Some(f), Some(n)) = (&self.memory_file, self.memory_bytes) {
            expect.push((f, n));
        }
        for (name, bytes) in expect {
            let path = dir.join(name);
            let len = std::fs::metadata(&path)?.len();
            if len != bytes {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is {len} bytes, the manifest says {bytes}",
                        path.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// [`Self::load`], then [`Self::check_files`].
    pub(crate) fn load_checked(dir: &Path) -> io::Result<SnapshotManifest> {
        let m = SnapshotManifest::load(dir)?;
        m.check_files(dir)?;
        Ok(m)
    }

    /// What the rest of Hearth may know of it.
    pub(crate) fn summary(&self) -> SnapshotSummary {
        SnapshotSummary {
            kind: self.kind,
            vcpus: self.spec.vcpus,
            memory_mb: self.spec.memory_mb,
            state_bytes: self.state_bytes,
            memory_bytes: self.memory_bytes,
            disk_bytes: self.disk_bytes,
            created_at_ms: self.created_at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::write_durable;

    #[test]
    fn manifest_checks_sizes_and_rejects_path_names() {
        let dir = tempfile::tempdir().unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let spec = VmSpec::new("a", dir.path(), &exe, &exe, &exe);
        let mut m = SnapshotManifest {
            format: MANIFEST_FORMAT,
            kind: SnapshotKind::Full,
            spec,
            vmm_args: vec![],
            vmm_binary: "qemu".into(),
            vmm_version: "7.2.0".into(),
            accel: Accel::Tcg,
            state_file: STATE_FILE.into(),
            state_bytes: 3,
            memory_file: None,
            memory_bytes: None,
            disk_file: DISK_FILE.into(),
            disk_bytes: 0,
            created_at_ms: 0,
            timings: SnapshotTimings::default(),
        };
        std::fs::write(dir.path().join(STATE_FILE), b"abc").unwrap();
        std::fs::write(dir.path().join(DISK_FILE), b"").unwrap();
        write_durable(
            &dir.path().join(MANIFEST_FILE),
            &serde_json::to_vec(&m).unwrap(),
        )
        .unwrap();
        let loaded = SnapshotManifest::load(dir.path()).unwrap();
        loaded.check_files(dir.path()).unwrap();
        let summary = SnapshotManifest::load_checked(dir.path())
            .unwrap()
            .summary();
        assert_eq!(
            (
                summary.kind,
                summary.vcpus,
                summary.memory_mb,
                summary.state_bytes
            ),
            (SnapshotKind::Full, 1, 256, 3)
        );

        std::fs::write(dir.path().join(STATE_FILE), b"ab").unwrap();
        let err = loaded.check_files(dir.path()).unwrap_err();
        assert!(err.to_string().contains("manifest says 3"), "{err}");
        assert!(SnapshotManifest::load_checked(dir.path()).is_err());

        m.state_file = "../etc/passwd".into();
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            serde_json::to_vec(&m).unwrap(),
        )
        .unwrap();
        assert!(SnapshotManifest::load(dir.path()).is_err());
    }
}
