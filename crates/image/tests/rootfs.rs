//! The minimal rootfs: busybox from Debian's package plus the agent, packed
//! with mkfs.ext4 -d; inspected with debugfs (no mount needed).

mod common;

use std::time::Instant;

use hearth_image::Recipe;

#[test]
fn minimal_rootfs_has_busybox_agent_and_sandbox_user() {
    let store = common::store();
    let agent = common::agent();
    let started = Instant::now();
    let image = store
        .rootfs(Recipe::Minimal, &agent)
        .expect("minimal build");
    eprintln!("rootfs(minimal) took {:?}", started.elapsed());

    let images = common::data_dir().join("images");
    assert_eq!(image.parent().unwrap(), images);
    let digest = image.file_stem().unwrap().to_string_lossy().into_owned();
    assert_eq!(digest.len(), 64);
    assert!(image.extension().is_some_and(|e| e == "ext4"));

    let manifest = store.manifest(&image).unwrap();
    assert_eq!(manifest.digest, digest);
    assert_eq!(manifest.recipe.recipe, "minimal");
    assert_eq!(manifest.recipe.digest(), digest);
    assert_eq!(
        manifest.size_bytes,
        std::fs::metadata(&image).unwrap().len()
    );
    assert!(manifest.recipe.inputs.contains_key("busybox"));

    let stats = common::debugfs(&image, "stats");
    assert!(
        stats.contains("Filesystem volume name:   hearth-minimal"),
        "{stats}"
    );

    let bin = common::debugfs(&image, "ls -l /bin");
    assert!(bin.contains("busybox"), "{bin}");
    let busybox = common::debugfs(&image, "stat /bin/busybox");
    assert!(
        busybox.contains("Type: regular") && busybox.contains("Mode:  0755"),
        "{busybox}"
    );
    let sh = common::debugfs(&image, "stat /bin/sh");
    assert!(
        sh.contains("Type: symlink") && sh.contains("/bin/busybox"),
        "{sh}"
    );
    let awk = common::debugfs(&image, "stat /usr/bin/awk");
    assert!(
        awk.contains("Type: symlink"),
        "an applet from --list-full: {awk}"
    );

    for dir in ["/workspace", "/home/sandbox"] {
        let stat = common::debugfs(&image, &format!("stat {dir}"));
        assert!(stat.contains("Type: directory"), "{stat}");
        assert!(
            stat.contains("User:  1000   Group:  1000"),
            "{dir} owned by sandbox: {stat}"
        );
    }
    let tmp = common::debugfs(&image, "stat /tmp");
    assert!(tmp.contains("Mode:  01777"), "{tmp}");
    for dir in [
        "/root",
        "/proc",
        "/sys",
        "/dev",
        "/run",
        "/mnt",
        "/opt",
        "/usr/local/bin",
        "/var/tmp",
    ] {
        let stat = common::debugfs(&image, &format!("stat {dir}"));
        assert!(stat.contains("Type: directory"), "{dir}: {stat}");
    }

    let passwd = common::debugfs(&image, "cat /etc/passwd");
    assert!(passwd.contains("root:x:0:0:root:/root:/bin/sh"), "{passwd}");
    assert!(
        passwd.contains("sandbox:x:1000:1000:sandbox:/home/sandbox:/bin/sh"),
        "{passwd}"
    );
    let group = common::debugfs(&image, "cat /etc/group");
    assert!(
        group.contains("root:x:0:") && group.contains("sandbox:x:1000:"),
        "{group}"
    );
    let resolv = common::debugfs(&image, "cat /etc/resolv.conf");
    assert_eq!(resolv.trim(), "nameserver 10.0.2.3");
    assert!(common::debugfs(&image, "cat /etc/hosts").contains("localhost"));
    assert!(!common::debugfs(&image, "cat /etc/hostname")
        .trim()
        .is_empty());

    let agent_stat = common::debugfs(&image, "stat /usr/local/bin/hearth-agent");
    let agent_len = std::fs::metadata(&agent).unwrap().len();
    assert!(
        agent_stat.contains(&format!("Size: {agent_len}")),
        "{agent_stat}"
    );
}

