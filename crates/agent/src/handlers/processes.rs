//! Background processes: started by name, outliving the request, with output
//! in a bounded ring buffer that a stream replays before following, so a
//! client that drops can reconnect without losing output. Records stay after
//! exit so the exit code can be read.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::Path;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Json;
use bytes::Bytes;
use hearth_agent_protocol::{
    routes, ErrorCode, KillRequest, OutputEvent, ProcessInfo, ProcessLogs, ProcessState,
    ProcessStreamQuery, SignalRequest, StartProcessRequest, StdinRequest, StreamKind,
    DEFAULT_KILL_GRACE_MS,
};
use nix::sys::signal::Signal;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};

use super::exec::{spawn_pump, validate_command};
use super::{AgentRouter, AgentState};
use crate::error::{HandlerError, HandlerResult};
use crate::extract::{JsonBody, QueryArgs};
use crate::spawn::{self, CommandSpec, ExitInfo, ExitWatch};
use crate::stream::ndjson_response;

pub fn routes() -> AgentRouter {
    AgentRouter::new()
        .route(routes::PROCESSES, post(start).get(list))
        .route("/v1/processes/{pid}", get(get_one).delete(kill))
        .route("/v1/processes/{pid}/signal", post(signal))
        .route("/v1/processes/{pid}/stdin", post(stdin))
        .route("/v1/processes/{pid}/logs", get(logs))
        .route("/v1/processes/{pid}/stream", get(stream))
}

/// Every background process the agent started, running or exited.
#[derive(Debug, Default)]
pub struct ProcessTable {
    procs: Mutex<BTreeMap<u32, Arc<Process>>>,
}

#[derive(Debug)]
struct Process {
    pid: u32,
    name: Option<String>,
    command: String,
    started_at_ms: i64,
    stdin: tokio::sync::Mutex<Option<pipe::Sender>>,
    output: Mutex<Ring>,
    /// Bumped on every new chunk and at exit; streams wait on it.
    changed: watch::Sender<u64>,
    exit: ExitWatch,
    exited_at_ms: Mutex<Option<i64>>,
}

/// Output chunks with sequence numbers, oldest dropped first past `cap` bytes.
#[derive(Debug)]
struct Ring {
    chunks: VecDeque<(u64, StreamKind, Bytes)>,
    bytes: usize,
    cap: usize,
    next_seq: u64,
    dropped_bytes: u64,
    /// Set once the pump has drained both pipes.
    closed: bool,
}

impl Ring {
    fn new(cap: usize) -> Self {
        Ring {
            chunks: VecDeque::new(),
            bytes: 0,
            cap,
            next_seq: 0,
            dropped_bytes: 0,
            closed: false,
        }
    }

    fn push(&mut self, kind: StreamKind, data: Bytes) {
        // A single chunk larger than the whole buffer keeps only its tail.
        let data = if data.len() > self.cap {
            self.dropped_bytes += (data.len() - self.cap) as u64;
            data.slice(data.len() - self.cap..)
        } else {
            data
        };
        self.bytes += data.len();
        self.chunks.push_back((self.next_seq, kind, data));
        self.next_seq += 1;
        while self.bytes > self.cap {
            match self.chunks.pop_front() {
                Some((_, _, old)) => {
                    self.bytes -= old.len();
                    self.dropped_bytes += old.len() as u64;
                }
                None => break,
            }
        }
    }

