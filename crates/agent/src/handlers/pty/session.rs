//! One PTY session's lifecycle: what it reports, resizing its terminal, and
//! closing it (hang up, grace period, kill whatever is left in its session).

use std::sync::Arc;
use std::time::Duration;

use hearth_agent_protocol::PtyInfo;
use nix::pty::PtyMaster;
use nix::sys::signal::Signal;
use parking_lot::Mutex;
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

use super::attach::Output;
use super::terminal::set_winsize;
use crate::error::{HandlerError, HandlerResult};
use crate::spawn::{self, ExitWatch};

/// Between SIGHUP and SIGKILL on close.
const CLOSE_GRACE: Duration = Duration::from_millis(500);
/// How long a SIGKILLed shell may take to be reaped before close answers.
const KILL_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub(super) struct Session {
    pub(super) id: String,
    /// Creation order, for listing and eviction.
    pub(super) seq: u64,
    /// The shell; also its process group and session id.
    pub(super) pid: u32,
    pub(super) master: AsyncFd<PtyMaster>,
    /// (cols, rows)
    pub(super) size: Mutex<(u16, u16)>,
    pub(super) output: Mutex<Output>,
    pub(super) exit: ExitWatch,
    /// Fired when the session is deleted or evicted: the reader and any
    /// input pump stop, and the master closes once they are gone.
    pub(super) closed: CancellationToken,
}

impl Session {
    pub(super) fn info(&self) -> PtyInfo {
        let (cols, rows) = *self.size.lock();
        PtyInfo {
            id: self.id.clone(),
            pid: self.pid,
            cols,
            rows,
            exited: self.exit.get().is_some(),
            exit_code: self.exit.get().map(|e| e.code),
        }
    }

    pub(super) fn resize(&self, cols: u16, rows: u16) -> HandlerResult<()> {
        let mut size = self.size.lock();
        set_winsize(self.master.get_ref(), cols, rows)
            .map_err(|e| HandlerError::internal(format!("resize pty {}: {e}", self.id)))?;
        *size = (cols, rows);
        Ok(())
    }

    /// Hangs up the shell, kills what is left of its session after a grace
    /// period, and stops the session's tasks.
    pub(super) async fn terminate(self: Arc<Self>) -> PtyInfo {
        let mut exit = self.exit.clone();
        // Signal the group only while the shell is unreaped: until then its
        // pid (= process group id) cannot belong to anything else.
        if self.exit.get().is_none() {
            spawn::signal_group(self.pid, Signal::SIGHUP);
            spawn::signal_group(self.pid, Signal::SIGCONT);
            if tokio::time::timeout(CLOSE_GRACE, exit.wait())
                .await
                .is_err()
            {
                spawn::signal_group(self.pid, Signal::SIGKILL);
            }
        }
        // Jobs the shell put in other process groups are still in its session.
        let sid = self.pid as i32;
        match tokio::task::spawn_blocking(move || kill_session(sid)).await {
            Ok(n) if n > 0 => tracing::debug!(pty = %self.id, killed = n, "killed leftover jobs"),
            Ok(_) => {}
            Err(e) => tracing::warn!(pty = %self.id, error = %e, "kill leftover jobs"),
        }
        self.closed.cancel();
        if tokio::time::timeout(KILL_WAIT, exit.wait()).await.is_err() {
            tracing::warn!(pty = %self.id, pid = self.pid, "pty shell outlived SIGKILL");
        }
        tracing::info!(pty = %self.id, "pty closed");
        self.info()
    }
}

/// SIGKILLs every process whose session id is `sid`. Returns how many.
fn kill_session(sid: i32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if stat_session(&stat) == Some(sid) {
            let target = nix::unistd::Pid::from_raw(pid);
            if nix::sys::signal::kill(target, Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
    }
    killed
}

/// The session id field of a `/proc/PID/stat` line. The command name may
/// hold spaces and parentheses, so fields are counted after the last `)`.
fn stat_session(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // state ppid pgrp session
    rest.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_field_parsed_after_command_name() {
        let stat = "1234 (we ird) (x) S 1 1234 1200 34816 1234 4194560";
        assert_eq!(stat_session(stat), Some(1200));
        assert_eq!(stat_session("garbage"), None);
    }
}
