//! Sandbox disks: sparse ext4 creation speed and allocation, sparse copies.

mod common;

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use hearth_image::{create_sparse_ext4, sparse_copy};

#[test]
fn sparse_3gib_disk_is_created_fast_and_small() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.ext4");
    let started = Instant::now();
    create_sparse_ext4(&disk, 3072).unwrap();
    let took = started.elapsed();
    let allocated = common::allocated(&disk);
    eprintln!(
        "create_sparse_ext4(3072 MiB) took {took:?}, allocated {} KiB",
        allocated / 1024
    );

    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 3072 << 20);
    assert!(took.as_secs_f64() < 2.0, "took {took:?}");
    assert!(allocated < 128 << 20, "allocated {allocated} bytes");
    let stats = common::debugfs(&disk, "stats");
    assert!(
        stats.contains("Filesystem volume name:   hearth-sandbox"),
        "{stats}"
    );
    assert!(stats.contains("has_journal"), "{stats}");
    let fsck = std::process::Command::new("e2fsck")
        .args(["-f", "-n"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "{fsck:?}");
}

#[test]
fn sparse_copy_preserves_content_and_holes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.ext4");
    let dst = dir.path().join("dst.ext4");
    create_sparse_ext4(&src, 1024).unwrap();
    // Data far apart, with holes in between, past the filesystem metadata.
    let file = OpenOptions::new().write(true).open(&src).unwrap();
    file.write_all_at(&[0xAB; 10_000], 300 << 20).unwrap();
    file.write_all_at(b"tail", (1024 << 20) - 4).unwrap();
    file.sync_all().unwrap();
    drop(file);

    let started = Instant::now();
    let copied = sparse_copy(&src, &dst).unwrap();
    eprintln!(
        "sparse_copy(1 GiB) took {:?}, {copied} data bytes",
        started.elapsed()
    );

    assert_eq!(std::fs::metadata(&dst).unwrap().len(), 1024 << 20);
    assert!(copied > 10_000 && copied < 128 << 20, "{copied}");
    assert!(
        common::allocated(&dst) <= common::allocated(&src),
        "copy is at least as sparse"
    );
    assert!(common::allocated(&dst) < 128 << 20);
    assert_eq!(hash(&src), hash(&dst));
    let fsck = std::process::Command::new("e2fsck")
        .args(["-f", "-n"])
        .arg(&dst)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "{fsck:?}");
}

#[test]
fn sparse_copy_replaces_an_existing_destination() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let dst = dir.path().join("dst");
    std::fs::write(&src, b"short").unwrap();
    std::fs::write(&dst, vec![1u8; 100_000]).unwrap();
    assert_eq!(sparse_copy(&src, &dst).unwrap(), 5);
    assert_eq!(std::fs::read(&dst).unwrap(), b"short");
}

#[test]
fn sparse_copy_of_a_missing_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = sparse_copy(&dir.path().join("nope"), &dir.path().join("dst")).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    assert!(!dir.path().join("dst").exists());
}

fn hash(path: &std::path::Path) -> Vec<u8> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut file = std::fs::File::open(path).expect("open file to hash");
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).expect("read file to hash");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.finalize().to_vec()
}
