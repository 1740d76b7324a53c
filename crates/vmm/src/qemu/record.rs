//! The files a VM keeps in its directory: `vm.json` (what a new driver
//! instance re-adopts from) and the run files cleared before a start and
//! after a stop.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::layout::QemuLayout;
use super::process;
use super::{io_err, QemuError};
use crate::host::Accel;
use crate::jail::JailRecord;
use crate::spec::{RunLayout, VmSpec};

/// Version of `vm.json`.
pub(super) const RECORD_FORMAT: u32 = 1;

/// `vm.json`: what a new driver instance needs to take a VM over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VmRecord {
    pub(super) format: u32,
    pub(super) spec: VmSpec,
    pub(super) binary: PathBuf,
    pub(super) args: Vec<String>,
    pub(super) pid: i32,
    pub(super) accel: Accel,
    pub(super) version: String,
    /// The driver made the disk (restores): destroy removes it wherever it is.
    pub(super) owns_disk: bool,
    pub(super) started_at_ms: i64,
    /// The VM's jail (absent: started unjailed, or by an older driver).
    #[serde(default)]
    pub(super) jail: Option<JailRecord>,
}

/// Creates the VM directory and clears what a dead VM left in it; refuses
/// a directory whose VMM still runs.
pub(super) fn prepare_dir(layout: &QemuLayout) -> Result<(), QemuError> {
    std::fs::create_dir_all(&layout.dir).map_err(io_err("create vm directory", &layout.dir))?;
    if let Ok(rec) = read_record(&layout.record) {
        if process::is_alive(rec.pid)
            && process::cmdline(rec.pid).is_some_and(|c| c.get(1..) == Some(&rec.args[..]))
        {
            return Err(QemuError::DirInUse {
                dir: layout.dir.clone(),
                pid: rec.pid,
            });
        }
    }
    for f in layout.run_files() {
        remove_if_exists(f);
    }
    Ok(())
}

pub(super) fn read_record(path: &Path) -> Result<VmRecord, QemuError> {
    let bytes = std::fs::read(path).map_err(io_err("read vm record", path))?;
    let rec: VmRecord = serde_json::from_slice(&bytes).map_err(|e| QemuError::BadRecord {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if rec.format != RECORD_FORMAT || rec.args.is_empty() {
        return Err(QemuError::BadRecord {
            path: path.to_path_buf(),
            reason: format!("format {} with {} args", rec.format, rec.args.len()),
        });
    }
    Ok(rec)
}

/// Replaces `path` atomically but without fsync: run files only need to
/// survive a crash of the driver process, never of the host (which takes
/// the VM with it).
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

pub(super) fn remove_if_exists(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "remove vm file");
        }
    }
}

pub(super) fn remove_disk_and_dir(layout: &RunLayout, disk: &Path, remove_disk: bool) {
    if remove_disk {
        remove_if_exists(disk);
    }
    // Only when empty: anything else in it is not ours.
    let _ = std::fs::remove_dir(&layout.dir);
}
