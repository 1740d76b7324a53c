//! The jail's mount namespace: an empty tmpfs root that holds only what one
//! VMM process needs, each at the host path it was started with (snapshots
//! store the exact argv, so paths cannot change), then `pivot_root` into
//! it. Everything is computed before `fork`; the child only issues system
//! calls on prepared C strings (no allocation after `fork`).

use std::collections::BTreeSet;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;

/// What a bind mount exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    ReadOnly,
    ReadWrite,
    /// A device node (read-write, device access kept).
    Device,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

#[derive(Debug)]
struct Bind {
    src: CString,
    dst: CString,
    access: Access,
    recursive: bool,
}

/// Every step of building the jail's root, as C strings.
#[derive(Debug)]
pub(crate) struct MountPlan {
    root: CString,
    dirs: Vec<CString>,
    files: Vec<CString>,
    links: Vec<(CString, CString)>,
    binds: Vec<Bind>,
    /// Where a `/proc` that shows the VMM only itself is mounted, if one is.
    proc: Option<CString>,
}

/// Collects what goes into the root; [`PlanBuilder::build`] turns it into
/// a [`MountPlan`].
#[derive(Debug)]
pub(crate) struct PlanBuilder {
    root: PathBuf,
    entries: Vec<(PathBuf, PathBuf, Kind, Access)>,
    links: Vec<(PathBuf, PathBuf)>,
    proc: bool,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

/// `root` + absolute `p`, resolved lexically, and the directories inside
/// the jail that `p`'s own spelling walks through: a path such as
/// `/a/b/../c` needs `/a/b` to exist for the kernel to resolve it.
fn under(root: &Path, p: &Path) -> (PathBuf, Vec<PathBuf>) {
    let mut cur = root.to_path_buf();
    let mut walked = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => cur.push(n),
            Component::ParentDir => {
                walked.push(cur.clone());
                if cur != root {
                    cur.pop();
                }
            }
            _ => {}
        }
    }
    (cur, walked)
}

impl PlanBuilder {
    pub(crate) fn new(root: &Path) -> PlanBuilder {
        PlanBuilder {
            root: root.to_path_buf(),
            entries: Vec::new(),
            links: Vec::new(),
            proc: false,
        }
    }

    /// Mounts a `/proc` in which the VMM sees no process but its own
    /// (`hidepid=invisible`: every other VMM has another uid) and nothing
    /// of the host's kernel (`subset=pid`): enough to name an inherited
    /// descriptor as `/proc/self/fd/N`.
    pub(crate) fn proc_of_self_only(&mut self) -> &mut Self {
        self.proc = true;
        self
    }

    /// Binds host path `p` at the same path inside the jail.
    pub(crate) fn bind(&mut self, p: &Path, access: Access) -> io::Result<&mut Self> {
        self.bind_as(p, p, access)
    }

    /// Binds host path `src` at `dst` inside the jail.
    pub(crate) fn bind_as(
        &mut self,
        src: &Path,
        dst: &Path,
        access: Access,
    ) -> io::Result<&mut Self> {
        let meta = std::fs::metadata(src)?;
        let kind = if meta.is_dir() { Kind::Dir } else { Kind::File };
        if !dst.is_absolute() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("jail path {} is not absolute", dst.display()),
            ));
        }
        self.entries
            .push((src.to_path_buf(), dst.to_path_buf(), kind, access));
        Ok(self)
    }

    /// Recreates the host's `/bin`-style symlink (merged `/usr`) or binds
    /// the directory read-only when it is a real one.
    pub(crate) fn mirror_top_level(&mut self, p: &Path) -> io::Result<&mut Self> {
        match std::fs::read_link(p) {
            Ok(target) => {
                self.links.push((target, p.to_path_buf()));
                Ok(self)
            }
            Err(_) if p.is_dir() => self.bind(p, Access::ReadOnly),
            Err(_) => Ok(self),
        }
    }

    pub(crate) fn build(&self) -> io::Result<MountPlan> {
        // A path under a directory that is bound read-write already is
        // reachable through it: binding it again would only shadow it.
        let rw_dirs: Vec<&PathBuf> = self
            .entries
            .iter()
            .filter(|e| e.2 == Kind::Dir && e.3 == Access::ReadWrite)
            .map(|e| &e.1)
            .collect();
        let mut dirs = BTreeSet::new();
        let mut files = Vec::new();
        let mut binds = Vec::new();
        for (src, dst, kind, access) in &self.entries {
            if rw_dirs.iter().any(|d| dst != *d && dst.starts_with(d)) {
                continue;
            }
            let (target, walked) = under(&self.root, dst);
            for w in walked {
                for a in w.ancestors() {
                    if a == self.root || !a.starts_with(&self.root) {
                        break;
                    }
                    dirs.insert(a.to_path_buf());
                }
            }
            for a in target.ancestors().skip(1) {
                if a == self.root || !a.starts_with(&self.root) {
                    break;
                }
                dirs.insert(a.to_path_buf());
            }
            match kind {
                Kind::Dir => {
                    dirs.insert(target.clone());
                }
                Kind::File => files.push(cstr(&target)?),
            }
            binds.push(Bind {
                src: cstr(src)?,
                dst: cstr(&target)?,
                access: *access,
                recursive: *kind == Kind::Dir && *access == Access::ReadOnly,
            });
        }
        for (_, link) in &self.links {
            for a in under(&self.root, link).0.ancestors().skip(1) {
                if a == self.root || !a.starts_with(&self.root) {
                    break;
                }
                dirs.insert(a.to_path_buf());
            }
        }
        let proc = self.root.join("proc");
        if self.proc {
            dirs.insert(proc.clone());
        }
        // BTreeSet order puts every parent before its children.
        let dirs = dirs
            .iter()
            .map(|d| cstr(d))
            .collect::<io::Result<Vec<_>>>()?;
        let links = self
            .links
            .iter()
            .map(|(t, l)| Ok((cstr(t)?, cstr(&under(&self.root, l).0)?)))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(MountPlan {
            root: cstr(&self.root)?,
            dirs,
            files,
            links,
            binds,
            proc: self.proc.then(|| cstr(&proc)).transpose()?,
        })
    }
}

