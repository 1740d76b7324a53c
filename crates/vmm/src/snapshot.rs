//! Snapshots in backend-neutral terms: their kinds, what happens to the
//! VM after one, what a driver reports of one ([`SnapshotSummary`]), and
//! the file helpers drivers write them with (sparse copies, durable
//! writes). What a snapshot directory holds is the driver's business (the
//! QEMU driver's is in `qemu::manifest`).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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

/// What a snapshot is, in the terms every driver shares: what
/// [`crate::Vmm::inspect_snapshot`] reports of a snapshot directory. How a
/// driver lays the snapshot out (files, VMM arguments) stays its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    pub kind: SnapshotKind,
    /// vCPUs of the VM it was taken of; a restore must ask for as many.
    pub vcpus: u32,
    /// Memory of the VM it was taken of; a restore must ask for as much.
    pub memory_mb: u32,
    /// Device state, plus guest memory for a [`SnapshotKind::Full`] one.
    pub state_bytes: u64,
    /// The RAM file of a [`SnapshotKind::Template`] one.
    pub memory_bytes: Option<u64>,
    /// Apparent size of the copy of the sandbox disk.
    pub disk_bytes: u64,
    pub created_at_ms: i64,
}

/// What [`crate::Vm::snapshot`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub dir: PathBuf,
    pub summary: SnapshotSummary,
    pub timings: SnapshotTimings,
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
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?
        };
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
}