#[test]
fn minimal_rootfs_second_call_is_a_cache_hit() {
    let store = common::store();
    let agent = common::agent();
    let first = store
        .rootfs(Recipe::Minimal, &agent)
        .expect("minimal build");
    let mtime = std::fs::metadata(&first).unwrap().modified().unwrap();

    let started = Instant::now();
    let second = store.rootfs(Recipe::Minimal, &agent).unwrap();
    let took = started.elapsed();
    eprintln!("cached rootfs(minimal) took {took:?}");
    assert_eq!(first, second);
    assert_eq!(
        std::fs::metadata(&second).unwrap().modified().unwrap(),
        mtime,
        "not rebuilt"
    );
    assert!(took.as_secs_f64() < 3.0, "cache hit took {took:?}");

    // A fresh store (another process, a restarted server) finds it on disk.
    let started = Instant::now();
    let third = common::store().rootfs(Recipe::Minimal, &agent).unwrap();
    let took = started.elapsed();
    eprintln!("fresh-store rootfs(minimal) took {took:?}");
    assert_eq!(first, third);
    assert_eq!(
        std::fs::metadata(&third).unwrap().modified().unwrap(),
        mtime,
        "not rebuilt"
    );
    assert!(took.as_secs_f64() < 3.0, "cache hit took {took:?}");

    // No build directory is left behind.
    let tmp = common::data_dir().join("tmp");
    let leftovers: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("rootfs-minimal"))
        .collect();
    // Other tests may be building concurrently; ours finished, so at most theirs remain.
    assert!(leftovers.len() <= 1, "{leftovers:?}");
}

#[test]
fn a_different_agent_gives_a_different_image() {
    let store = common::store();
    let agent = common::agent();
    let dir = tempfile::tempdir().unwrap();
    let other_agent = dir.path().join("hearth-agent");
    let mut bytes = std::fs::read(&agent).unwrap();
    bytes.extend_from_slice(b"\0different");
    std::fs::write(&other_agent, bytes).unwrap();
    // Build in a private data dir so the shared one keeps only real images.
    let private = hearth_image::ImageStore::new(dir.path().join("data"));
    let deb_cache = common::data_dir().join("cache/debs");
    std::fs::create_dir_all(dir.path().join("data/cache")).unwrap();
    copy_dir(&deb_cache, &dir.path().join("data/cache/debs"));
    let a = store.rootfs(Recipe::Minimal, &agent).unwrap();
    let b = private.rootfs(Recipe::Minimal, &other_agent).unwrap();
    assert_ne!(a.file_name(), b.file_name());
    assert!(b.starts_with(dir.path()));
    assert!(std::fs::read_dir(dir.path().join("data/tmp"))
        .unwrap()
        .flatten()
        .all(|e| e.file_name() == "locks"));
}

fn copy_dir(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).expect("create copy destination");
    for entry in std::fs::read_dir(src).expect("read copy source").flatten() {
        let to = dst.join(entry.file_name());
        if entry.path().is_dir() {
            // The debs of another suite (busybox from trixie).
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), to).expect("copy file");
        }
    }
}

#[test]
fn failed_build_leaves_no_artifact_and_stale_builds_are_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_dir(
        &common::data_dir().join("cache/debs"),
        &data.join("cache/debs"),
    );
    // A build directory left by a crashed process: unlocked lock file inside.
    let stale = data.join("tmp/rootfs-minimal-999999-0-0");
    std::fs::create_dir_all(stale.join("tree/bin")).unwrap();
    std::fs::write(stale.join(".hearth-build.lock"), b"").unwrap();
    // images/ is a file, so publishing the finished image fails.
    std::fs::write(data.join("images"), b"not a directory").unwrap();

    let store = hearth_image::ImageStore::new(&data);
    let err = store
        .rootfs(Recipe::Minimal, &common::agent())
        .expect_err("images/ cannot be created");
    assert!(
        matches!(&err, hearth_image::ImageError::Io { path, .. } if path.ends_with("images")),
        "{err:?}"
    );
    assert!(!stale.exists(), "stale build directory reaped");
    let left: Vec<_> = std::fs::read_dir(data.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["locks"], "failed build cleaned up");
    assert_eq!(
        std::fs::read(data.join("images")).unwrap(),
        b"not a directory"
    );
}