impl MountPlan {
    /// Runs in the child between `fork` and `exec`, as root, after
    /// `unshare(CLONE_NEWNS)`: builds the root and pivots into it.
    pub(crate) fn enter(&self) -> io::Result<()> {
        let none: Option<&OsStr> = None;
        mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)?;
        mount(
            Some(OsStr::new("tmpfs")),
            self.root.as_c_str(),
            Some(OsStr::new("tmpfs")),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(OsStr::new("mode=0755,size=1m")),
        )?;
        for d in &self.dirs {
            match nix::unistd::mkdir(d.as_c_str(), Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for f in &self.files {
            let fd = nix::fcntl::open(
                f.as_c_str(),
                nix::fcntl::OFlag::O_CREAT
                    | nix::fcntl::OFlag::O_WRONLY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )?;
            let _ = nix::unistd::close(fd);
        }
        for (target, link) in &self.links {
            nix::unistd::symlinkat(target.as_c_str(), None, link.as_c_str())?;
        }
        for b in &self.binds {
            let mut flags = MsFlags::MS_BIND;
            if b.recursive {
                flags |= MsFlags::MS_REC;
            }
            mount(Some(b.src.as_c_str()), b.dst.as_c_str(), none, flags, none)?;
            let mut re = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID;
            match b.access {
                Access::ReadOnly => re |= MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
                Access::ReadWrite => re |= MsFlags::MS_NODEV,
                Access::Device => {}
            }
            mount(none, b.dst.as_c_str(), none, re, none)?;
        }
        if let Some(proc) = &self.proc {
            mount(
                Some(OsStr::new("proc")),
                proc.as_c_str(),
                Some(OsStr::new("proc")),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(OsStr::new("hidepid=invisible,subset=pid")),
            )?;
        }
        nix::unistd::chdir(self.root.as_c_str())?;
        // pivot_root(".", "."): the old root ends up stacked on the new
        // one at "/", and a lazy unmount drops it.
        nix::unistd::pivot_root(".", ".")?;
        umount2(".", MntFlags::MNT_DETACH)?;
        nix::unistd::chdir("/")?;
        mount(
            none,
            "/",
            none,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            none,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_recreates_host_paths_and_skips_what_a_rw_dir_covers() {
        let t = tempfile::tempdir().unwrap();
        let vm = t.path().join("sandboxes/a");
        std::fs::create_dir_all(&vm).unwrap();
        std::fs::write(vm.join("disk.ext4"), b"").unwrap();
        let img = t.path().join("images/base.ext4");
        std::fs::create_dir_all(img.parent().unwrap()).unwrap();
        std::fs::write(&img, b"").unwrap();
        let mut b = PlanBuilder::new(Path::new("/run/j"));
        b.bind(&vm, Access::ReadWrite).unwrap();
        b.bind(&vm.join("disk.ext4"), Access::ReadWrite).unwrap();
        b.bind(&img, Access::ReadOnly).unwrap();
        let plan = b.build().unwrap();
        assert_eq!(plan.binds.len(), 2, "the disk is inside the VM dir");
        let root = |p: &Path| under(Path::new("/run/j"), p).0;
        assert_eq!(
            plan.binds[0].dst.to_bytes(),
            root(&vm).as_os_str().as_bytes()
        );
        assert_eq!(plan.files, vec![cstr(&root(&img)).unwrap()]);
        let dirs: Vec<String> = plan
            .dirs
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        // Parents come before children, and every ancestor is there.
        let vm_in = root(&vm).display().to_string();
        let pos = dirs.iter().position(|d| *d == vm_in).unwrap();
        let parent = root(vm.parent().unwrap()).display().to_string();
        assert!(dirs.iter().position(|d| *d == parent).unwrap() < pos);
        assert!(!plan.binds[1].recursive || plan.binds[1].access == Access::ReadOnly);
        assert!(b
            .bind(Path::new("/no/such/file"), Access::ReadOnly)
            .is_err());
        // A path spelled with `..` is bound where it leads, and the
        // directories its spelling walks through exist.
        let (at, walked) = under(Path::new("/run/j"), Path::new("/w/crates/vmm/../../data/x"));
        assert_eq!(at, Path::new("/run/j/w/data/x"));
        assert_eq!(
            walked,
            [
                Path::new("/run/j/w/crates/vmm"),
                Path::new("/run/j/w/crates")
            ]
        );
        let (at, _) = under(Path::new("/run/j"), Path::new("/../../etc"));
        assert_eq!(at, Path::new("/run/j/etc"), "never above the root");
        // No /proc unless asked for.
        assert!(plan.proc.is_none());
        assert!(!dirs.iter().any(|d| d.ends_with("/proc")));
        let plan = b.proc_of_self_only().build().unwrap();
        assert_eq!(plan.proc.unwrap().to_bytes(), b"/run/j/proc");
        assert!(plan.dirs.iter().any(|d| d.to_bytes() == b"/run/j/proc"));
    }
}