    /// Chunks with `seq >= from`, and how many bytes before them are gone.
    fn since(&self, from: u64) -> (Vec<(u64, StreamKind, Bytes)>, bool) {
        let first = self.chunks.front().map(|c| c.0).unwrap_or(self.next_seq);
        let gap = from < first;
        let out = self
            .chunks
            .iter()
            .filter(|c| c.0 >= from)
            .cloned()
            .collect();
        (out, gap)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Process {
    fn info(&self) -> ProcessInfo {
        let exit = self.exit.get();
        ProcessInfo {
            pid: self.pid,
            name: self.name.clone(),
            command: self.command.clone(),
            state: if exit.is_some() {
                ProcessState::Exited
            } else {
                ProcessState::Running
            },
            exit_code: exit.map(|e| e.code),
            signal: exit.and_then(|e| e.signal),
            started_at_ms: self.started_at_ms,
            exited_at_ms: *self.exited_at_ms.lock(),
        }
    }
}

impl ProcessTable {
    fn get(&self, pid: u32) -> HandlerResult<Arc<Process>> {
        self.procs.lock().get(&pid).cloned().ok_or_else(|| {
            HandlerError::new(
                ErrorCode::ProcessNotFound,
                format!("no process with pid {pid}"),
            )
        })
    }

    fn insert(&self, p: Arc<Process>, max_exited: usize) {
        let mut procs = self.procs.lock();
        // A recycled pid replaces the exited record that held it.
        procs.insert(p.pid, p);
        let exited: Vec<(i64, u32)> = procs
            .values()
            .filter_map(|p| p.exit.get().map(|_| (p.started_at_ms, p.pid)))
            .collect();
        if exited.len() > max_exited {
            let mut exited = exited;
            exited.sort();
            for (_, pid) in exited.iter().take(exited.len() - max_exited) {
                procs.remove(pid);
            }
        }
    }

    fn all(&self) -> Vec<ProcessInfo> {
        self.procs.lock().values().map(|p| p.info()).collect()
    }
}

async fn start(
    agent: AgentState,
    JsonBody(req): JsonBody<StartProcessRequest>,
) -> HandlerResult<Json<ProcessInfo>> {
    validate_command(&req.command, &req.env)?;
    let spec = CommandSpec {
        cwd: req.cwd.as_deref(),
        env: Some(&req.env),
        user: req.user.as_deref(),
    };
    let (mut cmd, _) = spawn::shell_command(&agent, &req.command, &spec)?;
    let mut child = agent
        .reaper
        .spawn(&mut cmd)
        .map_err(|e| spawn::spawn_error(&e, "process"))?;
    let (changed, _) = watch::channel(0u64);
    let proc = Arc::new(Process {
        pid: child.pid,
        name: req.name.clone(),
        command: req.command.clone(),
        started_at_ms: now_ms(),
        stdin: tokio::sync::Mutex::new(child.stdin.take()),
        output: Mutex::new(Ring::new(agent.config.process_buffer_bytes.max(4096))),
        changed,
        exit: child.exit.clone(),
        exited_at_ms: Mutex::new(None),
    });
    agent
        .processes
        .insert(proc.clone(), agent.config.max_exited_processes);
    tokio::spawn(collect_output(
        proc.clone(),
        spawn_pump(child.stdout.take(), child.stderr.take()),
    ));
    let p = proc.clone();
    let mut exit = child.exit;
    tokio::spawn(async move {
        let e = exit.wait().await;
        *p.exited_at_ms.lock() = Some(now_ms());
        p.changed.send_modify(|v| *v += 1);
        tracing::info!(pid = p.pid, code = e.code, "background process exited");
    });
    tracing::info!(pid = proc.pid, name = ?proc.name, "background process started");
    Ok(Json(proc.info()))
}

/// Moves output from the pipes into the ring buffer until both close. A
/// child that inherited the pipes keeps them open after the process exits;
/// its output still lands in the buffer.
async fn collect_output(p: Arc<Process>, mut rx: mpsc::Receiver<(StreamKind, Bytes)>) {
    while let Some((kind, data)) = rx.recv().await {
        p.output.lock().push(kind, data);
        p.changed.send_modify(|v| *v += 1);
    }
    p.output.lock().closed = true;
    p.changed.send_modify(|v| *v += 1);
}

async fn list(agent: AgentState) -> Json<Vec<ProcessInfo>> {
    Json(agent.processes.all())
}

async fn get_one(agent: AgentState, Path(pid): Path<u32>) -> HandlerResult<Json<ProcessInfo>> {
    Ok(Json(agent.processes.get(pid)?.info()))
}

/// Parses `SIGINT`, `INT`, `int` or `2`.
pub(crate) fn parse_signal(s: &str) -> HandlerResult<Signal> {
    let bad = || HandlerError::new(ErrorCode::InvalidSignal, format!("unknown signal {s:?}"));
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.trim().to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| bad())
}

async fn signal(
    agent: AgentState,
    Path(pid): Path<u32>,
    JsonBody(req): JsonBody<SignalRequest>,
) -> HandlerResult<Json<ProcessInfo>> {
    let sig = parse_signal(&req.signal)?;
    let p = agent.processes.get(pid)?;
    if p.exit.get().is_none() {
        // The whole group, like a terminal: Ctrl-C reaches the shell's children.
        spawn::signal_group(p.pid, sig);
    }
    Ok(Json(p.info()))
}

async fn stdin(
    agent: AgentState,
    Path(pid): Path<u32>,
    JsonBody(req): JsonBody<StdinRequest>,
) -> HandlerResult<Json<ProcessInfo>> {
    let p = agent.processes.get(pid)?;
    let mut guard = p.stdin.lock().await;
    if let Some(data) = req.data.as_ref().filter(|d| !d.0.is_empty()) {
        let pipe = guard.as_mut().ok_or_else(|| {
            HandlerError::new(
                ErrorCode::BadRequest,
                format!("stdin of process {pid} is closed"),
            )
        })?;
        pipe.write_all(&data.0).await.map_err(|e| {
            HandlerError::new(
                ErrorCode::BadRequest,
                format!("write stdin of process {pid}: {e}"),
            )
        })?;
    }
    if req.eof {
        guard.take();
    }
    drop(guard);
    Ok(Json(p.info()))
}

async fn kill(
    agent: AgentState,
    Path(pid): Path<u32>,
    body: axum::body::Bytes,
) -> HandlerResult<Json<ProcessInfo>> {
    let req: KillRequest = if body.is_empty() {
        KillRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| HandlerError::bad_request(format!("invalid JSON body: {e}")))?
    };
    let p = agent.processes.get(pid)?;
    let grace = Duration::from_millis(req.grace_ms.unwrap_or(DEFAULT_KILL_GRACE_MS));
    let mut exit = p.exit.clone();
    if exit.get().is_none() {
        spawn::signal_group(p.pid, Signal::SIGTERM);
        if tokio::time::timeout(grace, exit.wait()).await.is_err() {
            spawn::signal_group(p.pid, Signal::SIGKILL);
            exit.wait().await;
        }
    }
    // Anything left in its group (children that ignored SIGTERM) goes too.
    spawn::signal_group(p.pid, Signal::SIGKILL);
    Ok(Json(p.info()))
}

