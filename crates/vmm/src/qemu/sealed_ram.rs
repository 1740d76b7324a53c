//! A template's RAM as its jailed clones get it: a sealed memfd copy of
//! the template's `memory.ram`, made once per template and shared.
//!
//! QEMU 7.2 opens a `memory-backend-file` read-write even when it maps it
//! privately (`readonly=on,rom=off` came with 8.2), so a RAM file handed to
//! a jailed QEMU had to be writable by it, and a VMM gone rogue could have
//! rewritten what every later clone of the template starts from. A memfd
//! with the write, grow, shrink and seal seals set still opens read-write
//! and maps privately (copy-on-write) like the file, but its contents and
//! size can no longer change, not even through root's descriptors. The
//! jail hands it to QEMU as an inherited descriptor, named
//! `/proc/self/fd/N` (the jail's `/proc` shows QEMU only itself); the
//! template's own file stays root's and outside every jail.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use parking_lot::Mutex;

/// Which version of a template's RAM file a copy was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Version {
    fn of(m: &std::fs::Metadata) -> Version {
        Version {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        }
    }
}

#[derive(Debug)]
struct Sealed {
    version: Version,
    fd: Arc<OwnedFd>,
}

/// The sealed copies made so far, by the template RAM file's path.
#[derive(Debug, Default)]
pub(crate) struct SealedRams {
    copies: Mutex<HashMap<PathBuf, Sealed>>,
}

impl SealedRams {
    /// The sealed copy of the RAM file at `path`, made now if there is
    /// none of this version of it. Blocking: a first copy reads the file.
    pub(crate) fn get(&self, path: &Path) -> io::Result<Arc<OwnedFd>> {
        // Held across a copy: a burst of clones of one new template makes
        // one copy, not one each.
        let mut copies = self.copies.lock();
        let file = File::open(path)?;
        let meta = file.metadata()?;
        // Templates written before clones mapped sealed copies left their
        // file group-writable for the VMMs: it is root's alone now.
        if meta.uid() != 0 || meta.mode() & 0o077 != 0 {
            let _ = nix::unistd::fchown(file.as_raw_fd(), Some(0.into()), Some(0.into())).and_then(
                |()| {
                    nix::sys::stat::fchmod(
                        file.as_raw_fd(),
                        nix::sys::stat::Mode::from_bits_truncate(0o600),
                    )
                },
            );
        }
        let version = Version::of(&meta);
        if let Some(s) = copies.get(path).filter(|s| s.version == version) {
            return Ok(s.fd.clone());
        }
        // Copies of templates since deleted or rewritten go (the clones
        // running from them keep their own descriptors).
        copies.retain(|p, s| {
            std::fs::metadata(p).is_ok_and(|m| Version::of(&m) == s.version) && p != path
        });
        let started = std::time::Instant::now();
        let (fd, bytes) = seal(&file, version.len)?;
        let fd = Arc::new(fd);
        tracing::info!(
            path = %path.display(),
            bytes,
            ms = started.elapsed().as_millis() as u64,
            "template RAM sealed for clones"
        );
        copies.insert(
            path.to_path_buf(),
            Sealed {
                version,
                fd: fd.clone(),
            },
        );
        Ok(fd)
    }

    /// How many templates have a sealed copy.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.copies.lock().len()
    }
}

