//! Shared by the integration tests: one data directory for every test run
//! (`<target>/hearth-test-data`), so downloads and content-addressed
//! artifacts are reused across tests and runs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use hearth_image::ImageStore;

pub fn data_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
                .ancestors()
                .nth(2)
                .expect("crates/image sits two levels below the workspace");
            workspace.join("target")
        });
    target.join("hearth-test-data")
}

pub fn store() -> ImageStore {
    ImageStore::new(data_dir())
}

pub fn agent() -> PathBuf {
    hearth_image::static_agent_binary().expect("static agent builds")
}

/// Output of `debugfs -R <request> <image>` (read-only).
pub fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(image)
        .output()
        .expect("debugfs runs (e2fsprogs)");
    assert!(out.status.success(), "debugfs {request}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Allocated bytes of a file (what `du` reports).
pub fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("file exists").blocks() * 512
}
