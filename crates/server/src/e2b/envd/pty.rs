//! PTY sessions through E2B's `process.Process`: a `Start` with `pty` set
//! opens one of Hearth's terminals and streams its output as `pty` data
//! events; `SendInput` (`pty` or `stdin`) writes to it, `Update` resizes
//! it, `SendSignal` hangs it up and `Connect` re-attaches. E2B names a PTY
//! by its shell's pid; the terminal it is and the input half of its
//! attachment are kept here, per sandbox.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};
use hearth_agent_protocol::PtyOpenRequest;
use hearth_e2b_proto::process::{process_event, ProcessConfig, ProcessEvent, Pty};
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio_util::io::ReaderStream;

use super::connect::{Code, RpcError};
use super::Envd;
use crate::core::guest::{Guest, Pipe};

/// The PTY sessions E2B clients opened, by sandbox and shell pid.
#[derive(Debug, Default)]
pub struct Ptys {
    sessions: Mutex<HashMap<(String, u32), Arc<Session>>>,
}

/// One attachment to one terminal.
#[derive(Debug)]
pub struct Session {
    terminal: String,
    input: tokio::sync::Mutex<WriteHalf<Pipe>>,
    /// Hung up by `SendSignal`: the end event says killed.
    killed: AtomicBool,
}

impl Ptys {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session of the PTY whose shell is `pid` in `sandbox`.
    pub fn get(&self, sandbox: &str, pid: u32) -> Option<Arc<Session>> {
        self.lock().get(&(sandbox.to_string(), pid)).cloned()
    }

    /// Forgets `session` unless a newer attachment replaced it.
    fn forget(&self, sandbox: &str, pid: u32, session: &Arc<Session>) {
        let mut map = self.lock();
        let key = (sandbox.to_string(), pid);
        if map.get(&key).is_some_and(|s| Arc::ptr_eq(s, session)) {
            map.remove(&key);
        }
    }
}

/// The shell a PTY runs: E2B asks for an interactive login bash, which is
/// what a Hearth terminal starts by default; another program runs as
/// given, without arguments.
fn shell_of(config: &ProcessConfig) -> Result<Option<String>, RpcError> {
    let bash = matches!(config.cmd.as_str(), "/bin/bash" | "bash");
    let login_flags = config
        .args
        .iter()
        .all(|a| matches!(a.as_str(), "-i" | "-l" | "--login"));
    match (bash && login_flags, config.args.is_empty()) {
        (true, _) => Ok(None),
        (false, true) => Ok(Some(config.cmd.clone())),
        (false, false) => Err(RpcError::new(
            Code::Unimplemented,
            "a PTY runs a login shell or a program without arguments",
        )),
    }
}

fn event(e: process_event::Event) -> ProcessEvent {
    ProcessEvent { event: Some(e) }
}

/// Terminal dimensions from E2B's `PTY` message.
fn size_of(pty: &Pty) -> Result<(u16, u16), RpcError> {
    let size = pty
        .size
        .as_ref()
        .ok_or_else(|| RpcError::new(Code::InvalidArgument, "pty.size is required"))?;
    let dim = |v: u32, what: &str| {
        u16::try_from(v)
            .ok()
            .filter(|d| *d > 0)
            .ok_or_else(|| RpcError::new(Code::InvalidArgument, format!("pty.size.{what}: {v}")))
    };
    Ok((dim(size.cols, "cols")?, dim(size.rows, "rows")?))
}

/// Opens a terminal for `Start` and streams it.
pub async fn start(
    envd: &Envd,
    guest: Guest,
    config: ProcessConfig,
    pty: &Pty,
) -> Result<impl Stream<Item = Result<ProcessEvent, RpcError>> + Send, RpcError> {
    let (cols, rows) = size_of(pty)?;
    let info = guest
        .terminal_open(&PtyOpenRequest {
            cols,
            rows,
            shell: shell_of(&config)?,
            cwd: config.cwd.filter(|c| !c.is_empty()),
            env: config.envs.into_iter().collect(),
            user: envd.user.clone(),
        })
        .await?;
    attach(envd, guest, info.id, info.pid).await
}

