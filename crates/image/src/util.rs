//! Small file helpers shared by the builders: hashing, tree sizes, times.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::error::ImageError;

/// Hex SHA-256 of a file's contents.
pub(crate) fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let mut file = File::open(path).map_err(ImageError::io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(ImageError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Hex SHA-256 of bytes.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// What a directory tree will take in an ext4 image.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TreeUsage {
    /// Bytes, counting every file and directory in whole 4 KiB blocks.
    pub bytes: u64,
    /// Number of inodes (files, directories, links, nodes).
    pub inodes: u64,
}

pub(crate) fn tree_usage(root: &Path) -> io::Result<TreeUsage> {
    const BLOCK: u64 = 4096;
    let mut usage = TreeUsage::default();
    let mut stack = vec![root.to_path_buf()];
    let mut seen_links = std::collections::HashSet::new();
    while let Some(dir) = stack.pop() {
        usage.inodes += 1;
        usage.bytes += BLOCK;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
                continue;
            }
            if meta.nlink() > 1 && !seen_links.insert((meta.dev(), meta.ino())) {
                continue;
            }
            usage.inodes += 1;
            // Symlinks under 60 bytes live inside the inode.
            if !(meta.file_type().is_symlink() && meta.len() < 60) {
                usage.bytes += meta.len().div_ceil(BLOCK) * BLOCK;
            }
        }
    }
    Ok(usage)
}

/// Image size for a tree: content * 1.3 + 64 MiB, in whole MiB.
pub(crate) fn image_size_mb(usage: TreeUsage) -> u64 {
    const MIB: u64 = 1 << 20;
    let bytes = usage.bytes + usage.bytes * 3 / 10 + 64 * MIB;
    bytes.div_ceil(MIB)
}

/// `2024-05-01T12:00:00Z` for a point in time (UTC, second precision).
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // leap day 2024
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn image_size_adds_thirty_percent_and_64_mib() {
        let usage = TreeUsage {
            bytes: 100 << 20,
            inodes: 10,
        };
        assert_eq!(image_size_mb(usage), 130 + 64);
        assert_eq!(image_size_mb(TreeUsage::default()), 64);
    }

    #[test]
    fn tree_usage_counts_blocks_and_inodes() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("one"), b"x").unwrap();
        fs::write(dir.path().join("big"), vec![1u8; 5000]).unwrap();
        fs::hard_link(dir.path().join("big"), dir.path().join("big2")).unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("one", dir.path().join("sub/link")).unwrap();
        let usage = tree_usage(dir.path()).unwrap();
        // root + sub + one + big (hard link counted once) + link
        assert_eq!(usage.inodes, 5);
        // two dirs, "one" = 1 block, "big" = 2 blocks, short symlink = 0
        assert_eq!(usage.bytes, 4096 * (2 + 1 + 2));
    }

    #[test]
    fn sha256_of_file_matches_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"abc").unwrap();
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_file(&path).unwrap(), expected);
        assert_eq!(sha256_hex(b"abc"), expected);
    }
}