/// A sealed memfd holding `src`'s first `len` bytes, and how many bytes of
/// data it holds (holes and zero pages stay holes, so it costs memory only
/// for what the template wrote).
fn seal(src: &File, len: u64) -> io::Result<(OwnedFd, u64)> {
    let fd = memfd_create(
        c"hearth-template-ram",
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )?;
    let copy = File::from(fd);
    copy.set_len(len)?;
    let bytes = hearth_image::copy_data_extents(src, &copy, len)?;
    fcntl(
        copy.as_raw_fd(),
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_SEAL,
        ),
    )?;
    // Clones map the copy: the file's pages in the page cache only
    // doubled it.
    let _ = nix::fcntl::posix_fadvise(
        src.as_raw_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
    Ok((copy.into(), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn template(dir: &Path, bytes: &[(u64, &[u8])], len: u64) -> PathBuf {
        let p = dir.join("memory.ram");
        let f = File::create(&p).unwrap();
        f.set_len(len).unwrap();
        for (at, b) in bytes {
            f.write_all_at(b, *at).unwrap();
        }
        p
    }

    fn read_all(fd: &OwnedFd) -> Vec<u8> {
        let f = File::from(fd.try_clone().unwrap());
        let mut buf = vec![0u8; f.metadata().unwrap().len() as usize];
        f.read_exact_at(&mut buf, 0).unwrap();
        buf
    }

    /// A read-write mapping of `file`'s first `len` bytes (`MAP_FAILED`
    /// when refused); the caller unmaps it.
    fn map_rw(file: &File, len: usize, flags: libc::c_int) -> *mut libc::c_void {
        // SAFETY: a new mapping of an open descriptor at an address the
        // kernel picks; nothing else refers to it yet.
        unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                file.as_raw_fd(),
                0,
            )
        }
    }

    #[test]
    fn the_copy_holds_the_template_and_nothing_can_change_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = template(
            dir.path(),
            &[(4096, b"kernel"), (5 << 20, b"page")],
            8 << 20,
        );
        // As templates were left before: shared with the VMMs' group.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
        let rams = SealedRams::default();
        let fd = rams.get(&path).unwrap();
        assert_eq!(read_all(&fd), std::fs::read(&path).unwrap());
        if nix::unistd::geteuid().is_root() {
            let m = std::fs::metadata(&path).unwrap();
            assert_eq!(
                (m.uid(), m.mode() & 0o777),
                (0, 0o600),
                "the file is root's alone"
            );
        }

        // Even root, through a descriptor opened read-write, changes
        // nothing: no write, no resize, no new seals.
        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap();
        let errno = |e: io::Error| e.raw_os_error();
        assert_eq!(
            rw.write_all_at(b"evil", 4096).map_err(errno),
            Err(Some(libc::EPERM))
        );
        assert_eq!(rw.set_len(1 << 20).map_err(errno), Err(Some(libc::EPERM)));
        assert_eq!(rw.set_len(16 << 20).map_err(errno), Err(Some(libc::EPERM)));
        assert!(fcntl(rw.as_raw_fd(), FcntlArg::F_ADD_SEALS(SealFlag::empty())).is_err());
        let shared = map_rw(&rw, 4096, libc::MAP_SHARED);
        assert_eq!(
            shared,
            libc::MAP_FAILED,
            "a shared writable mapping was allowed"
        );
        // A private mapping is writable, and its writes stay its own.
        let private = map_rw(&rw, 8192, libc::MAP_PRIVATE);
        assert_ne!(private, libc::MAP_FAILED);
        // SAFETY: `private` maps 8192 bytes read-write.
        unsafe {
            let p = private.cast::<u8>().add(4096);
            assert_eq!(*p, b'k');
            *p = b'X';
            libc::munmap(private, 8192);
        }
        assert_eq!(&read_all(&fd)[4096..4102], b"kernel");
    }

    #[test]
    fn one_copy_per_version_and_stale_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let pa = template(&a, &[(0, b"one")], 1 << 20);
        let pb = template(&b, &[(0, b"two")], 1 << 20);
        let rams = SealedRams::default();
        let first = rams.get(&pa).unwrap();
        assert!(Arc::ptr_eq(&first, &rams.get(&pa).unwrap()), "copied twice");
        rams.get(&pb).unwrap();
        assert_eq!(rams.len(), 2);

        // A rewritten template (a new file under the same name) is copied
        // anew; a deleted one's copy is dropped.
        std::fs::remove_file(&pa).unwrap();
        let pa = template(&a, &[(0, b"new")], 2 << 20);
        let second = rams.get(&pa).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(&read_all(&second)[..3], b"new");
        assert_eq!(
            &read_all(&first)[..3],
            b"one",
            "a running clone's copy stays"
        );
        std::fs::remove_file(&pb).unwrap();
        rams.get(&pa).unwrap();
        assert_eq!(rams.len(), 2, "nothing is dropped on a hit");
        std::fs::remove_file(&pa).unwrap();
        let pa = template(&a, &[(0, b"3rd")], 3 << 20);
        rams.get(&pa).unwrap();
        assert_eq!(rams.len(), 1, "b's copy went with b");
    }
}
