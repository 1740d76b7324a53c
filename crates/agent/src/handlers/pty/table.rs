//! The registry of PTY sessions: starting a shell on a new terminal, looking
//! sessions up, and forgetting the oldest exited ones.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hearth_agent_protocol::paths::parse_guest_path;
use hearth_agent_protocol::{ErrorCode, PtyInfo, PtyOpenRequest};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::attach::{run_session, Output};
use super::session::Session;
use super::terminal::{become_terminal_leader, open_pty};
use crate::error::{HandlerError, HandlerResult};
use crate::spawn::{self, CommandSpec};
use crate::Agent;

/// Exited sessions kept for `list`/`get` until deleted; the oldest go first.
const MAX_EXITED_SESSIONS: usize = 64;
/// Largest accepted terminal dimension.
const MAX_DIMENSION: u16 = 1000;
const TERM_DEFAULT: &str = "xterm-256color";

/// Open PTY sessions.
#[derive(Debug, Default)]
pub struct PtyTable {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    next: AtomicU64,
}

impl PtyTable {
    /// Starts a shell on a new terminal.
    pub fn open(&self, agent: &Agent, req: &PtyOpenRequest) -> HandlerResult<PtyInfo> {
        validate_size(req.cols, req.rows)?;
        validate_env(req)?;
        let (shell, args) = resolve_shell(req.shell.as_deref())?;
        let (master, slave) = open_pty(req.cols, req.rows)
            .map_err(|e| HandlerError::internal(format!("open pty: {e}")))?;

        let spec = CommandSpec {
            cwd: req.cwd.as_deref(),
            env: Some(&req.env),
            user: req.user.as_deref(),
        };
        let (mut cmd, _user) = spawn::build_command(agent, &shell, args, &spec)?;
        let stdio = |fd: &OwnedFd| {
            fd.try_clone()
                .map(Stdio::from)
                .map_err(|e| HandlerError::internal(format!("dup pty: {e}")))
        };
        cmd.stdin(stdio(&slave)?)
            .stdout(stdio(&slave)?)
            .stderr(stdio(&slave)?);
        drop(slave);
        if !req.env.contains_key("TERM") && !agent.base_env().contains_key("TERM") {
            cmd.env("TERM", TERM_DEFAULT);
        }
        // SAFETY: the function only makes async-signal-safe system calls
        // (setsid, ioctl); it neither allocates nor takes locks.
        unsafe {
            cmd.pre_exec(become_terminal_leader);
        }
        let spawned = agent
            .reaper
            .spawn(&mut cmd)
            .map_err(|e| spawn::spawn_error(&e, &format!("shell {}", shell.display())))?;
        // The command holds the parent's copies of the slave; the output ends
        // (EIO) only once every copy is closed.
        drop(cmd);

        let session = Arc::new(Session {
            id: self.new_id(),
            seq: self.next.fetch_add(1, Ordering::Relaxed),
            pid: spawned.pid,
            master,
            size: Mutex::new((req.cols, req.rows)),
            output: Mutex::new(Output::default()),
            exit: spawned.exit,
            closed: CancellationToken::new(),
        });
        let info = session.info();
        tracing::info!(pty = %session.id, pid = session.pid, shell = %shell.display(), "pty opened");
        self.sessions
            .lock()
            .insert(session.id.clone(), session.clone());
        tokio::spawn(run_session(session));
        self.evict_exited();
        Ok(info)
    }

    pub fn list(&self) -> Vec<PtyInfo> {
        let mut sessions: Vec<_> = self.sessions.lock().values().cloned().collect();
        sessions.sort_by_key(|s| s.seq);
        sessions.iter().map(|s| s.info()).collect()
    }

    pub(super) fn get(&self, id: &str) -> HandlerResult<Arc<Session>> {
        self.sessions
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| not_found(id))
    }

    pub(super) fn remove(&self, id: &str) -> HandlerResult<Arc<Session>> {
        self.sessions.lock().remove(id).ok_or_else(|| not_found(id))
    }

    /// Forgets the oldest exited sessions beyond [`MAX_EXITED_SESSIONS`].
    fn evict_exited(&self) {
        let mut sessions = self.sessions.lock();
        let mut exited: Vec<(u64, String)> = sessions
            .values()
            .filter(|s| s.exit.get().is_some())
            .map(|s| (s.seq, s.id.clone()))
            .collect();
        if exited.len() <= MAX_EXITED_SESSIONS {
            return;
        }
        exited.sort();
        let excess = exited.len() - MAX_EXITED_SESSIONS;
        for (_, id) in exited.into_iter().take(excess) {
            if let Some(s) = sessions.remove(&id) {
                s.closed.cancel();
            }
        }
    }

    /// `pty_` and 16 hex digits, unique in this table.
    fn new_id(&self) -> String {
        use std::hash::{BuildHasher, Hasher};
        let sessions = self.sessions.lock();
        loop {
            // RandomState is seeded from the OS; hashing a counter with it
            // gives ids that do not repeat across agent restarts.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(self.next.fetch_add(1, Ordering::Relaxed));
            let id = format!("pty_{:016x}", h.finish());
            if !sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

fn not_found(id: &str) -> HandlerError {
    HandlerError::new(ErrorCode::PtyNotFound, format!("no pty session {id:?}"))
}

pub(super) fn validate_size(cols: u16, rows: u16) -> HandlerResult<()> {
    let ok = |n: u16| (1..=MAX_DIMENSION).contains(&n);
    if ok(cols) && ok(rows) {
        Ok(())
    } else {
        Err(HandlerError::bad_request(format!(
            "terminal size {cols}x{rows} out of range: cols and rows must be 1..={MAX_DIMENSION}"
        )))
    }
}

fn validate_env(req: &PtyOpenRequest) -> HandlerResult<()> {
    for (k, v) in &req.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(HandlerError::bad_request(format!(
                "invalid env entry {k:?}"
            )));
        }
    }
    Ok(())
}

/// The shell to run and its arguments. The default shell runs as a login
/// shell, like a terminal would start it; a named program runs as given.
fn resolve_shell(requested: Option<&str>) -> HandlerResult<(PathBuf, &'static [&'static str])> {
    match requested.filter(|s| !s.is_empty()) {
        Some(s) => {
            let path = parse_guest_path(s.as_bytes()).map_err(|p| {
                HandlerError::new(ErrorCode::InvalidPath, format!("shell {s:?}: {p}"))
            })?;
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => Ok((path, &[])),
                Ok(_) => Err(HandlerError::new(
                    ErrorCode::BadRequest,
                    format!("shell {s}: not a regular file"),
                )),
                Err(e) => Err(HandlerError::io_op(&e, "shell", &path)),
            }
        }
        None => {
            let bash = Path::new("/bin/bash");
            let shell = if bash.is_file() {
                bash
            } else {
                Path::new("/bin/sh")
            };
            Ok((shell.to_path_buf(), &["-l"]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_bounds() {
        assert!(validate_size(80, 24).is_ok());
        assert!(validate_size(1000, 1000).is_ok());
        assert_eq!(
            validate_size(0, 24).map_err(|e| e.code),
            Err(ErrorCode::BadRequest)
        );
        assert!(validate_size(80, 1001).is_err());
    }
}
