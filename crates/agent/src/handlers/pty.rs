//! PTY sessions: an interactive shell on a pseudo-terminal that outlives any
//! one client. A reader task drains the master all the time into a small
//! scrollback and, when a client is attached, into its response body; input,
//! resize and close act on the master. One client is attached at a time; a
//! new attach replaces the old one.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use bytes::Bytes;
use futures_util::StreamExt;
use hearth_agent_protocol::paths::parse_guest_path;
use hearth_agent_protocol::{routes, ErrorCode, PtyInfo, PtyOpenRequest, PtyResizeRequest};
use http::request::Parts;
use nix::fcntl::OFlag;
use nix::pty::PtyMaster;
use nix::sys::signal::Signal;
use nix::sys::termios::{tcgetattr, tcsetattr, InputFlags, SetArg};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{AgentRouter, AgentState};
use crate::error::{HandlerError, HandlerResult};
use crate::extract::JsonBody;
use crate::spawn::{self, CommandSpec, ExitWatch};
use crate::Agent;

/// Recent output replayed to a client that attaches.
const SCROLLBACK_BYTES: usize = 64 * 1024;
/// Exited sessions kept for `list`/`get` until deleted; the oldest go first.
const MAX_EXITED_SESSIONS: usize = 64;
/// Largest accepted terminal dimension.
const MAX_DIMENSION: u16 = 1000;
/// Between SIGHUP and SIGKILL on close.
const CLOSE_GRACE: Duration = Duration::from_millis(500);
/// How long a SIGKILLed shell may take to be reaped before close answers.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// After the shell exits, output still arriving from processes that kept the
/// terminal open is read for this long before the stream ends.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);
/// How long the end of output waits for the shell's exit to be recorded.
const EXIT_AFTER_OUTPUT: Duration = Duration::from_secs(1);
/// Largest chunk read from the master at once.
const READ_CHUNK: usize = 64 * 1024;
/// Chunks queued for an attached client before the reader waits for it.
const CLIENT_QUEUE: usize = 64;
const TERM_DEFAULT: &str = "xterm-256color";
const OCTET_STREAM: &str = "application/octet-stream";

/// `ioctl`s nix has no wrapper for.
mod ioctl {
    nix::ioctl_write_int_bad!(tiocsctty, libc::TIOCSCTTY);
    nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);
}

pub fn routes() -> AgentRouter {
    AgentRouter::new()
        .route(routes::PTY, get(list).post(open))
        .route(&format!("{}/{{id}}", routes::PTY), get(info).delete(close))
        .route(&format!("{}/{{id}}/io", routes::PTY), post(attach))
        .route(&format!("{}/{{id}}/resize", routes::PTY), post(resize))
}

// ---------------------------------------------------------------- handlers

async fn open(
    agent: AgentState,
    JsonBody(req): JsonBody<PtyOpenRequest>,
) -> HandlerResult<Json<PtyInfo>> {
    agent.ptys.open(&agent, &req).map(Json)
}

async fn list(agent: AgentState) -> Json<Vec<PtyInfo>> {
    Json(agent.ptys.list())
}

async fn info(agent: AgentState, PtyId(id): PtyId) -> HandlerResult<Json<PtyInfo>> {
    agent.ptys.get(&id).map(|s| Json(s.info()))
}

async fn resize(
    agent: AgentState,
    PtyId(id): PtyId,
    JsonBody(req): JsonBody<PtyResizeRequest>,
) -> HandlerResult<Json<PtyInfo>> {
    validate_size(req.cols, req.rows)?;
    let session = agent.ptys.get(&id)?;
    session.resize(req.cols, req.rows)?;
    Ok(Json(session.info()))
}

async fn close(agent: AgentState, PtyId(id): PtyId) -> HandlerResult<Json<PtyInfo>> {
    let session = agent.ptys.remove(&id)?;
    // In a task of its own: a client that hangs up mid-close must not leave
    // the shell half-killed.
    tokio::spawn(session.terminate())
        .await
        .map(Json)
        .map_err(|e| HandlerError::internal(format!("close pty {id}: {e}")))
}

