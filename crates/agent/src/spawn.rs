//! Starting guest processes and collecting their exit status.
//!
//! The agent is PID 1 in a VM, so it must reap every orphan that the kernel
//! reparents to it, but a blanket `waitpid(-1)` would steal exit codes that
//! `tokio::process` waits for. So the agent never uses `tokio::process`: the
//! [`Reaper`] owns every `waitpid`, and a spawn registers its pid under the
//! same lock the reaper takes, so no exit can be reaped before its waiter is
//! known. Unknown pids (orphans, daemons' grandchildren) are reaped and dropped.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hearth_agent_protocol::ErrorCode;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Pid, Uid};
use parking_lot::Mutex;
use tokio::net::unix::pipe;
use tokio::sync::watch;

use crate::error::{HandlerError, HandlerResult};
use crate::users::{self, PasswdEntry};
use crate::Agent;

/// PATH for guest commands: the template's venv first.
pub const DEFAULT_PATH: &str =
    "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code, or `128 + signal` when a signal killed it.
    pub code: i32,
    pub signal: Option<i32>,
}

impl ExitInfo {
    fn from_status(status: WaitStatus) -> Option<(Pid, ExitInfo)> {
        match status {
            WaitStatus::Exited(pid, code) => Some((pid, ExitInfo { code, signal: None })),
            WaitStatus::Signaled(pid, sig, _) => Some((
                pid,
                ExitInfo {
                    code: 128 + sig as i32,
                    signal: Some(sig as i32),
                },
            )),
            _ => None,
        }
    }
}

/// Owner of every `waitpid` in the agent.
#[derive(Debug, Default)]
pub struct Reaper {
    waiters: Mutex<HashMap<i32, watch::Sender<Option<ExitInfo>>>>,
}

/// A started child: its pid, pipes (when asked for) and a way to await exit.
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    pub exit: ExitWatch,
}

/// Resolves once the child has exited; cloneable.
#[derive(Debug, Clone)]
pub struct ExitWatch(watch::Receiver<Option<ExitInfo>>);

impl ExitWatch {
    pub async fn wait(&mut self) -> ExitInfo {
        loop {
            if let Some(e) = *self.0.borrow_and_update() {
                return e;
            }
            if self.0.changed().await.is_err() {
                // The reaper never drops a sender before sending; be safe anyway.
                return ExitInfo {
                    code: -1,
                    signal: None,
                };
            }
        }
    }

    pub fn get(&self) -> Option<ExitInfo> {
        *self.0.borrow()
    }
}

/// How often the reaper looks for exits no SIGCHLD announced.
const REAP_SAFETY_TICK: Duration = Duration::from_secs(10);

impl Reaper {
    /// Creates the reaper and its task (SIGCHLD plus a slow safety tick).
    pub fn start() -> Arc<Reaper> {
        let reaper = Arc::new(Reaper::default());
        let r = reaper.clone();
        tokio::spawn(async move {
            let mut sigchld =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::error!(error = %e, "no SIGCHLD handler; polling for exits");
                        None
                    }
                };
            // Only a safety net: every exit raises SIGCHLD, and `reap`
            // collects every exited child at once. Each wakeup of an idle
            // guest costs host CPU (about a millisecond under TCG), so it
            // is rare.
            let mut tick = tokio::time::interval(REAP_SAFETY_TICK);
            loop {
                match sigchld.as_mut() {
                    Some(s) => {
                        tokio::select! {
                            _ = s.recv() => {}
                            _ = tick.tick() => {}
                        }
                    }
                    None => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                r.reap();
            }
        });
        reaper
    }

    /// Spawns `cmd` and registers its pid before any exit can be reaped.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<Spawned> {
        let (tx, rx) = watch::channel(None);
        let mut child = {
            let mut waiters = self.waiters.lock();
            let child = cmd.spawn()?;
            waiters.insert(child.id() as i32, tx);
            child
        };
        let pid = child.id();
        // The reaper owns the wait; `Child` never waits on drop.
        let stdin = child
            .stdin
            .take()
            .map(|s| pipe::Sender::from_owned_fd(s.into()))
            .transpose()?;
        let stdout = child
            .stdout
            .take()
            .map(|s| pipe::Receiver::from_owned_fd(s.into()))
            .transpose()?;
        let stderr = child
            .stderr
            .take()
            .map(|s| pipe::Receiver::from_owned_fd(s.into()))
            .transpose()?;
        Ok(Spawned {
            pid,
            stdin,
            stdout,
            stderr,
            exit: ExitWatch(rx),
        })
    }

    /// Reaps every exited child: our own get their status delivered, orphans
    /// are just collected.
    pub fn reap(&self) {
        let mut waiters = self.waiters.lock();
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(status) => {
                    if let Some((pid, info)) = ExitInfo::from_status(status) {
                        if let Some(tx) = waiters.remove(&pid.as_raw()) {
                            let _ = tx.send(Some(info));
                        } else {
                            tracing::debug!(pid = pid.as_raw(), code = info.code, "reaped orphan");
                        }
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                // ECHILD: no children at all.
                Err(_) => break,
            }
        }
    }
}

/// What to run and as whom: the fields every exec-like request shares.
#[derive(Debug, Clone, Default)]
pub struct CommandSpec<'a> {
    pub cwd: Option<&'a str>,
    pub env: Option<&'a BTreeMap<String, String>>,
    pub user: Option<&'a str>,
}

/// A resolved guest user.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub home: PathBuf,
    pub shell: PathBuf,
}

impl RunAs {
    fn from_entry(u: PasswdEntry) -> RunAs {
        RunAs {
            uid: u.uid,
            gid: u.gid,
            name: u.name,
            home: u.home,
            shell: u.shell,
        }
    }
}

