//! Who owns what the file API creates. The agent runs as root, but commands
//! run as the sandbox's default user (`sandbox`), so a file written through
//! the API into `/workspace/app/` must be that user's: otherwise the next
//! `npm install` in that directory fails with "Permission denied".
//!
//! The rule: a new file or directory is handed to the default user when
//! that user could have created it (its parent is writable by the user), so
//! the API acts as the user would, with root's reach only where the user has
//! none (`/usr/local/bin`, `/etc`: new entries there stay root's). A file
//! that is replaced keeps its owner (see `atomic`).

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use hearth_agent_protocol::ErrorCode;

use super::coded;
use crate::error::{HandlerError, HandlerResult};
use crate::spawn::resolve_user;
use crate::Agent;

/// The user new entries are handed to, where that user could have made them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NewOwner {
    pub uid: u32,
    pub gid: u32,
}

impl NewOwner {
    /// The default user of commands, when the agent runs as root and that
    /// user is someone else; `None` leaves new entries to the agent's user.
    pub(crate) fn of(agent: &Agent) -> Option<NewOwner> {
        if !nix::unistd::geteuid().is_root() {
            return None;
        }
        let user = resolve_user(agent, None).ok()?;
        (user.uid != 0).then_some(NewOwner {
            uid: user.uid,
            gid: user.gid,
        })
    }

    /// True when this user may create entries in a directory with `meta`
    /// (owner, group or other write bit, as the kernel would decide for a
    /// user whose only group is its primary one).
    fn may_write(&self, dir: &Metadata) -> bool {
        let mode = dir.mode();
        if dir.uid() == self.uid {
            mode & 0o200 != 0
        } else if dir.gid() == self.gid {
            mode & 0o020 != 0
        } else {
            mode & 0o002 != 0
        }
    }
}

/// The owner to give a new entry in `parent`: the user's when the user
/// could have written there, else none (it stays the agent's).
pub(crate) fn owner_in(owner: Option<NewOwner>, parent: &Path) -> Option<(u32, u32)> {
    let owner = owner?;
    let meta = fs::metadata(parent).ok()?;
    owner.may_write(&meta).then_some((owner.uid, owner.gid))
}

/// `mkdir -p dir` with `mode` for each directory created, each handed to
/// `owner` where [`owner_in`] says so. A file where a directory should be
/// is `not_a_directory`.
pub(crate) fn create_dirs(dir: &Path, mode: u32, owner: Option<NewOwner>) -> HandlerResult<()> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut at = Some(dir);
    while let Some(p) = at {
        match fs::metadata(p) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Err(coded(ErrorCode::NotADirectory, p, "not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(p.to_path_buf()),
            Err(e) => return Err(HandlerError::io_op(&e, "create parent", p)),
        }
        at = p.parent();
    }
    for p in missing.iter().rev() {
        match fs::DirBuilder::new().mode(mode).create(p) {
            Ok(()) => {}
            // Made meanwhile by someone else: theirs to own.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => continue,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(coded(ErrorCode::NotADirectory, p, "not a directory"))
            }
            Err(e) => return Err(HandlerError::io_op(&e, "create parent", p)),
        }
        if let Some((uid, gid)) = p.parent().and_then(|parent| owner_in(owner, parent)) {
            std::os::unix::fs::lchown(p, Some(uid), Some(gid))
                .map_err(|e| HandlerError::io_op(&e, "chown", p))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn meta(mode: u32, uid: u32, gid: u32) -> (tempfile::TempDir, Metadata, bool) {
        let d = tempfile::tempdir().unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(mode)).unwrap();
        let root = nix::unistd::geteuid().is_root();
        if root {
            std::os::unix::fs::chown(d.path(), Some(uid), Some(gid)).unwrap();
        }
        let m = fs::metadata(d.path()).unwrap();
        (d, m, root)
    }

    #[test]
    fn the_user_may_write_where_its_bits_say() {
        let user = NewOwner {
            uid: 1000,
            gid: 1000,
        };
        for (mode, uid, gid, expected) in [
            (0o755, 1000, 1000, true),  // its own directory (/workspace)
            (0o555, 1000, 1000, false), // its own, read-only
            (0o755, 0, 0, false),       // root's (/usr/local/bin)
            (0o1777, 0, 0, true),       // world-writable (/tmp)
            (0o775, 0, 1000, true),     // its group's, group-writable
            (0o755, 0, 1000, false),    // its group's, not group-writable
        ] {
            let (_d, m, root) = meta(mode, uid, gid);
            if !root {
                return; // chown needs root; CI runs these as root
            }
            assert_eq!(user.may_write(&m), expected, "{mode:o} {uid}:{gid}");
        }
    }

    #[test]
    fn create_dirs_hands_each_new_directory_to_the_user_where_it_could_write() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let user = Some(NewOwner {
            uid: 1000,
            gid: 1000,
        });
        // A user's directory: everything created under it is the user's.
        let home = d.path().join("home");
        fs::create_dir(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(1000), Some(1000)).unwrap();
        create_dirs(&home.join("a/b/c"), 0o755, user).unwrap();
        for p in ["a", "a/b", "a/b/c"] {
            let m = fs::metadata(home.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (1000, 1000), "{p}");
        }
        // A root directory the user cannot write: new entries stay root's.
        let sys = d.path().join("sys");
        fs::create_dir(&sys).unwrap();
        fs::set_permissions(&sys, fs::Permissions::from_mode(0o755)).unwrap();
        create_dirs(&sys.join("x/y"), 0o755, user).unwrap();
        assert_eq!(fs::metadata(sys.join("x")).unwrap().uid(), 0);
        assert_eq!(fs::metadata(sys.join("x/y")).unwrap().uid(), 0);
        // No user: everything stays the agent's.
        create_dirs(&home.join("n/m"), 0o755, None).unwrap();
        assert_eq!(fs::metadata(home.join("n")).unwrap().uid(), 0);
        // A file in the way.
        fs::write(home.join("f"), b"").unwrap();
        let e = create_dirs(&home.join("f/g"), 0o755, user).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotADirectory, "{e:?}");
    }
}
