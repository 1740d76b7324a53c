//! `exec`: run `/bin/sh -c CMD` to completion, answered whole (output capped
//! per stream) or streamed as NDJSON frames in the order output was read.

use std::time::{Duration, Instant};

use axum::response::Response;
use axum::routing::post;
use axum::Json;
use bytes::Bytes;
use hearth_agent_protocol::DEFAULT_MAX_OUTPUT_BYTES;
use hearth_agent_protocol::{routes, ExecRequest, ExecResult, OutputEvent, StreamKind};
use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use super::{AgentRouter, AgentState};
use crate::error::{HandlerError, HandlerResult};
use crate::extract::JsonBody;
use crate::spawn::{self, CommandSpec, ExitInfo, ExitWatch, GroupKillGuard};
use crate::stream::ndjson_response;
use crate::Agent;

/// How long output is still collected after the command exited, for
/// children that inherited its pipes (a daemon started with `&`).
const LINGER: Duration = Duration::from_millis(100);

/// Read size per pipe read.
const CHUNK: usize = 64 * 1024;

pub fn routes() -> AgentRouter {
    AgentRouter::new()
        .route(routes::EXEC, post(exec))
        .route(routes::EXEC_STREAM, post(exec_stream))
}

/// A started command whose group dies if this is dropped before it exits.
struct Running {
    output: mpsc::Receiver<(StreamKind, Bytes)>,
    exit: ExitWatch,
    guard: GroupKillGuard,
    pid: u32,
    started: Instant,
    timeout: Option<Duration>,
}

/// What the command's own run produced, independent of how output is consumed.
struct Finished {
    exit: ExitInfo,
    timed_out: bool,
    duration_ms: u64,
}

/// Validates the fields every command request shares.
pub(crate) fn validate_command(
    command: &str,
    env: &std::collections::BTreeMap<String, String>,
) -> HandlerResult<()> {
    if command.contains('\0') {
        return Err(HandlerError::bad_request("command contains a NUL byte"));
    }
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(HandlerError::bad_request(format!(
                "invalid env variable {k:?}"
            )));
        }
    }
    Ok(())
}

fn start(agent: &Agent, req: &ExecRequest) -> HandlerResult<Running> {
    validate_command(&req.command, &req.env)?;
    if req.timeout_ms == Some(0) {
        return Err(HandlerError::bad_request("timeout_ms must be positive"));
    }
    let spec = CommandSpec {
        cwd: req.cwd.as_deref(),
        env: Some(&req.env),
        user: req.user.as_deref(),
    };
    let (mut cmd, _) = spawn::shell_command(agent, &req.command, &spec)?;
    if req.stdin.is_none() {
        cmd.stdin(std::process::Stdio::null());
    }
    let started = Instant::now();
    let mut child = agent
        .reaper
        .spawn(&mut cmd)
        .map_err(|e| spawn::spawn_error(&e, "command"))?;
    let guard = GroupKillGuard::new(child.pid);
    if let (Some(data), Some(mut stdin)) = (req.stdin.clone(), child.stdin.take()) {
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            // A command that exits without reading its stdin makes this fail: fine.
            let _ = stdin.write_all(&data.0).await;
        });
    }
    Ok(Running {
        output: spawn_pump(child.stdout.take(), child.stderr.take()),
        exit: child.exit,
        guard,
        pid: child.pid,
        started,
        timeout: req.timeout_ms.map(Duration::from_millis),
    })
}

