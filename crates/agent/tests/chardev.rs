//! The character-device transport, with a PTY standing in for QEMU's side of
//! a virtio-serial port: a Unix socket bridged to the PTY master, as QEMU
//! bridges its chardev socket to the port. A host that goes away and comes
//! back (as after a snapshot restore) must get a working session again, even
//! though the agent never saw the old one end.
#![allow(clippy::unwrap_used)]

use std::os::fd::OwnedFd;
use std::time::Duration;

use hearth_agent::transport::CharDev;
use hearth_agent_client::{AgentClient, Connector};
use hearth_agent_protocol::ExecRequest;
use nix::pty::openpty;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

const AGENT: &str = env!("CARGO_BIN_EXE_hearth-agent");

/// Serves one host connection at a time between `listener` and the master.
async fn bridge(listener: UnixListener, master: OwnedFd) {
    let mut dev = CharDev::from_fd(master).unwrap();
    loop {
        let (mut host, _) = listener.accept().await.unwrap();
        let mut a = vec![0u8; 65536];
        let mut b = vec![0u8; 65536];
        loop {
            tokio::select! {
                n = host.read(&mut a) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => { if dev.write_all(&a[..n]).await.is_err() { break } }
                },
                n = dev.read(&mut b) => match n {
                    Ok(0) | Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Ok(n) => { if host.write_all(&b[..n]).await.is_err() { break } }
                },
            }
        }
    }
}

#[tokio::test]
async fn agent_serves_a_character_device_and_survives_host_reconnects() {
    let pty = openpty(None, None).unwrap();
    let mut t = tcgetattr(&pty.slave).unwrap();
    cfmakeraw(&mut t);
    tcsetattr(&pty.slave, SetArg::TCSANOW, &t).unwrap();
    let slave_path = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&pty.slave)
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("port.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    tokio::spawn(bridge(listener, pty.master));

    let mut child = std::process::Command::new(AGENT)
        .arg("--listen")
        .arg(format!("chardev:{}", slave_path.display()))
        .arg("--default-cwd")
        .arg(dir.path())
        .env("HEARTH_AGENT_LOG", "warn")
        .spawn()
        .unwrap();

    let exec = |c: AgentClient, s: &'static str| async move {
        c.exec(&ExecRequest {
            command: format!("echo {s}"),
            ..Default::default()
        })
        .await
    };
    let c1 = AgentClient::new(Connector::Unix(sock.clone()));
    let r = exec(c1.clone(), "first").await.unwrap();
    assert_eq!(r.stdout.0, b"first\n");

    // The host side goes away mid-session and a new host connects: stale
    // session state on the agent side must not wedge the port.
    c1.disconnect().await;
    drop(c1);
    let c2 =
        AgentClient::with_connect_timeout(Connector::Unix(sock.clone()), Duration::from_secs(20));
    let r = tokio::time::timeout(Duration::from_secs(30), exec(c2.clone(), "second"))
        .await
        .expect("reconnect within 30 s")
        .unwrap();
    assert_eq!(r.stdout.0, b"second\n");
    // Large output crosses the device intact.
    let big = c2
        .exec(&ExecRequest {
            command: "head -c 3000000 /dev/zero | tr '\\0' z".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(big.stdout.0.len(), 3_000_000);
    assert!(big.stdout.0.iter().all(|&b| b == b'z'));
    let _ = child.kill();
    let _ = child.wait();
}
