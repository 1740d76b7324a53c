//! PID 1 duties: the filesystems every guest needs, orphan reaping (the
//! [`crate::spawn::Reaper`] does the waiting; here the agent makes sure
//! orphans come to it), signal handling and power-off.

use std::path::Path;
use std::time::Duration;

use nix::mount::{mount, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::Agent;

#[derive(Debug, thiserror::Error)]
pub enum Pid1Error {
    #[error("mount {fstype} on {target}")]
    Mount {
        fstype: &'static str,
        target: &'static str,
        #[source]
        source: nix::Error,
    },
}

/// Mounts /proc, /sys, /dev, /dev/pts, /dev/shm and /run when they are not
/// mounted yet. /proc is always mounted fresh, so that it shows this PID
/// namespace.
pub fn setup_system() -> Result<(), Pid1Error> {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // Already this namespace's /proc when it names us as 1 (init mode set
    // it up); a fresh PID namespace still sees its parent's.
    let own_proc = std::fs::read_link("/proc/self").is_ok_and(|p| p.as_os_str() == "1");
    if !own_proc {
        mount_fs("proc", "/proc", nodev, None)?;
    }
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let is_mounted = |target: &str| mounted.lines().any(|l| l.split(' ').nth(4) == Some(target));
    let table: [(&'static str, &'static str, MsFlags, Option<&str>); 5] = [
        ("sysfs", "/sys", nodev, None),
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755")),
        (
            "devpts",
            "/dev/pts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("gid=5,mode=0620,ptmxmode=0666"),
        ),
        (
            "tmpfs",
            "/dev/shm",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        (
            "tmpfs",
            "/run",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
    ];
    for (fstype, target, flags, data) in table {
        if !is_mounted(target) {
            mount_fs(fstype, target, flags, data)?;
        }
    }
    // Orphans reparent to PID 1 anyway; reaping starts with the reaper task.
    tracing::info!("pid 1: filesystems mounted");
    Ok(())
}

fn mount_fs(
    fstype: &'static str,
    target: &'static str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), Pid1Error> {
    let _ = std::fs::create_dir_all(target);
    mount(Some(fstype), Path::new(target), Some(fstype), flags, data).map_err(|source| {
        Pid1Error::Mount {
            fstype,
            target,
            source,
        }
    })
}

/// Without udev nothing creates `/dev/virtio-ports/<name>`: link each
/// virtio-serial port by the name the host gave it, from sysfs.
pub fn link_virtio_ports() {
    let Ok(ports) = std::fs::read_dir("/sys/class/virtio-ports") else {
        return;
    };
    let _ = std::fs::create_dir_all("/dev/virtio-ports");
    for port in ports.flatten() {
        let dev = port.file_name();
        let Ok(name) = std::fs::read_to_string(port.path().join("name")) else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || name.contains('/') {
            continue;
        }
        let link = Path::new("/dev/virtio-ports").join(name);
        let _ = std::fs::remove_file(&link);
        if let Err(e) = std::os::unix::fs::symlink(Path::new("..").join(&dev), &link) {
            tracing::warn!(port = name, error = %e, "cannot link virtio port");
        }
    }
}

/// Outside PID 1, adopt orphaned grandchildren (a command that forks a daemon
/// and exits) so they are reaped here too, as they would be in a VM.
pub fn become_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot become subreaper");
    }
}

/// SIGTERM and SIGINT start an orderly shutdown. As PID 1 the kernel ignores
/// signals without a handler, so this is what makes `kill 1` work.
pub fn spawn_signal_handler(agent: std::sync::Arc<Agent>) {
    use tokio::signal::unix::{signal, SignalKind};
    for kind in [SignalKind::terminate(), SignalKind::interrupt()] {
        let agent = agent.clone();
        match signal(kind) {
            Ok(mut s) => {
                tokio::spawn(async move {
                    if s.recv().await.is_some() {
                        tracing::info!(signal = ?kind, "shutting down on signal");
                        agent.shutdown.cancel();
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot handle signal"),
        }
    }
}

/// Ends the guest: every process gets SIGTERM, then SIGKILL, filesystems are
/// synced, and the machine powers off (or reboots). Inside a PID namespace
/// without CAP_SYS_BOOT the reboot call fails and the agent just exits, which
/// ends the namespace.
pub fn power_off(reboot: bool) -> ! {
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline && has_children() {
        reap_blocking();
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    reap_blocking();
    nix::unistd::sync();
    let how = if reboot {
        nix::sys::reboot::RebootMode::RB_AUTOBOOT
    } else {
        nix::sys::reboot::RebootMode::RB_POWER_OFF
    };
    let err = nix::sys::reboot::reboot(how);
    tracing::info!(error = ?err, "reboot call returned; exiting");
    std::process::exit(0)
}

fn has_children() -> bool {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| r.split_whitespace().nth(1) == Some(&me))
                })
                .unwrap_or(false)
        })
}

fn reap_blocking() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(s) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}
