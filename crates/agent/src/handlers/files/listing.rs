//! Describing paths: the `FileEntry` of `stat`, the walk behind `list` and
//! the nested answer of `tree`, each bounded in entries.

use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use hearth_agent_protocol::{Base64Bytes, ErrorCode, FileEntry, FileType, TreeNode};

use super::{coded, display};
use crate::error::{HandlerError, HandlerResult};

/// Entries one `list`/`tree` answer may hold: a deep walk of `/` must not
/// grow the agent's memory without bound.
const MAX_ENTRIES: usize = 200_000;

pub(crate) fn file_type_of(meta: &Metadata) -> FileType {
    let ft = meta.file_type();
    if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_dir() {
        FileType::Dir
    } else if ft.is_file() {
        FileType::File
    } else {
        FileType::Other
    }
}

/// Describes `path` from its (lstat) metadata.
pub(crate) fn entry_for(path: &Path, meta: &Metadata) -> FileEntry {
    let file_type = file_type_of(meta);
    let symlink_target = (file_type == FileType::Symlink)
        .then(|| fs::read_link(path).ok().map(|t| display(&t)))
        .flatten();
    FileEntry {
        name: name_of(path),
        path: display(path),
        raw_path: path
            .to_str()
            .is_none()
            .then(|| Base64Bytes(path.as_os_str().as_bytes().to_vec())),
        file_type,
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        modified_at_ms: meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000,
        symlink_target,
    }
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| display(path))
}

pub(super) fn list_entries(root: &Path, depth: u32) -> HandlerResult<Vec<FileEntry>> {
    let meta = fs::metadata(root).map_err(|e| HandlerError::io(&e, root))?;
    if !meta.is_dir() {
        return Err(coded(ErrorCode::NotADirectory, root, "not a directory"));
    }
    let mut found = Vec::new();
    walk(root, depth, true, &mut found)?;
    found.sort_by(|(a, _), (b, _)| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    Ok(found.into_iter().map(|(_, e)| e).collect())
}

fn walk(
    dir: &Path,
    remaining: u32,
    top: bool,
    found: &mut Vec<(PathBuf, FileEntry)>,
) -> HandlerResult<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if top => return Err(HandlerError::io(&e, dir)),
        Err(e) => {
            // One unreadable subdirectory should not fail the whole listing.
            tracing::debug!(dir = %dir.display(), error = %e, "skipping unreadable directory");
            return Ok(());
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // Gone between readdir and lstat: nothing to report.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if found.len() >= MAX_ENTRIES {
            return Err(HandlerError::bad_request(format!(
                "more than {MAX_ENTRIES} entries; ask for a smaller depth"
            )));
        }
        found.push((path.clone(), entry_for(&path, &meta)));
        // lstat: a symlinked directory is reported, never entered.
        if meta.is_dir() && remaining > 1 {
            walk(&path, remaining - 1, false, found)?;
        }
    }
    Ok(())
}

pub(super) fn tree_node(
    path: &Path,
    meta: &Metadata,
    remaining: u32,
    count: &mut usize,
) -> HandlerResult<TreeNode> {
    *count += 1;
    if *count > MAX_ENTRIES {
        return Err(HandlerError::bad_request(format!(
            "more than {MAX_ENTRIES} entries; ask for a smaller depth"
        )));
    }
    let children = if meta.is_dir() && remaining > 0 {
        match fs::read_dir(path) {
            Ok(entries) => {
                let mut kids: Vec<(PathBuf, Metadata)> = entries
                    .flatten()
                    .filter_map(|e| {
                        let p = e.path();
                        fs::symlink_metadata(&p).ok().map(|m| (p, m))
                    })
                    .collect();
                kids.sort_by(|(a, _), (b, _)| {
                    a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes())
                });
                let mut nodes = Vec::with_capacity(kids.len());
                for (p, m) in kids {
                    nodes.push(tree_node(&p, &m, remaining - 1, count)?);
                }
                Some(nodes)
            }
            Err(e) if *count == 1 => return Err(HandlerError::io(&e, path)),
            Err(e) => {
                tracing::debug!(dir = %path.display(), error = %e, "skipping unreadable directory");
                None
            }
        }
    } else {
        None
    };
    Ok(TreeNode {
        name: name_of(path),
        path: display(path),
        file_type: file_type_of(meta),
        size: meta.len(),
        children,
    })
}
