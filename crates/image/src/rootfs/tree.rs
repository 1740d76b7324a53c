//! Laying files into a build tree: directories, files and executables with
//! exact modes (no umask), and clearing caches out of it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::ImageError;

/// Creates `path` and missing parents (0755), then gives `path` `mode`.
pub(super) fn mkdir(path: &Path, mode: u32) -> Result<(), ImageError> {
    fs::create_dir_all(path).map_err(ImageError::io(path))?;
    set_mode(path, mode)
}

pub(super) fn set_mode(path: &Path, mode: u32) -> Result<(), ImageError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(ImageError::io(path))
}

pub(super) fn copy_executable(src: &Path, dst: &Path) -> Result<(), ImageError> {
    fs::copy(src, dst).map_err(|source| ImageError::Copy {
        src: src.to_owned(),
        dst: dst.to_owned(),
        source,
    })?;
    set_mode(dst, 0o755)
}

pub(super) fn write(
    tree: &Path,
    relative: &str,
    contents: &str,
    mode: u32,
) -> Result<(), ImageError> {
    let path = tree.join(relative);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(ImageError::io(parent))?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(ImageError::io(&path))?;
    file.write_all(contents.as_bytes())
        .map_err(ImageError::io(&path))?;
    set_mode(&path, mode)
}

/// Writes a file that may exist as a symlink (resolv.conf often is), replacing
/// the link rather than following it out of the tree.
pub(super) fn replace(tree: &Path, relative: &str, contents: &str) -> Result<(), ImageError> {
    let path = tree.join(relative);
    match fs::symlink_metadata(&path) {
        Ok(meta) if !meta.is_file() => fs::remove_file(&path).map_err(ImageError::io(&path))?,
        _ => {}
    }
    write(tree, relative, contents, 0o644)
}

/// Removes the entries of `dir` whose names match `remove`.
pub(super) fn clear_dir(dir: &Path, remove: impl Fn(&str) -> bool) -> Result<(), ImageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ImageError::io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(ImageError::io(dir))?;
        let name = entry.file_name();
        if !remove(&name.to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        let result = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        result.map_err(ImageError::io(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn replace_swaps_a_symlink_for_a_file() {
        let tree = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("resolv.conf");
        fs::write(&target, "host\n").unwrap();
        fs::create_dir(tree.path().join("etc")).unwrap();
        symlink(&target, tree.path().join("etc/resolv.conf")).unwrap();
        replace(tree.path(), "etc/resolv.conf", "nameserver 10.0.2.3\n").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "host\n");
        assert_eq!(
            fs::read_to_string(tree.path().join("etc/resolv.conf")).unwrap(),
            "nameserver 10.0.2.3\n"
        );
    }
}
