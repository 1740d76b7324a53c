//! The debian rootfs: a real debootstrap of bookworm from deb.debian.org.
//! Takes minutes the first time (cached afterwards in the shared test data
//! directory), so it only runs when asked:
//! `cargo test -p hearth-image --test debian -- --ignored --nocapture`.

mod common;

use std::time::Instant;

use hearth_image::Recipe;

#[test]
#[ignore = "slow: debootstrap downloads and installs bookworm (minutes); run with --ignored"]
fn debian_rootfs_has_python_venv_node_git_and_sandbox_user() {
    let store = common::store();
    let agent = common::agent();
    let started = Instant::now();
    let image = store.rootfs(Recipe::Debian, &agent).expect("debian build");
    let took = started.elapsed();
    let size = std::fs::metadata(&image).unwrap().len();
    eprintln!("rootfs(debian) took {took:?}, image {} MiB", size >> 20);

    let manifest = store.manifest(&image).unwrap();
    assert_eq!(manifest.recipe.recipe, "debian");
    assert_eq!(manifest.size_bytes, size);
    assert!(common::debugfs(&image, "stats").contains("Filesystem volume name:   hearth-debian"));

    let passwd = common::debugfs(&image, "cat /etc/passwd");
    let sandbox = passwd
        .lines()
        .find(|l| l.starts_with("sandbox:"))
        .unwrap_or_else(|| panic!("no sandbox user: {passwd}"));
    assert!(sandbox.starts_with("sandbox:x:1000:1000:"), "{sandbox}");
    assert!(sandbox.ends_with(":/home/sandbox:/bin/bash"), "{sandbox}");
    for dir in ["/workspace", "/home/sandbox", "/opt/venv"] {
        let stat = common::debugfs(&image, &format!("stat {dir}"));
        assert!(stat.contains("User:  1000   Group:  1000"), "{dir}: {stat}");
    }
    for file in [
        "/opt/venv/bin/python3",
        "/opt/venv/bin/pip",
        "/usr/bin/python3",
        "/usr/bin/git",
        "/usr/bin/curl",
        "/usr/bin/node",
        "/usr/bin/npm",
        "/usr/bin/ps",
        "/usr/sbin/ip",
        "/etc/ssl/certs/ca-certificates.crt",
    ] {
        let stat = common::debugfs(&image, &format!("stat {file}"));
        assert!(stat.contains("Inode:"), "{file} missing: {stat}");
    }
    let profile = common::debugfs(&image, "cat /etc/profile.d/hearth.sh");
    assert!(profile.contains("/opt/venv/bin:$PATH"), "{profile}");
    let resolv = common::debugfs(&image, "cat /etc/resolv.conf");
    assert_eq!(resolv.trim(), "nameserver 10.0.2.3");
    let archives = common::debugfs(&image, "ls /var/cache/apt/archives");
    assert!(!archives.contains(".deb"), "{archives}");
    let lists = common::debugfs(&image, "ls /var/lib/apt/lists");
    assert!(!lists.contains("_Packages"), "{lists}");

    // Cached: a fresh store knows it is built and returns the same image
    // without rebuilding; an empty store knows it is not.
    assert!(common::store().debian_is_built());
    let empty = tempfile::tempdir().expect("tmp");
    assert!(!hearth_image::ImageStore::new(empty.path()).debian_is_built());
    let again = Instant::now();
    assert_eq!(
        common::store().rootfs(Recipe::Debian, &agent).unwrap(),
        image
    );
    assert!(again.elapsed().as_secs() < 5);
}
