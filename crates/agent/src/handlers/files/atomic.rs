//! Atomic writes: every write lands in a temp file next to its target and is
//! renamed over it, so readers never see half a file and a failed or
//! abandoned upload leaves the target exactly as it was.

use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use hearth_agent_protocol::{ErrorCode, WriteFileRequest, WriteResult};
use tokio::sync::mpsc;

use super::owner::{create_dirs, owner_in, NewOwner};
use super::{check_mode, coded, json_path, last_component};
use crate::error::{HandlerError, HandlerResult};

/// Mode of a new file when the request names none and nothing is replaced.
const DEFAULT_FILE_MODE: u32 = 0o644;
/// Mode of a directory created when the request names none.
pub(super) const DEFAULT_DIR_MODE: u32 = 0o755;
/// Writes of a raw upload are batched this large: few syscalls, no fsync
/// (the host calls `/v1/sync` before snapshots).
const RAW_WRITE_BUFFER: usize = 1024 * 1024;
/// Bytes of the target's name kept in a temp name, so the temp name stays
/// under the 255-byte limit of a file name.
const TEMP_NAME_KEEP: usize = 200;
/// Infix of temp file names; recognisable when a crash leaves one behind.
pub(crate) const TEMP_MARKER: &str = ".hearth-tmp-";

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub(super) fn write_one(
    req: &WriteFileRequest,
    user: Option<NewOwner>,
) -> HandlerResult<WriteResult> {
    let path = json_path(&req.path)?;
    let mode = check_mode(req.mode)?;
    let (pending, mut file) = PendingWrite::create(&path, mode, user)?;
    file.write_all(req.content.as_slice())
        .map_err(|e| HandlerError::io_op(&e, "write", &path))?;
    pending.commit(file)?;
    Ok(WriteResult {
        path: req.path.clone(),
        size_bytes: req.content.as_slice().len() as u64,
    })
}

/// A chunk of a raw upload, or the mark that the body ended normally. A
/// channel that closes without `End` means the upload was abandoned.
#[derive(Debug)]
pub(super) enum RawChunk {
    Data(Bytes),
    End,
}

pub(super) fn write_stream(
    pending: PendingWrite,
    file: File,
    mut rx: mpsc::Receiver<RawChunk>,
    path: &Path,
) -> HandlerResult<u64> {
    let mut out = BufWriter::with_capacity(RAW_WRITE_BUFFER, file);
    let mut total = 0u64;
    loop {
        match rx.blocking_recv() {
            Some(RawChunk::Data(data)) => {
                out.write_all(&data)
                    .map_err(|e| HandlerError::io_op(&e, "write", path))?;
                total += data.len() as u64;
            }
            Some(RawChunk::End) => break,
            None => {
                tracing::debug!(path = %path.display(), bytes = total, "raw upload abandoned");
                return Err(HandlerError::bad_request(
                    "upload ended before the body was complete",
                ));
            }
        }
    }
    let file = out
        .into_inner()
        .map_err(|e| HandlerError::io_op(e.error(), "write", path))?;
    pending.commit(file)?;
    Ok(total)
}

/// A temp file next to the target of a write; removed on drop unless the
/// write was committed by renaming it over the target.
#[derive(Debug)]
pub(super) struct PendingWrite {
    target: PathBuf,
    temp: PathBuf,
    mode: u32,
    owner: Option<(u32, u32)>,
    committed: bool,
}

impl PendingWrite {
    /// Creates parents and the temp file, and decides the final mode and
    /// owner: the replaced file's, if any; else `user`'s where that user
    /// could have written the file (see `owner`).
    pub(super) fn create(
        path: &Path,
        mode: Option<u32>,
        user: Option<NewOwner>,
    ) -> HandlerResult<(PendingWrite, File)> {
        let last = last_component(path);
        if last.is_empty()
            || last == b"."
            || last == b".."
            || path.as_os_str().as_bytes().ends_with(b"/")
        {
            return Err(coded(
                ErrorCode::InvalidPath,
                path,
                "names a directory, not a file",
            ));
        }
        let target = resolve_symlink(path);
        let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
            return Err(coded(
                ErrorCode::InvalidPath,
                path,
                "names a directory, not a file",
            ));
        };
        create_parents(parent, user)?;
        let existing = match fs::metadata(&target) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(HandlerError::io(&e, path)),
        };
        if existing.as_ref().is_some_and(Metadata::is_dir) {
            return Err(coded(ErrorCode::IsADirectory, path, "is a directory"));
        }
        let mode = mode
            .or(existing.as_ref().map(|m| m.mode() & 0o7777))
            .unwrap_or(DEFAULT_FILE_MODE);
        // Root replacing a user's file must not hand it to root.
        let owner = match &existing {
            Some(m) => running_as_root().then(|| (m.uid(), m.gid())),
            None => owner_in(user, parent),
        };
        let (temp, file) = create_temp(parent, name)?;
        Ok((
            PendingWrite {
                target,
                temp,
                mode,
                owner,
                committed: false,
            },
            file,
        ))
    }

    /// Applies owner and mode, then renames the temp file over the target.
    fn commit(mut self, file: File) -> HandlerResult<()> {
        if let Some((uid, gid)) = self.owner {
            // Before chmod: chown clears set-id bits.
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                .map_err(|e| HandlerError::io_op(&e, "chown", &self.target))?;
        }
        // fchmod is not subject to the umask, so the mode is exactly as asked.
        file.set_permissions(fs::Permissions::from_mode(self.mode))
            .map_err(|e| HandlerError::io_op(&e, "chmod", &self.target))?;
        drop(file);
        fs::rename(&self.temp, &self.target)
            .map_err(|e| HandlerError::io_op(&e, "replace", &self.target))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = fs::remove_file(&self.temp) {
                tracing::warn!(temp = %self.temp.display(), error = %e, "could not remove temp file");
            }
        }
    }
}

/// Writing through a symlink updates the file it points at, like `>` in a
/// shell; a dangling link is replaced by the new file.
fn resolve_symlink(path: &Path) -> PathBuf {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

/// `mkdir -p` for the parents of a file being written or renamed; each
/// directory made is `user`'s where that user could have made it.
pub(super) fn create_parents(dir: &Path, user: Option<NewOwner>) -> HandlerResult<()> {
    create_dirs(dir, DEFAULT_DIR_MODE, user)
}

fn create_temp(dir: &Path, name: &OsStr) -> HandlerResult<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let keep = &name.as_bytes()[..name.len().min(TEMP_NAME_KEEP)];
    for _ in 0..8 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let suffix = format!(
            "{TEMP_MARKER}{:x}-{:x}-{nanos:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut temp_name = Vec::with_capacity(1 + keep.len() + suffix.len());
        temp_name.push(b'.');
        temp_name.extend_from_slice(keep);
        temp_name.extend_from_slice(suffix.as_bytes());
        let temp = dir.join(OsStr::from_bytes(&temp_name));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
        {
            Ok(f) => return Ok((temp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(HandlerError::io_op(&e, "create temp file in", dir)),
        }
    }
    Err(HandlerError::internal("no free temp file name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        let (pending, _file) = PendingWrite::create(&target, None, None).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(pending);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(!target.exists());
    }
}