/// Attaches to a terminal (replacing any earlier attachment): a start
/// event, the terminal's recent output and what follows as `pty` data,
/// then the shell's end.
pub async fn attach(
    envd: &Envd,
    guest: Guest,
    terminal: String,
    pid: u32,
) -> Result<impl Stream<Item = Result<ProcessEvent, RpcError>> + Send, RpcError> {
    let pipe = guest.terminal_attach(&terminal).await?;
    let (output, input) = tokio::io::split(pipe);
    let session = Arc::new(Session {
        terminal,
        input: tokio::sync::Mutex::new(input),
        killed: AtomicBool::new(false),
    });
    let state = envd.state.clone();
    let sandbox = envd.sandbox_id.clone();
    state
        .ptys
        .lock()
        .insert((sandbox.clone(), pid), session.clone());
    let start = event(process_event::Event::Start(process_event::StartEvent {
        pid,
    }));
    let data = ReaderStream::new(output).map(|chunk| {
        chunk
            .map(|b| {
                event(process_event::Event::Data(process_event::DataEvent {
                    output: Some(process_event::data_event::Output::Pty(b.to_vec())),
                }))
            })
            .map_err(|e| RpcError::new(Code::Unavailable, format!("terminal output: {e}")))
    });
    // Dropped with the stream, at its end or when the client goes away
    // first: the session is forgotten, its input half with it, so the
    // agent sees the attachment gone and the shell runs on, detached
    // (instead of blocking on output nobody reads).
    let attached = Attached {
        state,
        sandbox,
        pid,
        session,
    };
    let end = futures_util::stream::once(async move {
        let attached = attached;
        finish(&guest, &attached.session).await
    });
    Ok(futures_util::stream::once(async move { Ok(start) })
        .chain(data)
        .chain(end))
}

/// One attachment's place in [`Ptys`], given up when dropped.
struct Attached {
    state: std::sync::Arc<super::EnvdState>,
    sandbox: String,
    pid: u32,
    session: Arc<Session>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.state
            .ptys
            .forget(&self.sandbox, self.pid, &self.session);
    }
}

/// The end of an attachment's output: the shell's exit (and the terminal
/// closed), or an error when the terminal lives on (another client
/// attached).
async fn finish(guest: &Guest, session: &Session) -> Result<ProcessEvent, RpcError> {
    if session.killed.load(Ordering::SeqCst) {
        return Ok(ended(-1, "signal: killed"));
    }
    let info = guest.terminal_get(&session.terminal).await?;
    if !info.exited {
        return Err(RpcError::new(
            Code::Aborted,
            "another client attached to this PTY",
        ));
    }
    // The shell is gone: the terminal need not be kept.
    let _ = guest.terminal_close(&session.terminal).await;
    let code = info.exit_code.unwrap_or(-1);
    Ok(ended(code, &format!("exit status {code}")))
}

fn ended(exit_code: i32, status: &str) -> ProcessEvent {
    event(process_event::Event::End(process_event::EndEvent {
        exit_code,
        exited: exit_code >= 0,
        status: status.to_string(),
        error: None,
    }))
}

/// The PTY whose shell is `pid`.
#[derive(Debug)]
pub enum Found {
    /// A client of this server is attached.
    Attached(Arc<Session>),
    /// Its terminal runs with no client attached (the last one went away).
    Detached(String),
}

impl Found {
    pub fn terminal(&self) -> &str {
        match self {
            Found::Attached(s) => &s.terminal,
            Found::Detached(t) => t,
        }
    }

    pub async fn resize(&self, guest: &Guest, pty: &Pty) -> Result<(), RpcError> {
        let (cols, rows) = size_of(pty)?;
        guest.terminal_resize(self.terminal(), cols, rows).await?;
        Ok(())
    }