/// Reads both pipes until both close, sending chunks in the order they were
/// read. The channel is bounded: a slow consumer slows the command down
/// instead of growing memory.
pub(crate) fn spawn_pump(
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
) -> mpsc::Receiver<(StreamKind, Bytes)> {
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(async move {
        let mut out = stdout;
        let mut err = stderr;
        let mut out_buf = vec![0u8; CHUNK];
        let mut err_buf = vec![0u8; CHUNK];
        while out.is_some() || err.is_some() {
            let (kind, n) = tokio::select! {
                r = read_some(&mut out, &mut out_buf), if out.is_some() => (StreamKind::Stdout, r),
                r = read_some(&mut err, &mut err_buf), if err.is_some() => (StreamKind::Stderr, r),
            };
            let n = match n {
                Some(n) => n,
                None => {
                    match kind {
                        StreamKind::Stdout => out = None,
                        StreamKind::Stderr => err = None,
                    }
                    continue;
                }
            };
            let buf = match kind {
                StreamKind::Stdout => &out_buf,
                StreamKind::Stderr => &err_buf,
            };
            if tx
                .send((kind, Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    rx
}

/// One read; `None` at EOF or error.
async fn read_some(pipe: &mut Option<pipe::Receiver>, buf: &mut [u8]) -> Option<usize> {
    let p = pipe.as_mut()?;
    match p.read(buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}

impl Running {
    /// Drives the command to its end, handing every output chunk to
    /// `on_output` (which returns false when its consumer is gone: then the
    /// group is killed). Enforces the timeout.
    async fn run(mut self, mut on_output: impl AsyncSink) -> Option<Finished> {
        let deadline = self.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut timed_out = false;
        let mut exit_watch = self.exit.clone();
        let mut exit: Option<ExitInfo> = None;
        let mut output_open = true;
        // Phase 1: until the command exits.
        while exit.is_none() {
            tokio::select! {
                chunk = self.output.recv(), if output_open => match chunk {
                    Some((kind, data)) => {
                        if !on_output.send(kind, data).await {
                            return None; // guard kills the group
                        }
                    }
                    None => output_open = false,
                },
                e = exit_watch.wait() => exit = Some(e),
                _ = on_output.gone() => return None, // guard kills the group
                _ = sleep_until(deadline), if !timed_out => {
                    timed_out = true;
                    spawn::signal_group(self.pid, Signal::SIGKILL);
                }
            }
        }
        let duration_ms = self.started.elapsed().as_millis() as u64;
        self.guard.disarm();
        // Phase 2: output still in the pipes, or from children holding them.
        let linger = tokio::time::Instant::now() + LINGER;
        while output_open {
            tokio::select! {
                chunk = self.output.recv() => match chunk {
                    Some((kind, data)) => {
                        if !on_output.send(kind, data).await {
                            break;
                        }
                    }
                    None => output_open = false,
                },
                _ = tokio::time::sleep_until(linger) => break,
            }
        }
        if output_open {
            // A daemon still holds the pipes: keep draining so its writes
            // never block or hit SIGPIPE, but stop reporting.
            let mut rest = self.output;
            tokio::spawn(async move { while rest.recv().await.is_some() {} });
        }
        let exit = exit.unwrap_or(ExitInfo {
            code: -1,
            signal: None,
        });
        Some(Finished {
            exit,
            timed_out,
            duration_ms,
        })
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Where output goes while a command runs.
trait AsyncSink {
    async fn send(&mut self, kind: StreamKind, data: Bytes) -> bool;
    /// Resolves when nobody will read the output any more.
    async fn gone(&self);
}

/// Collects output in memory up to a cap per stream.
struct Collect {
    cap: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdout_truncated: bool,
    stderr_truncated: bool,
}

impl AsyncSink for &mut Collect {
    async fn send(&mut self, kind: StreamKind, data: Bytes) -> bool {
        let (buf, truncated) = match kind {
            StreamKind::Stdout => (&mut self.stdout, &mut self.stdout_truncated),
            StreamKind::Stderr => (&mut self.stderr, &mut self.stderr_truncated),
        };
        let room = self.cap.saturating_sub(buf.len());
        if data.len() > room {
            *truncated = true;
        }
        buf.extend_from_slice(&data[..data.len().min(room)]);
        true
    }

    async fn gone(&self) {
        // The request future itself is dropped when the client resets it.
        std::future::pending().await
    }
}

/// Forwards output as stream frames.
struct Frames {
    tx: mpsc::Sender<OutputEvent>,
    seq: u64,
}

impl AsyncSink for &mut Frames {
    async fn send(&mut self, stream: StreamKind, data: Bytes) -> bool {
        let seq = self.seq;
        self.seq += 1;
        self.tx
            .send(OutputEvent::Output {
                seq,
                stream,
                data: data.to_vec().into(),
            })
            .await
            .is_ok()
    }

    async fn gone(&self) {
        self.tx.closed().await
    }
}

fn exit_code(f: &Finished) -> i32 {
    if f.timed_out {
        -1
    } else {
        f.exit.code
    }
}

async fn exec(
    agent: AgentState,
    JsonBody(req): JsonBody<ExecRequest>,
) -> HandlerResult<Json<ExecResult>> {
    let running = start(&agent, &req)?;
    let cap = req.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT_BYTES);
    let mut collect = Collect {
        cap: usize::try_from(cap).unwrap_or(usize::MAX),
        stdout: Vec::new(),
        stderr: Vec::new(),
        stdout_truncated: false,
        stderr_truncated: false,
    };
    let finished = running
        .run(&mut collect)
        .await
        .ok_or_else(|| HandlerError::internal("output collection stopped"))?;
    Ok(Json(ExecResult {
        stdout: collect.stdout.into(),
        stderr: collect.stderr.into(),
        exit_code: exit_code(&finished),
        signal: finished.exit.signal,
        duration_ms: finished.duration_ms,
        timed_out: finished.timed_out,
        stdout_truncated: collect.stdout_truncated,
        stderr_truncated: collect.stderr_truncated,
    }))
}

async fn exec_stream(
    agent: AgentState,
    JsonBody(req): JsonBody<ExecRequest>,
) -> HandlerResult<Response> {
    let running = start(&agent, &req)?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut frames = Frames {
            tx: tx.clone(),
            seq: 0,
        };
        // `None`: the client went away and the group was killed.
        if let Some(f) = running.run(&mut frames).await {
            let _ = tx
                .send(OutputEvent::Exit {
                    exit_code: exit_code(&f),
                    signal: f.exit.signal,
                    timed_out: f.timed_out,
                    duration_ms: f.duration_ms,
                })
                .await;
        }
    });
    Ok(ndjson_response(rx))
}
