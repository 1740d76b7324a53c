//! Old versions of a built-in template's snapshots go. Every new image or
//! agent (an upgrade, a rebuilt image) is a new version of `minimal` and
//! `default`, with template snapshots of its own (hundreds of MB per
//! shape); the old ones are never cloned again by a server that has
//! moved on. A version directory unused for [`RETENTION`] is removed when
//! a server first wants its template's current version (once per server
//! start and version).
//!
//! "Unused" is measured, not assumed: the image directory can be shared
//! by servers mid-upgrade, and one still on the old version keeps using
//! it. Each clone marks its version's directory ([`mark_used`]); building
//! a shape there touches it too. What a running, paused or snapshotted
//! sandbox needs is its own (a clone copies the template's disk and
//! carries its RAM into its own snapshots), so a sandbox of an old
//! version outlives the version's template snapshot.
//!
//! Custom templates' versions are the tenant's and stay.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{age, entries};

/// How long an unused built-in template version is kept.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The file whose modification time says when a version was last cloned.
const LAST_USED: &str = "last-used";

/// A use is marked at most this often (a burst of clones writes once).
const MARK_EVERY: Duration = Duration::from_secs(3600);

/// What a version directory is renamed to while it is removed, so no
/// reader takes a half-removed one for a version (and a crash's leftover
/// is known for what it is).
const PRUNING: &str = ".pruning-";

/// Marks the template version directory `version_dir` used now.
pub(super) fn mark_used(version_dir: &Path) {
    let marker = version_dir.join(LAST_USED);
    if age(&marker).is_some_and(|a| a < MARK_EVERY) {
        return;
    }
    let now = SystemTime::now();
    let res = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&marker)
        .and_then(|f| f.set_modified(now));
    if let Err(e) = res {
        tracing::debug!(dir = %version_dir.display(), error = %e, "mark a template version used");
    }
}

/// When `version_dir` was last used: the newest of its marker's, its own
/// and its shapes' modification times (a shape written or being written
/// counts).
fn last_used(version_dir: &Path) -> Option<SystemTime> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let shapes = entries(version_dir)
        .into_iter()
        .filter_map(|e| modified(&e.path()));
    modified(version_dir)
        .into_iter()
        .chain(modified(&version_dir.join(LAST_USED)))
        .chain(shapes)
        .max()
}

/// Removes the versions in `template_dir` (`<templates>/<id>`) other than
/// `current` that were last used more than `retention` before `now`, and
/// the leftovers of removals a crash cut short; the names removed.
pub(super) fn prune_versions(
    template_dir: &Path,
    current: &str,
    retention: Duration,
    now: SystemTime,
) -> Vec<String> {
    let mut removed = Vec::new();
    for e in entries(template_dir) {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if name == current || !path.is_dir() {
            continue;
        }
        if name.contains(PRUNING) {
            // A removal a crash cut short.
            let _ = std::fs::remove_dir_all(&path);
            continue;
        }
        let unused_for = last_used(&path).and_then(|t| now.duration_since(t).ok());
        if unused_for.is_none_or(|d| d <= retention) {
            continue;
        }
        let doomed = template_dir.join(format!(".{name}{PRUNING}{}", std::process::id()));
        // The rename is the removal as far as readers go; it fails only
        // when another server is removing it too.
        if std::fs::rename(&path, &doomed).is_err() {
            continue;
        }
        match std::fs::remove_dir_all(&doomed) {
            Ok(()) => removed.push(name),
            Err(e) => {
                tracing::warn!(dir = %doomed.display(), error = %e, "remove an old template version")
            }
        }
    }
    removed.sort();
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version directory with one shape, last touched `age` ago.
    fn version(root: &Path, name: &str, age: Duration) -> std::path::PathBuf {
        let dir = root.join(name);
        let shape = dir.join("1c-256m-512d");
        std::fs::create_dir_all(&shape).unwrap();
        std::fs::write(shape.join("memory.ram"), b"ram").unwrap();
        let then = SystemTime::now() - age;
        for p in [&shape, &dir] {
            std::fs::File::open(p).unwrap().set_modified(then).unwrap();
        }
        dir
    }

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn only_old_unused_versions_other_than_the_current_go() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        version(root, "current", 30 * DAY);
        version(root, "old", 8 * DAY);
        version(root, "recent", DAY);
        // Old on disk, but a server still clones it.
        let used = version(root, "old-but-used", 30 * DAY);
        mark_used(&used);
        // A shape being written under an old version counts as use.
        let building = version(root, "old-but-building", 30 * DAY);
        std::fs::create_dir(building.join("1c-1024m-3072d.partial-7")).unwrap();
        // A removal a crash cut short.
        version(root, &format!(".gone{PRUNING}1"), DAY);

        let removed = prune_versions(root, "current", RETENTION, SystemTime::now());
        assert_eq!(removed, ["old"]);
        let mut left: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["current", "old-but-building", "old-but-used", "recent"]
        );
    }

    #[test]
    fn a_use_is_marked_once_an_hour() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = version(tmp.path(), "v", 30 * DAY);
        mark_used(&dir);
        let marker = dir.join(LAST_USED);
        let first = std::fs::metadata(&marker).unwrap().modified().unwrap();
        assert!(first.elapsed().unwrap() < Duration::from_secs(60));
        // An hour-old mark is renewed; a fresh one is left alone.
        let hour_ago = SystemTime::now() - MARK_EVERY - Duration::from_secs(1);
        std::fs::File::open(&marker)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        mark_used(&dir);
        let renewed = std::fs::metadata(&marker).unwrap().modified().unwrap();
        assert!(renewed > hour_ago + Duration::from_secs(60));
        let minute_ago = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::open(&marker)
            .unwrap()
            .set_modified(minute_ago)
            .unwrap();
        mark_used(&dir);
        assert_eq!(
            std::fs::metadata(&marker).unwrap().modified().unwrap(),
            minute_ago
        );
    }
}
