//! Snapshot directories: what a snapshot holds (`manifest.json`, device and
//! memory state, a sparse copy of the sandbox disk, the RAM file of a
//! template), and the file helpers that write them durably.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::Accel;
use crate::spec::VmSpec;

/// Version of the manifest layout.
pub const MANIFEST_FORMAT: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
pub const STATE_FILE: &str = "state.bin";
pub const MEMORY_FILE: &str = "memory.ram";
pub const DISK_FILE: &str = "disk.ext4";

/// Which form a snapshot takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// Memory and device state in one file; restores with a private copy of
    /// RAM. Works for every VM.
    #[default]
    Full,
    /// Fast-clone form: the VM's shared RAM file plus a tiny device state
    /// file; clones map the RAM file copy-on-write. Needs a VM booted with
    /// [`crate::MemoryBacking::SharedFile`].
    Template,
}

/// What the VM does once the snapshot is on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterSnapshot {
    /// Keep running (or stay paused if it was paused).
    #[default]
    Continue,
    /// Exit the VMM (pause to disk): memory is freed, the disk stays.
    Exit,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotOptions {
    pub kind: SnapshotKind,
    pub then: AfterSnapshot,
}

impl SnapshotOptions {
    pub fn full() -> Self {
        SnapshotOptions::default()
    }
    pub fn template() -> Self {
        SnapshotOptions {
            kind: SnapshotKind::Template,
            then: AfterSnapshot::Continue,
        }
    }
    pub fn then(mut self, then: AfterSnapshot) -> Self {
        self.then = then;
        self
    }
}

/// How long each step of a snapshot took, milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTimings {
    pub sync_ms: u64,
    pub stop_ms: u64,
    pub migrate_ms: u64,
    pub copy_ms: u64,
    pub total_ms: u64,
}

/// `manifest.json` of a snapshot directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotManifest {
    pub format: u32,
    pub kind: SnapshotKind,
    /// Spec of the VM the snapshot was taken from.
    pub spec: VmSpec,
    /// The exact VMM arguments the VM ran with: a restore starts the same
    /// device layout with only paths (and the RAM backing) swapped.
    pub vmm_args: Vec<String>,
    pub vmm_binary: PathBuf,
    pub vmm_version: String,
    pub accel: Accel,
    pub state_file: String,
    pub state_bytes: u64,
    /// Template snapshots only.
    pub memory_file: Option<String>,
    pub memory_bytes: Option<u64>,
    pub disk_file: String,
    pub disk_bytes: u64,
    pub created_at_ms: i64,
    pub timings: SnapshotTimings,
}

impl SnapshotManifest {
    pub fn load(dir: &Path) -> io::Result<SnapshotManifest> {
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
    pub fn check_files(&self, dir: &Path) -> io::Result<()> {
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
}

/// What [`crate::Vm::snapshot`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub dir: PathBuf,
    pub manifest: SnapshotManifest,
}

/// Copies a disk keeping it sparse (reflink where the filesystem can, else
/// only the data extents); the image store's copy, so snapshots and sandbox
/// disks share one implementation. Returns the data bytes copied. Blocking:
/// call from `spawn_blocking`.
pub fn sparse_copy(src: &Path, dst: &Path) -> io::Result<u64> {
    hearth_image::sparse_copy(src, dst).map_err(io::Error::other)
}

/// fsyncs a directory so the names in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` through a temporary file, fsynced, then renamed.
pub fn write_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn sparse_copy_keeps_data_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        let mut f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&[7u8; 8192]).unwrap();
        f.seek(SeekFrom::Start(40 << 20)).unwrap();
        f.write_all(b"tail data").unwrap();
        f.sync_all().unwrap();
        drop(f);

        let copied = sparse_copy(&src, &dst).unwrap();
        assert!(copied >= 8192 + 9, "{copied}");
        assert!(copied < 1 << 20, "copied holes: {copied}");
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        let blocks = std::fs::metadata(&dst).unwrap().blocks();
        assert!(blocks * 512 < 4 << 20, "dst not sparse: {} blocks", blocks);
    }

    #[test]
    fn sparse_copy_of_all_hole_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        File::create(&src).unwrap().set_len(1 << 20).unwrap();
        let dst = dir.path().join("dst");
        assert_eq!(sparse_copy(&src, &dst).unwrap(), 0);
        assert_eq!(std::fs::metadata(&dst).unwrap().len(), 1 << 20);
    }

    #[test]
    fn manifest_rejects_path_names() {
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

        std::fs::write(dir.path().join(STATE_FILE), b"ab").unwrap();
        let err = loaded.check_files(dir.path()).unwrap_err();
        assert!(err.to_string().contains("manifest says 3"), "{err}");

        m.state_file = "../etc/passwd".into();
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            serde_json::to_vec(&m).unwrap(),
        )
        .unwrap();
        assert!(SnapshotManifest::load(dir.path()).is_err());
    }
}
