//! The guest agent links statically, so one binary runs in every rootfs:
//! build it the way images do (`scripts/build-agent-static`), confirm with
//! `file` and `ldd`, then (as root) serve from a chroot that holds nothing
//! else.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use hearth_agent_client::{AgentClient, Connector};
use hearth_test_support::wait_until;

fn build_static() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(root.join("scripts/build-agent-static"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "static build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

#[tokio::test]
async fn agent_binary_is_statically_linked() {
    let bin = build_static();
    let file = Command::new("file").arg(&bin).output().unwrap();
    let file = String::from_utf8_lossy(&file.stdout);
    assert!(file.contains("static"), "file says: {file}");
    assert!(!file.contains("dynamically linked"), "file says: {file}");
    let ldd = Command::new("ldd").arg(&bin).output().unwrap();
    let ldd = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    assert!(
        ldd.contains("statically linked") || ldd.contains("not a dynamic executable"),
        "ldd says: {ldd}"
    );
}

#[tokio::test]
#[ignore = "needs root (chroot); run with --run-ignored (scripts/test does, as root)"]
async fn static_agent_serves_from_an_empty_root() {
    hearth_test_support::require_root("chroot");
    let bin = build_static();
    // A root with the agent and nothing else: no libc, no /etc/passwd.
    let root = tempfile::tempdir().unwrap();
    std::fs::copy(&bin, root.path().join("hearth-agent")).unwrap();
    let mut child = Command::new("chroot")
        .arg(root.path())
        .args([
            "/hearth-agent",
            "--listen",
            "unix:/agent.sock",
            "--default-cwd",
            "/",
        ])
        .env("HEARTH_AGENT_LOG", "warn")
        .spawn()
        .unwrap();
    let c = AgentClient::new(Connector::Unix(root.path().join("agent.sock")));
    let health = wait_until(Duration::from_secs(10), "static agent answers", || {
        let c = c.clone();
        async move { c.health().await.ok() }
    })
    .await;
    let stat = c.stat("/hearth-agent").await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        health.unwrap().protocol_version,
        hearth_agent_protocol::PROTOCOL_VERSION
    );
    assert!(stat.unwrap().size > 1_000_000);
}
