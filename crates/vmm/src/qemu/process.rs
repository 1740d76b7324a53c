//! The QEMU process: spawned in its own session so it outlives the driver,
//! watched for exit whether it is our child or one we adopted, and killed
//! as a whole process group.

use std::io;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;

use crate::jail::PreExec;

/// How often an adopted (non-child) process is checked for exit.
const ADOPTED_POLL: Duration = Duration::from_millis(100);

/// How a VMM process uses the host's memory ([`super::QemuConfig`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostMemory {
    /// Transparent huge pages allowed.
    pub huge_pages: bool,
    /// glibc's `MALLOC_ARENA_MAX` (none: glibc's default, 8 per core).
    pub malloc_arenas: Option<u32>,
}

/// A running (or finished) QEMU process.
#[derive(Debug, Clone)]
pub(crate) struct QemuProcess {
    pid: i32,
    exit: watch::Receiver<Option<String>>,
}

impl QemuProcess {
    /// Starts `binary args` in a new session with stdout and stderr
    /// appended to `log`, inside `jail` when given.
    pub(crate) fn spawn(
        binary: &Path,
        args: &[String],
        log: &Path,
        jail: Option<PreExec>,
        memory: HostMemory,
    ) -> io::Result<QemuProcess> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let err = out.try_clone()?;
        let mut cmd = tokio::process::Command::new(binary);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(false);
        if let Some(n) = memory.malloc_arenas {
            cmd.env("MALLOC_ARENA_MAX", n.to_string());
        }
        let no_huge_pages = !memory.huge_pages;
        // SAFETY: setsid is async-signal-safe and touches no memory of the
        // parent; it only makes the child a session (and group) leader so a
        // signal to the driver's group or terminal never reaches the VM.
        // The jail's step issues only system calls on data prepared before
        // the fork (see `PreExec::apply`).
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setsid().map_err(io::Error::from)?;
                // PR_SET_THP_DISABLE only changes this process (and what it
                // execs): no transparent huge pages, so memory the guest or
                // the translator touches is counted a 4 KiB page at a time,
                // not rounded up to 2 MiB.
                if no_huge_pages && libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                match &jail {
                    Some(j) => j.apply(),
                    None => Ok(()),
                }
            });
        }
        let mut child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("spawned process has no pid"))?
            as i32;
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => format!("wait failed: {e}"),
            };
            let _ = tx.send(Some(status));
        });
        Ok(QemuProcess { pid, exit: rx })
    }

    /// Watches a process that is not our child (adopted after a restart).
    pub(crate) fn adopt(pid: i32) -> QemuProcess {
        let (tx, rx) = watch::channel(None);
        if !is_alive(pid) {
            let _ = tx.send(Some("gone".into()));
        } else {
            tokio::spawn(async move {
                while is_alive(pid) {
                    if tx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(ADOPTED_POLL).await;
                }
                let _ = tx.send(Some("exited".into()));
            });
        }
        QemuProcess { pid, exit: rx }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// The exit status once the process is gone.
    pub(crate) fn exit_status(&self) -> Option<String> {
        self.exit.borrow().clone()
    }

    /// Resolves when the process has exited (and, for a child, was reaped).
    pub(crate) async fn exited(&self) -> String {
        let mut rx = self.exit.clone();
        let waited = rx.wait_for(|s| s.is_some()).await.map(|s| s.clone());
        match waited {
            Ok(s) => s.unwrap_or_default(),
            // The watcher is gone (runtime shutting down): poll directly.
            Err(_) => {
                while is_alive(self.pid) {
                    tokio::time::sleep(ADOPTED_POLL).await;
                }
                "exited".into()
            }
        }
    }

    /// Waits up to `timeout` for the exit; true when it happened.
    pub(crate) async fn wait_exit(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.exited()).await.is_ok()
    }

    /// Signals the whole process group (QEMU plus helpers it started).
    pub(crate) fn signal_group(&self, sig: Signal) {
        if self.exit_status().is_some() {
            return;
        }
        if let Err(e) = killpg(Pid::from_raw(self.pid), sig) {
            if e != nix::errno::Errno::ESRCH {
                tracing::warn!(pid = self.pid, error = %e, "signal vmm process group");
            }
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; true when the process is gone.
    pub(crate) async fn terminate(&self, grace: Duration) -> bool {
        if self.exit_status().is_some() {
            return true;
        }
        self.signal_group(Signal::SIGTERM);
        if self.wait_exit(grace).await {
            return true;
        }
        tracing::warn!(pid = self.pid, "vmm ignored SIGTERM; killing");
        self.signal_group(Signal::SIGKILL);
        self.wait_exit(Duration::from_secs(10)).await
    }
}

pub(crate) use crate::host::process_alive as is_alive;

/// The argument vector of `pid`, when it is readable.
pub(crate) fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn child_runs_in_own_session_and_is_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let p = QemuProcess::spawn(
            Path::new("/bin/sh"),
            &["-c".into(), "echo hi; exec sleep 30".into()],
            &log,
            None,
            HostMemory {
                huge_pages: false,
                malloc_arenas: Some(2),
            },
        )
        .unwrap();
        let sid = nix::unistd::getsid(Some(Pid::from_raw(p.pid()))).unwrap();
        assert_eq!(sid.as_raw(), p.pid());
        assert!(is_alive(p.pid()));
        // Right after fork the child still shows the parent's command line,
        // then the shell's (which names sleep too), and during each exec
        // an empty one: wait for the last exec, sleep's own argv.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while cmdline(p.pid()).unwrap_or_default() != ["sleep", "30"] {
            assert!(std::time::Instant::now() < deadline, "child never exec'd");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // No huge pages, and glibc's arenas bounded, in what it exec'd.
        let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid())).unwrap();
        assert!(status.contains("THP_enabled:\t0"), "{status}");
        let environ = std::fs::read(format!("/proc/{}/environ", p.pid())).unwrap();
        assert!(environ
            .split(|b| *b == 0)
            .any(|kv| kv == b"MALLOC_ARENA_MAX=2"));
        // stdout goes to the log: wait for the line before stopping it.
        for _ in 0..500 {
            if std::fs::read_to_string(&log).unwrap() == "hi\n" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(p.terminate(Duration::from_secs(5)).await);
        assert!(!is_alive(p.pid()));
        assert!(p.exit_status().unwrap().contains("signal"));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "hi\n");
    }

    #[tokio::test]
    async fn adopted_process_exit_is_noticed() {
        let child = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let adopted = QemuProcess::adopt(pid);
        // Reap it ourselves, as its real parent would.
        let reaper = std::thread::spawn(move || {
            let mut child = child;
            child.wait().unwrap()
        });
        assert!(adopted.wait_exit(Duration::from_secs(5)).await);
        reaper.join().unwrap();
        assert!(!is_alive(pid));
    }
}