    /// Hangs the terminal up (its shell and jobs get SIGHUP, then SIGKILL).
    pub async fn kill(&self, guest: &Guest) -> Result<(), RpcError> {
        if let Found::Attached(s) = self {
            s.killed.store(true, Ordering::SeqCst);
        }
        guest.terminal_close(self.terminal()).await?;
        Ok(())
    }

    /// Input for the terminal. A detached one gets an attachment for
    /// input, whose output is read and dropped (the shell never waits on
    /// it) until a client connects or the shell ends.
    pub async fn write(
        &self,
        envd: &Envd,
        guest: &Guest,
        pid: u32,
        data: &[u8],
    ) -> Result<(), RpcError> {
        match self {
            Found::Attached(s) => s.write(data).await,
            Found::Detached(t) => input_only(envd, guest, t, pid).await?.write(data).await,
        }
    }
}

/// Attaches to terminal `terminal` for input only (see [`Found::write`]).
async fn input_only(
    envd: &Envd,
    guest: &Guest,
    terminal: &str,
    pid: u32,
) -> Result<Arc<Session>, RpcError> {
    let pipe = guest.terminal_attach(terminal).await?;
    let (mut output, input) = tokio::io::split(pipe);
    let session = Arc::new(Session {
        terminal: terminal.to_string(),
        input: tokio::sync::Mutex::new(input),
        killed: AtomicBool::new(false),
    });
    let attached = Attached {
        state: envd.state.clone(),
        sandbox: envd.sandbox_id.clone(),
        pid,
        session: session.clone(),
    };
    attached
        .state
        .ptys
        .lock()
        .insert((attached.sandbox.clone(), pid), session.clone());
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut output, &mut tokio::io::sink()).await;
        drop(attached);
    });
    Ok(session)
}

/// The PTY whose shell is `pid` in the sandbox: attached here, or found
/// among the guest's live terminals.
pub async fn find(envd: &Envd, guest: &Guest, pid: u32) -> Result<Option<Found>, RpcError> {
    if let Some(s) = envd.state.ptys.get(&envd.sandbox_id, pid) {
        return Ok(Some(Found::Attached(s)));
    }
    let live = guest.terminal_list().await?;
    Ok(live
        .into_iter()
        .find(|t| t.pid == pid && !t.exited)
        .map(|t| Found::Detached(t.id)))
}

impl Session {
    pub async fn write(&self, data: &[u8]) -> Result<(), RpcError> {
        let mut input = self.input.lock().await;
        let sent = input.write_all(data).await;
        sent.and(input.flush().await)
            .map_err(|e| RpcError::new(Code::Unavailable, format!("terminal input: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(cmd: &str, args: &[&str]) -> ProcessConfig {
        ProcessConfig {
            cmd: cmd.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn login_bash_is_the_default_shell_and_other_argv_is_refused() {
        assert_eq!(
            shell_of(&config("/bin/bash", &["-i", "-l"])).ok(),
            Some(None)
        );
        assert_eq!(
            shell_of(&config("/usr/bin/python3", &[])).ok(),
            Some(Some("/usr/bin/python3".into()))
        );
        let err = shell_of(&config("/bin/sh", &["-c", "ls"])).err();
        assert_eq!(err.map(|e| e.code), Some(Code::Unimplemented));
    }

    #[test]
    fn a_size_out_of_range_is_invalid() {
        let pty = |cols, rows| Pty {
            size: Some(hearth_e2b_proto::process::pty::Size { cols, rows }),
        };
        assert_eq!(size_of(&pty(80, 24)).ok(), Some((80, 24)));
        for bad in [pty(0, 24), pty(70_000, 24), Pty { size: None }] {
            assert_eq!(
                size_of(&bad).err().map(|e| e.code),
                Some(Code::InvalidArgument)
            );
        }
    }
}