async fn logs(agent: AgentState, Path(pid): Path<u32>) -> HandlerResult<Json<ProcessLogs>> {
    let p = agent.processes.get(pid)?;
    let ring = p.output.lock();
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    for (_, kind, data) in &ring.chunks {
        match kind {
            StreamKind::Stdout => stdout.extend_from_slice(data),
            StreamKind::Stderr => stderr.extend_from_slice(data),
        }
    }
    Ok(Json(ProcessLogs {
        stdout: stdout.into(),
        stderr: stderr.into(),
        dropped_bytes: ring.dropped_bytes,
    }))
}

async fn stream(
    agent: AgentState,
    Path(pid): Path<u32>,
    QueryArgs(q): QueryArgs<ProcessStreamQuery>,
) -> HandlerResult<Response> {
    let p = agent.processes.get(pid)?;
    let (tx, rx) = mpsc::channel(64);
    let mut cursor = q.from_seq.unwrap_or(0);
    tokio::spawn(async move {
        let mut changed = p.changed.subscribe();
        loop {
            changed.borrow_and_update();
            let (chunks, gap, closed, dropped) = {
                let ring = p.output.lock();
                let (chunks, gap) = ring.since(cursor);
                (chunks, gap, ring.closed, ring.dropped_bytes)
            };
            if gap
                && tx
                    .send(OutputEvent::Dropped { bytes: dropped })
                    .await
                    .is_err()
            {
                return;
            }
            for (seq, stream, data) in chunks {
                cursor = seq + 1;
                let frame = OutputEvent::Output {
                    seq,
                    stream,
                    data: data.to_vec().into(),
                };
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
            // The process is done and its pipes are drained: nothing more comes.
            if let (Some(e), true) = (p.exit.get(), closed) {
                let _ = tx.send(exit_frame(&p, e)).await;
                return;
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    });
    Ok(ndjson_response(rx))
}

fn exit_frame(p: &Process, e: ExitInfo) -> OutputEvent {
    let exited = p.exited_at_ms.lock().unwrap_or_else(now_ms);
    OutputEvent::Exit {
        exit_code: e.code,
        signal: e.signal,
        timed_out: false,
        duration_ms: (exited - p.started_at_ms).max(0) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_drops_oldest_and_reports_gap() {
        let mut r = Ring::new(10);
        r.push(StreamKind::Stdout, Bytes::from_static(b"aaaa"));
        r.push(StreamKind::Stderr, Bytes::from_static(b"bbbb"));
        r.push(StreamKind::Stdout, Bytes::from_static(b"cccc"));
        assert_eq!(r.bytes, 8);
        assert_eq!(r.dropped_bytes, 4);
        let (chunks, gap) = r.since(0);
        assert!(gap);
        assert_eq!(chunks.iter().map(|c| c.0).collect::<Vec<_>>(), vec![1, 2]);
        let (chunks, gap) = r.since(2);
        assert!(!gap);
        assert_eq!(chunks.len(), 1);
    }

    #[test]
    fn oversized_chunk_keeps_its_tail() {
        let mut r = Ring::new(4);
        r.push(StreamKind::Stdout, Bytes::from_static(b"0123456789"));
        let (chunks, _) = r.since(0);
        assert_eq!(&chunks[0].2[..], b"6789");
        assert_eq!(r.dropped_bytes, 6);
    }

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("SIGINT").unwrap(), Signal::SIGINT);
        assert_eq!(parse_signal("term").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(
            parse_signal("SIGNOPE").unwrap_err().code,
            ErrorCode::InvalidSignal
        );
        assert_eq!(
            parse_signal("99").unwrap_err().code,
            ErrorCode::InvalidSignal
        );
    }
}
