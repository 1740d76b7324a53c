//! Sandbox disks (`vdb`): sparse ext4 files created in well under a second,
//! and sparse copies for snapshots and forks (reflink when the filesystem
//! can share extents, else only the data extents are copied).

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};

use crate::cmd;
use crate::error::ImageError;

/// Label of every sandbox disk.
pub const SANDBOX_DISK_LABEL: &str = "hearth-sandbox";

/// Creates (or truncates) `path` for writing, readable by its owner alone
/// (0600): a sandbox disk holds the tenant's files.
fn private_create(path: &Path) -> Result<File, ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(ImageError::io(path))?;
    // An existing file keeps its mode through `open`: narrow it.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(ImageError::io(path))?;
    Ok(file)
}

/// Creates (or replaces) `path` as a sparse file of `size_mb` MiB holding an
/// empty ext4 filesystem. Inode tables and journal are initialized lazily, so
/// this takes a fraction of a second and allocates a few MiB whatever the size.
/// Blocking: call it from `spawn_blocking` in async code.
pub fn create_sparse_ext4(path: &Path, size_mb: u64) -> Result<(), ImageError> {
    let file = private_create(path)?;
    file.set_len(size_mb << 20).map_err(ImageError::io(path))?;
    drop(file);
    let result = cmd::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1"])
            .args(["-L", SANDBOX_DISK_LABEL])
            .arg(path),
    );
    if let Err(source) = result {
        let _ = fs::remove_file(path);
        return Err(ImageError::Mkfs {
            path: path.to_owned(),
            source,
        });
    }
    let file = File::open(path).map_err(ImageError::io(path))?;
    file.sync_all().map_err(ImageError::io(path))
}

/// Copies `src` to `dst` (replaced if it exists) keeping it sparse, and
/// fsyncs the copy. Tries a reflink (`FICLONE`) first; otherwise walks the
/// source's data extents with `SEEK_DATA`/`SEEK_HOLE` and writes only the
/// non-zero blocks of each. Returns the bytes of data in the copy: the bytes
/// written, or for a reflink the size of the shared data extents.
/// Blocking: call it from `spawn_blocking` in async code.
pub fn sparse_copy(src: &Path, dst: &Path) -> Result<u64, ImageError> {
    copy(src, dst, true)
}

fn copy(src: &Path, dst: &Path, try_reflink: bool) -> Result<u64, ImageError> {
    let copy_err = |source| ImageError::Copy {
        src: src.to_owned(),
        dst: dst.to_owned(),
        source,
    };
    let source = File::open(src).map_err(ImageError::io(src))?;
    let len = source.metadata().map_err(ImageError::io(src))?.len();
    let dest = private_create(dst)?;

    let result = if try_reflink && reflink(&source, &dest) {
        data_extent_bytes(&source, len)
    } else {
        dest.set_len(len)
            .and_then(|()| copy_data_extents(&source, &dest, len))
    };
    let copied = match result.and_then(|n| dest.sync_all().map(|()| n)) {
        Ok(n) => n,
        Err(e) => {
            drop(dest);
            let _ = fs::remove_file(dst);
            return Err(copy_err(e));
        }
    };
    Ok(copied)
}

/// Shares `source`'s extents with `dest`; false when the filesystem (or the
/// pair of filesystems) cannot.
fn reflink(source: &File, dest: &File) -> bool {
    // SAFETY: FICLONE takes the source descriptor as its argument; both are
    // open descriptors owned by live `File`s for the duration of the call.
    let rc = unsafe { libc::ioctl(dest.as_raw_fd(), libc::FICLONE, source.as_raw_fd()) };
    rc == 0
}

/// The data extents of `file` as `(start, end)` ranges. Without SEEK_DATA
/// support the whole file counts as one extent.
pub fn data_extents(file: &File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let mut extents = Vec::new();
    let mut offset = 0u64;
    while offset < len {
        let start = match lseek(fd, offset as i64, Whence::SeekData) {
            Ok(pos) => pos as u64,
            Err(Errno::ENXIO) => break,
            Err(Errno::EINVAL) if offset == 0 => return Ok(vec![(0, len)]),
            Err(e) => return Err(e.into()),
        };
        let end = match lseek(fd, start as i64, Whence::SeekHole) {
            Ok(pos) => (pos as u64).min(len),
            Err(e) => return Err(e.into()),
        };
        if end <= start {
            break;
        }
        extents.push((start, end));
        offset = end;
    }
    Ok(extents)
}

fn data_extent_bytes(file: &File, len: u64) -> std::io::Result<u64> {
    Ok(data_extents(file, len)?.iter().map(|(s, e)| e - s).sum())
}

/// Writes the non-zero 4 KiB blocks of `source`'s first `len` bytes into
/// `dest` at the same offsets (holes and zero blocks stay holes); returns
/// the bytes written.
pub fn copy_data_extents(source: &File, dest: &File, len: u64) -> std::io::Result<u64> {
    const CHUNK: usize = 1 << 20;
    let mut buf = vec![0u8; CHUNK];
    let mut written = 0u64;
    for (start, end) in data_extents(source, len)? {
        let mut offset = start;
        while offset < end {
            let want = ((end - offset) as usize).min(CHUNK);
            let chunk = &mut buf[..want];
            source.read_exact_at(chunk, offset)?;
            // Zero blocks inside a data extent stay holes in the copy.
            for (i, block) in chunk.chunks(4096).enumerate() {
                if block.iter().any(|&b| b != 0) {
                    dest.write_all_at(block, offset + (i * 4096) as u64)?;
                    written += block.len() as u64;
                }
            }
            offset += want as u64;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn data_extents_skip_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        file.set_len(64 << 20).unwrap();
        file.write_all_at(&[7u8; 8192], 16 << 20).unwrap();
        file.sync_all().unwrap();
        let file = File::open(&path).unwrap();
        let extents = data_extents(&file, 64 << 20).unwrap();
        assert_eq!(extents.len(), 1, "{extents:?}");
        let (start, end) = extents[0];
        assert!(start <= 16 << 20 && end >= (16 << 20) + 8192, "{extents:?}");
        assert!(end - start < 1 << 20, "{extents:?}");
    }

    #[test]
    fn zero_blocks_inside_data_stay_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        // Fully allocated but mostly zero.
        let mut data = vec![0u8; 4 << 20];
        data[5000] = 1;
        fs::write(&src, &data).unwrap();
        let copied = copy(&src, &dst, false).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), data);
        assert_eq!(copied, 4096, "only the one non-zero block is written");
        assert!(fs::metadata(&dst).unwrap().blocks() * 512 <= 64 * 1024);
    }
}
