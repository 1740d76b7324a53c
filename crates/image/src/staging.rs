//! Build directories under `<data>/tmp/`: each build works in its own
//! directory, moves finished artifacts out, and the directory is deleted when
//! the build ends, whether it succeeded or not. A build holds a lock on its
//! directory, so directories left behind by a crashed process can be told
//! apart from live ones and reaped.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};

use crate::error::ImageError;

const LOCK_NAME: &str = ".hearth-build.lock";
/// A directory without a lock file is only taken for stale after this long,
/// so one being created right now is left alone.
const UNLOCKED_GRACE: Duration = Duration::from_secs(300);

/// A build directory that is removed on drop.
#[derive(Debug)]
pub(crate) struct Staging {
    path: PathBuf,
    /// Held for the directory's lifetime; `None` only in tests.
    lock: Option<Flock<File>>,
}

impl Staging {
    /// Creates `<tmp_root>/<prefix>-<unique>/` and locks it.
    pub(crate) fn new(tmp_root: &Path, prefix: &str) -> Result<Self, ImageError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        fs::create_dir_all(tmp_root).map_err(ImageError::io(tmp_root))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let unique = format!(
            "{prefix}-{}-{nanos:08x}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = tmp_root.join(unique);
        fs::create_dir(&path).map_err(ImageError::io(&path))?;
        let lock_path = path.join(LOCK_NAME);
        let file = File::create(&lock_path).map_err(ImageError::io(&lock_path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            ImageError::Io {
                path: lock_path.clone(),
                source: errno.into(),
            }
        })?;
        Ok(Self {
            path,
            lock: Some(lock),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Leaves the directory behind unlocked, as a crashed builder would.
    #[cfg(test)]
    fn abandon(mut self) -> PathBuf {
        self.lock = None;
        std::mem::take(&mut self.path)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.lock.is_none() {
            return;
        }
        if let Err(e) = remove_tree(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove build directory");
        }
    }
}

/// The directory under `tmp/` holding artifact locks; never reaped.
pub(crate) const LOCKS_DIR: &str = "locks";

/// Removes build directories under `tmp_root` whose builder is gone.
pub(crate) fn reap_stale(tmp_root: &Path) {
    let Ok(entries) = fs::read_dir(tmp_root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name() == LOCKS_DIR {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() {
            let _ = fs::remove_file(&path);
            continue;
        }
        let stale = match OpenOptions::new().read(true).open(path.join(LOCK_NAME)) {
            Ok(file) => Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok(),
            Err(_) => meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > UNLOCKED_GRACE),
        };
        if stale {
            tracing::info!(path = %path.display(), "removing stale build directory");
            if let Err(e) = remove_tree(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove stale build directory");
            }
        }
    }
}

/// Deletes a directory tree without ever leaving its filesystem: anything
/// mounted below it (debootstrap mounts /proc and /sys into its target and
/// may be killed before it unmounts them) is detached first, and a directory
/// on another device is refused rather than descended into.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    detach_mounts_below(path);
    remove_on_device(path, meta.dev())
}

fn remove_on_device(dir: &Path, dev: u64) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            if meta.dev() != dev {
                return Err(io::Error::other(format!(
                    "{} is on another filesystem; not removing it",
                    path.display()
                )));
            }
            remove_on_device(&path, dev)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    fs::remove_dir(dir)
}

fn detach_mounts_below(path: &Path) {
    let Ok(root) = path.canonicalize() else {
        return;
    };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut below: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(&root) && p != &root)
        .collect();
    // Deepest first, so nested mounts come off before their parents.
    below.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for mount in below {
        tracing::warn!(mount = %mount.display(), "detaching leftover mount in build directory");
        let _ = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Ok(v) = u8::from_str_radix(&raw[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Holds an exclusive lock on `<locks>/<name>.lock` until dropped, so that two
/// builders of the same artifact (threads or processes) take turns.
pub(crate) fn lock_artifact(locks_dir: &Path, name: &str) -> Result<Flock<File>, ImageError> {
    fs::create_dir_all(locks_dir).map_err(ImageError::io(locks_dir))?;
    let path = locks_dir.join(format!("{name}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(ImageError::io(&path))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| ImageError::Io {
        path,
        source: errno.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_directory_is_removed_on_drop() {
        let root = tempfile::tempdir().unwrap();
        let staging = Staging::new(root.path(), "t").unwrap();
        let path = staging.path().to_path_buf();
        fs::create_dir_all(staging.join("a/b")).unwrap();
        fs::write(staging.join("a/b/file"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", staging.join("a/link")).unwrap();
        drop(staging);
        assert!(!path.exists());
        assert!(Path::new("/etc").exists(), "symlink target untouched");
    }

    #[test]
    fn reaping_spares_live_builds_and_removes_dead_ones() {
        let root = tempfile::tempdir().unwrap();
        let live = Staging::new(root.path(), "live").unwrap();
        let dead = Staging::new(root.path(), "dead").unwrap();
        let dead_path = dead.abandon();
        assert!(dead_path.exists());
        reap_stale(root.path());
        assert!(live.path().exists());
        assert!(!dead_path.exists());
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
