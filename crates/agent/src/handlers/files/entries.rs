//! Changes to directory entries (mkdir, remove, rename) and the guard that
//! refuses to remove or rename `/` and the kernel filesystems.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use hearth_agent_protocol::paths::lexical_normalize;
use hearth_agent_protocol::{ErrorCode, FileEntry};

use super::atomic::{create_parents, DEFAULT_DIR_MODE};
use super::listing::entry_for;
use super::owner::{create_dirs, NewOwner};
use super::{coded, last_component};
use crate::error::{HandlerError, HandlerResult};

/// Paths no `..` spelling or symlinked parent may remove or rename.
const PROTECTED: [&str; 5] = ["/", "/proc", "/sys", "/dev", "/dev/pts"];

/// True when `path` is, lexically, one of the paths that must never be
/// removed, renamed or archived wholesale.
pub(crate) fn is_protected(path: &Path) -> bool {
    let normal = lexical_normalize(path);
    PROTECTED.iter().any(|p| normal == Path::new(p))
}

/// Refuses destructive operations on `/`, kernel filesystems, and paths
/// ending in `.` or `..` (like `rm` does): `/workspace/../..` is `/`, and
/// `/a/b/..` would empty `/a` before failing on the final rmdir.
fn refuse_protected(path: &Path, op: &str) -> HandlerResult<()> {
    let last = last_component(path);
    if last == b"." || last == b".." {
        return Err(HandlerError::bad_request(format!(
            "refusing to {op} a path ending in '.' or '..': {}",
            path.display()
        )));
    }
    if is_protected(path) {
        return Err(HandlerError::bad_request(format!(
            "refusing to {op} {}",
            lexical_normalize(path).display()
        )));
    }
    // A symlinked parent can also spell a protected path (`/rootlink/proc`).
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
        if let Ok(real_parent) = parent.canonicalize() {
            let real = real_parent.join(name);
            if is_protected(&real) {
                return Err(HandlerError::bad_request(format!(
                    "refusing to {op} {}",
                    real.display()
                )));
            }
        }
    }
    Ok(())
}
/// `mkdir -p`; each directory made is `user`'s where that user could have
/// made it.
pub(super) fn make_dir(
    path: &Path,
    mode: Option<u32>,
    user: Option<NewOwner>,
) -> HandlerResult<FileEntry> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            let meta = fs::symlink_metadata(path).map_err(|e| HandlerError::io(&e, path))?;
            return Ok(entry_for(path, &meta));
        }
        Ok(_) => {
            return Err(coded(
                ErrorCode::AlreadyExists,
                path,
                "exists and is not a directory",
            ))
        }
        Err(_) => {}
    }
    create_dirs(path, mode.unwrap_or(DEFAULT_DIR_MODE), user).map_err(|e| {
        if e.code == ErrorCode::NotADirectory {
            coded(
                ErrorCode::NotADirectory,
                path,
                "a parent is not a directory",
            )
        } else {
            e
        }
    })?;
    if let Some(m) = mode {
        // The builder's mode went through the umask; the caller asked for exact bits.
        fs::set_permissions(path, fs::Permissions::from_mode(m))
            .map_err(|e| HandlerError::io_op(&e, "chmod", path))?;
    }
    let meta = fs::symlink_metadata(path).map_err(|e| HandlerError::io(&e, path))?;
    Ok(entry_for(path, &meta))
}

pub(super) fn remove_path(path: &Path, recursive: bool) -> HandlerResult<()> {
    refuse_protected(path, "remove")?;
    let meta = fs::symlink_metadata(path).map_err(|e| HandlerError::io(&e, path))?;
    let result = if meta.is_dir() {
        if recursive {
            fs::remove_dir_all(path)
        } else {
            fs::remove_dir(path)
        }
    } else {
        fs::remove_file(path)
    };
    result.map_err(|e| HandlerError::io_op(&e, "remove", path))
}

pub(super) fn rename_path(
    from: &Path,
    to: &Path,
    user: Option<NewOwner>,
) -> HandlerResult<FileEntry> {
    refuse_protected(from, "rename")?;
    refuse_protected(to, "replace")?;
    fs::symlink_metadata(from).map_err(|e| HandlerError::io(&e, from))?;
    if let Some(parent) = to.parent() {
        create_parents(parent, user)?;
    }
    fs::rename(from, to)
        .map_err(|e| HandlerError::io_op(&e, &format!("rename {} to", from.display()), to))?;
    let meta = fs::symlink_metadata(to).map_err(|e| HandlerError::io(&e, to))?;
    Ok(entry_for(to, &meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_spellings_are_refused() {
        for p in [
            "/",
            "/workspace/../..",
            "/tmp/..",
            "/proc",
            "/dev/./pts",
            "/a/..",
        ] {
            let err = refuse_protected(Path::new(p), "remove").unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest, "{p}");
        }
        assert!(refuse_protected(Path::new("/tmp/x"), "remove").is_ok());
    }
}