/// Full duplex: the request body is terminal input, the response body is
/// terminal output (scrollback first), until the shell's output ends or
/// another client attaches.
async fn attach(agent: AgentState, PtyId(id): PtyId, body: Body) -> HandlerResult<Response> {
    let session = agent.ptys.get(&id)?;
    let (scrollback, live) = session.attach();
    let replay = futures_util::stream::iter((!scrollback.is_empty()).then_some(scrollback));
    let stream = match live {
        Some((rx, detach, generation)) => {
            tokio::spawn(pump_input(session, body, detach, generation));
            replay
                .chain(tokio_stream::wrappers::ReceiverStream::new(rx))
                .boxed()
        }
        None => replay.boxed(),
    };
    let stream = stream.map(Ok::<_, Infallible>);
    Ok((
        [(http::header::CONTENT_TYPE, OCTET_STREAM)],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The `{id}` path segment, with a typed error.
#[derive(Debug)]
struct PtyId(String);

impl<S: Send + Sync> FromRequestParts<S> for PtyId {
    type Rejection = HandlerError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| PtyId(id))
            .map_err(|e| HandlerError::bad_request(format!("invalid pty id: {}", e.body_text())))
    }
}

/// Copies one client's input into the terminal until the client ends its
/// side, is replaced, or the session closes. Never closes the terminal: a
/// client leaving is not end of input for the shell. A client that ends its
/// input cleanly is detached once all of it is written, which ends its
/// output stream: a host that closes its side and reads to the end knows
/// the shell got every byte it sent (dropping the stream instead could
/// discard input still in flight).
async fn pump_input(session: Arc<Session>, body: Body, detach: CancellationToken, generation: u64) {
    let mut chunks = body.into_data_stream();
    loop {
        let chunk = tokio::select! {
            _ = detach.cancelled() => return,
            _ = session.closed.cancelled() => return,
            c = chunks.next() => match c {
                Some(Ok(c)) => c,
                Some(Err(_)) => return,
                None => {
                    session.detach(generation);
                    return;
                }
            },
        };
        let written = tokio::select! {
            _ = detach.cancelled() => return,
            _ = session.closed.cancelled() => return,
            r = write_all(&session.master, &chunk) => r,
        };
        if let Err(e) = written {
            // EIO: nothing has the terminal open any more (the shell exited).
            tracing::debug!(pty = %session.id, error = %e, "pty input ended");
            return;
        }
    }
}

// ---------------------------------------------------------------- table

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
        // Runs in the forked child before exec: a session of its own, with
        // the terminal (already on fd 0) as its controlling terminal, so job
        // control and ^C work and closing the master hangs up everything in it.
        let become_terminal_leader = || -> io::Result<()> {
            nix::unistd::setsid()?;
            // SAFETY: fd 0 is the terminal slave; TIOCSCTTY takes an int.
            unsafe { ioctl::tiocsctty(0, 0) }?;
            Ok(())
        };
        // SAFETY: the closure only makes async-signal-safe system calls
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
        lock(&self.sessions).insert(session.id.clone(), session.clone());
        tokio::spawn(run_session(session));
        self.evict_exited();
        Ok(info)
    }

    pub fn list(&self) -> Vec<PtyInfo> {
        let mut sessions: Vec<_> = lock(&self.sessions).values().cloned().collect();
        sessions.sort_by_key(|s| s.seq);
        sessions.iter().map(|s| s.info()).collect()
    }

    fn get(&self, id: &str) -> HandlerResult<Arc<Session>> {
        lock(&self.sessions)
            .get(id)
            .cloned()
            .ok_or_else(|| not_found(id))
    }

    fn remove(&self, id: &str) -> HandlerResult<Arc<Session>> {
        lock(&self.sessions).remove(id).ok_or_else(|| not_found(id))
    }

    /// Forgets the oldest exited sessions beyond [`MAX_EXITED_SESSIONS`].
    fn evict_exited(&self) {
        let mut sessions = lock(&self.sessions);
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
        let sessions = lock(&self.sessions);
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

fn validate_size(cols: u16, rows: u16) -> HandlerResult<()> {
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

/// A new terminal of the given size: the master registered with the reactor
/// (non-blocking) and the slave. Both are close-on-exec from the start, so no
/// concurrently spawned process inherits them.
fn open_pty(cols: u16, rows: u16) -> io::Result<(AsyncFd<PtyMaster>, OwnedFd)> {
    use std::os::unix::fs::OpenOptionsExt;
    let master = nix::pty::posix_openpt(
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
    )?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let name = nix::pty::ptsname_r(&master)?;
    // std opens with O_CLOEXEC.
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&name)?;
    set_winsize(&master, cols, rows)?;
    // Line editing in cooked mode (backspace over a multi-byte character)
    // needs to know the terminal speaks UTF-8, like the LANG we set.
    let mut termios = tcgetattr(&slave)?;
    termios.input_flags |= InputFlags::IUTF8;
    tcsetattr(&slave, SetArg::TCSANOW, &termios)?;
    // SAFETY: the PtyMaster owns its fd and is moved into the AsyncFd, so the
    // fd stays open and the same for the AsyncFd's whole life.
    let master = unsafe { AsyncFd::register(master) }.map_err(|e| e.into_parts().1)?;
    Ok((master, OwnedFd::from(slave)))
}

fn set_winsize(master: &PtyMaster, cols: u16, rows: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: the fd is an open PTY master and `ws` is a valid winsize that
    // outlives the call; TIOCSWINSZ only reads it.
    unsafe { ioctl::tiocswinsz(master.as_raw_fd(), &ws) }?;
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------- session

#[derive(Debug)]
struct Session {
    id: String,
    /// Creation order, for listing and eviction.
    seq: u64,
    /// The shell; also its process group and session id.
    pid: u32,
    master: AsyncFd<PtyMaster>,
    /// (cols, rows)
    size: Mutex<(u16, u16)>,
    output: Mutex<Output>,
    exit: ExitWatch,
    /// Fired when the session is deleted or evicted: the reader and any
    /// input pump stop, and the master closes once they are gone.
    closed: CancellationToken,
}

#[derive(Debug, Default)]
struct Output {
    scrollback: VecDeque<u8>,
    client: Option<Client>,
    /// The reader is done: nothing more will be published.
    ended: bool,
    generation: u64,
}

/// A newly attached client's output queue, the token fired when it is
/// replaced, and its generation.
type Live = (mpsc::Receiver<Bytes>, CancellationToken, u64);

/// The attached client's output queue.
#[derive(Debug)]
struct Client {
    generation: u64,
    tx: mpsc::Sender<Bytes>,
    /// Fired when another client replaces this one.
    detach: CancellationToken,
}

impl Output {
    fn remember(&mut self, chunk: &[u8]) {
        let keep = chunk.len().min(SCROLLBACK_BYTES);
        self.scrollback.extend(&chunk[chunk.len() - keep..]);
        let excess = self.scrollback.len().saturating_sub(SCROLLBACK_BYTES);
        self.scrollback.drain(..excess);
    }
}

impl Session {
    fn info(&self) -> PtyInfo {
        let (cols, rows) = *lock(&self.size);
        PtyInfo {
            id: self.id.clone(),
            pid: self.pid,
            cols,
            rows,
            exited: self.exit.get().is_some(),
            exit_code: self.exit.get().map(|e| e.code),
        }
    }

    fn resize(&self, cols: u16, rows: u16) -> HandlerResult<()> {
        let mut size = lock(&self.size);
        set_winsize(self.master.get_ref(), cols, rows)
            .map_err(|e| HandlerError::internal(format!("resize pty {}: {e}", self.id)))?;
        *size = (cols, rows);
        Ok(())
    }

    /// Makes a new client the attached one. Returns the scrollback and,
    /// unless the output already ended, the live queue and the token that
    /// fires when this client is replaced.
    fn attach(&self) -> (Bytes, Option<Live>) {
        let mut out = lock(&self.output);
        let scrollback = Bytes::from(out.scrollback.iter().copied().collect::<Vec<u8>>());
        if out.ended {
            return (scrollback, None);
        }
        if let Some(old) = out.client.take() {
            old.detach.cancel();
        }
        out.generation += 1;
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        let detach = CancellationToken::new();
        out.client = Some(Client {
            generation: out.generation,
            tx,
            detach: detach.clone(),
        });
        (scrollback, Some((rx, detach, out.generation)))
    }

    /// Ends client `generation`'s output stream, if it is still the
    /// attached one (output goes on into the scrollback).
    fn detach(&self, generation: u64) {
        let mut out = lock(&self.output);
        if out.client.as_ref().map(|c| c.generation) == Some(generation) {
            if let Some(old) = out.client.take() {
                old.detach.cancel();
            }
        }
    }

    /// Records a chunk of output and hands it to the attached client, waiting
    /// while that client's queue is full (backpressure reaches the shell).
    async fn publish(&self, chunk: Bytes) {
        let client = {
            let mut out = lock(&self.output);
            out.remember(&chunk);
            out.client
                .as_ref()
                .map(|c| (c.generation, c.tx.clone(), c.detach.clone()))
        };
        let Some((generation, tx, detach)) = client else {
            return;
        };
        let delivered = tokio::select! {
            r = tx.send(chunk) => r.is_ok(),
            _ = detach.cancelled() => true,
            _ = self.closed.cancelled() => true,
        };
        if !delivered {
            // The client went away; keep reading into the scrollback only.
            let mut out = lock(&self.output);
            if out.client.as_ref().map(|c| c.generation) == Some(generation) {
                out.client = None;
            }
        }
    }

    /// No more output: ends the attached client's stream.
    fn end_output(&self) {
        let mut out = lock(&self.output);
        out.ended = true;
        out.client = None;
    }

    /// Hangs up the shell, kills what is left of its session after a grace
    /// period, and stops the session's tasks.
    async fn terminate(self: Arc<Self>) -> PtyInfo {
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

/// Reads the terminal until its output ends, then marks the session's
/// output ended.
async fn run_session(session: Arc<Session>) {
    let drain = CancellationToken::new();
    let watcher = {
        let session = session.clone();
        let drain = drain.clone();
        let mut exit = session.exit.clone();
        tokio::spawn(async move {
            tokio::select! {
                e = exit.wait() => {
                    tracing::info!(pty = %session.id, code = e.code, "pty shell exited");
                }
                _ = session.closed.cancelled() => {}
            }
            // Normally the reader sees EIO right away; a background job that
            // kept the terminal open does not hold the stream open forever.
            tokio::time::sleep(DRAIN_AFTER_EXIT).await;
            drain.cancel();
        })
    };
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let read = tokio::select! {
            biased;
            _ = session.closed.cancelled() => break,
            _ = drain.cancelled() => break,
            r = read_some(&session.master, &mut buf) => r,
        };
        match read {
            Ok(0) => break,
            Ok(n) => session.publish(Bytes::copy_from_slice(&buf[..n])).await,
            // EIO: every slave fd is closed (the shell and its jobs are gone).
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => {
                tracing::warn!(pty = %session.id, error = %e, "read pty");
                break;
            }
        }
    }
    // The output normally ends as the shell exits: wait (briefly) for its
    // exit to be recorded, so a client that sees the end can ask for the
    // exit code and get it.
    if !session.closed.is_cancelled() {
        let mut exit = session.exit.clone();
        let _ = tokio::time::timeout(EXIT_AFTER_OUTPUT, exit.wait()).await;
    }
    session.end_output();
    watcher.abort();
}

async fn read_some(master: &AsyncFd<PtyMaster>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = master.readable().await?;
        match guard.try_io(|fd| {
            let mut m: &PtyMaster = fd.get_ref();
            m.read(buf)
        }) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn write_all(master: &AsyncFd<PtyMaster>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = master.writable().await?;
        match guard.try_io(|fd| {
            let mut m: &PtyMaster = fd.get_ref();
            m.write(data)
        }) {
            Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
    Ok(())
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
    fn scrollback_keeps_only_the_newest_bytes() {
        let mut out = Output::default();
        out.remember(&vec![b'a'; SCROLLBACK_BYTES - 10]);
        out.remember(b"0123456789abcdef");
        assert_eq!(out.scrollback.len(), SCROLLBACK_BYTES);
        let tail: Vec<u8> = out
            .scrollback
            .iter()
            .rev()
            .take(16)
            .rev()
            .copied()
            .collect();
        assert_eq!(tail, b"0123456789abcdef");
        out.remember(&vec![b'z'; SCROLLBACK_BYTES * 2]);
        assert_eq!(out.scrollback.len(), SCROLLBACK_BYTES);
        assert!(out.scrollback.iter().all(|&b| b == b'z'));
    }

    #[test]
    fn session_field_parsed_after_command_name() {
        let stat = "1234 (we ird) (x) S 1 1234 1200 34816 1234 4194560";
        assert_eq!(stat_session(stat), Some(1200));
        assert_eq!(stat_session("garbage"), None);
    }

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