const PASSWD: &str = "/etc/passwd";

/// Resolves the user a request runs as.
pub fn resolve_user(agent: &Agent, requested: Option<&str>) -> HandlerResult<RunAs> {
    let passwd = Path::new(PASSWD);
    let lookup = |name: &str| -> HandlerResult<Option<RunAs>> {
        users::by_name(passwd, name)
            .map(|u| u.map(RunAs::from_entry))
            .map_err(|e| HandlerError::internal(format!("look up user {name}: {e}")))
    };
    if let Some(name) = requested.filter(|n| !n.is_empty()) {
        let user = match name.parse::<u32>() {
            Ok(uid) => users::by_uid(passwd, uid)
                .map_err(|e| HandlerError::internal(format!("look up uid {uid}: {e}")))?
                .map(RunAs::from_entry),
            Err(_) => lookup(name)?,
        };
        let user = user.ok_or_else(|| {
            HandlerError::new(
                ErrorCode::UserNotFound,
                format!("user {name:?} does not exist"),
            )
        })?;
        let me = Uid::effective();
        if !me.is_root() && user.uid != me.as_raw() {
            return Err(HandlerError::new(
                ErrorCode::PermissionDenied,
                format!("agent runs as uid {me} and cannot switch to {name:?}"),
            ));
        }
        return Ok(user);
    }
    if let Some(name) = agent.config.default_user.as_deref() {
        return resolve_user(agent, Some(name));
    }
    if Uid::effective().is_root() {
        if let Some(u) = lookup("sandbox")? {
            return Ok(u);
        }
    }
    let me = Uid::effective();
    Ok(users::by_uid(passwd, me.as_raw())
        .ok()
        .flatten()
        .map(RunAs::from_entry)
        .unwrap_or_else(|| RunAs {
            uid: me.as_raw(),
            gid: nix::unistd::Gid::effective().as_raw(),
            name: me.to_string(),
            home: PathBuf::from("/"),
            shell: PathBuf::from("/bin/sh"),
        }))
}

/// Builds a command for `program args` with the request's cwd, env and user,
/// pipes on all three streams, in a new process group (so timeouts and kills
/// reach everything it starts).
pub fn build_command(
    agent: &Agent,
    program: &Path,
    args: &[&str],
    spec: &CommandSpec<'_>,
) -> HandlerResult<(Command, RunAs)> {
    let user = resolve_user(agent, spec.user)?;
    let cwd = resolve_cwd(agent, spec.cwd, &user)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(&cwd)
        .env_clear()
        .envs(base_env(&user))
        .envs(agent.base_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(env) = spec.env {
        cmd.envs(env);
    }
    if user.uid != Uid::effective().as_raw() {
        cmd.uid(user.uid).gid(user.gid);
    }
    Ok((cmd, user))
}

/// Starts `/bin/sh -c command` in its own process group.
pub fn shell_command(
    agent: &Agent,
    command: &str,
    spec: &CommandSpec<'_>,
) -> HandlerResult<(Command, RunAs)> {
    let (mut cmd, user) = build_command(agent, Path::new("/bin/sh"), &["-c", command], spec)?;
    cmd.process_group(0);
    Ok((cmd, user))
}

fn base_env(user: &RunAs) -> Vec<(&'static str, OsString)> {
    vec![
        ("PATH", DEFAULT_PATH.into()),
        ("HOME", user.home.clone().into_os_string()),
        ("USER", user.name.clone().into()),
        ("LOGNAME", user.name.clone().into()),
        ("SHELL", user.shell.clone().into_os_string()),
        ("LANG", "C.UTF-8".into()),
    ]
}

fn resolve_cwd(agent: &Agent, requested: Option<&str>, user: &RunAs) -> HandlerResult<PathBuf> {
    if let Some(cwd) = requested.filter(|c| !c.is_empty()) {
        let path = hearth_agent_protocol::paths::parse_guest_path(cwd.as_bytes())?;
        return match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => Ok(path),
            Ok(_) => Err(HandlerError::new(
                ErrorCode::NotADirectory,
                format!("cwd {cwd}: not a directory"),
            )),
            Err(e) => Err(HandlerError::io_op(&e, "cwd", &path)),
        };
    }
    for candidate in [agent.config.default_cwd.as_path(), user.home.as_path()] {
        if candidate.is_dir() {
            return Ok(candidate.to_path_buf());
        }
    }
    Ok(PathBuf::from("/"))
}

/// Maps a spawn failure to a wire error.
pub fn spawn_error(err: &io::Error, what: &str) -> HandlerError {
    HandlerError::new(ErrorCode::SpawnFailed, format!("start {what}: {err}"))
}

/// Sends `sig` to the process group led by `pid`; a group already gone is fine.
pub fn signal_group(pid: u32, sig: Signal) {
    if let Err(e) = killpg(Pid::from_raw(pid as i32), sig) {
        if e != nix::errno::Errno::ESRCH {
            tracing::warn!(pid, signal = ?sig, error = %e, "signal failed");
        }
    }
}

/// Kills a process group with SIGKILL when dropped, unless disarmed: a
/// request that is cancelled (client gone) or times out leaves nothing behind.
#[derive(Debug)]
pub struct GroupKillGuard {
    pid: Option<u32>,
}

impl GroupKillGuard {
    pub fn new(pid: u32) -> Self {
        GroupKillGuard { pid: Some(pid) }
    }
    pub fn disarm(&mut self) {
        self.pid = None;
    }
}

impl Drop for GroupKillGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            signal_group(pid, Signal::SIGKILL);
        }
    }
}
