//! `/sandboxes/{id}/processes` (background processes) and
//! `/sandboxes/{id}/terminals` (PTY shells over a WebSocket), proxied to the
//! guest agent, which owns the processes, their output ring buffers and the
//! terminals; this module only validates, translates and bridges bytes.

use std::collections::BTreeMap;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use hearth_agent_protocol::{
    Base64Bytes, ProcessInfo, ProcessState, PtyOpenRequest, StartProcessRequest, StdinRequest,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::exec::{async_stream, forward_output};
use super::openapi::{
    Data, DataPage, E404And422, EventStream, LastEventId, ProcessId, SandboxId, TerminalId, E404,
    PROC, TERM,
};
use super::{data, page, parse_page, sse, ApiJson, AppState, PageQuery};
use crate::core::clock::rfc3339;
use crate::core::guest::{Guest, Pipe};
use crate::core::keys::Caller;
use crate::error::{ApiError, ApiResult, FieldError};

/// Lines `logs` returns per stream when `tail` is absent.
const DEFAULT_TAIL: usize = 200;
/// Largest accepted `tail`.
const MAX_TAIL: usize = 100_000;
/// Largest terminal dimension (the agent's limit too).
const MAX_DIMENSION: i64 = 1000;
/// Terminal size when the body leaves it out.
const DEFAULT_COLS: i64 = 80;
const DEFAULT_ROWS: i64 = 24;
/// Largest chunk of terminal output sent as one WebSocket frame.
const WS_CHUNK: usize = 64 * 1024;
/// How long a detached terminal bridge waits for the agent to confirm it
/// wrote the client's last input (by ending the output stream).
const DETACH_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Linux signal numbers 1-31 by name (the guest is Linux on x86_64 or
/// aarch64, which share these numbers).
pub(super) const SIGNALS: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start, list))
        .routes(routes!(get_one, kill))
        .routes(routes!(signal))
        .routes(routes!(stdin))
        .routes(routes!(logs))
        .routes(routes!(stream))
        .routes(routes!(open_terminal))
        .routes(routes!(close_terminal))
        .routes(routes!(terminal_ws))
}

// ---------------------------------------------------------------- bodies

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = ProcessStartBody)]
#[serde(default)]
pub struct StartBody {
    /// Run through `/bin/sh -c`; not blank, without NUL.
    #[schema(
        value_type = String,
        required = true,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$",
        example = "python3 -m http.server 8000"
    )]
    pub command: Option<String>,
    /// Alias of `command`.
    #[schema(deprecated)]
    pub cmd: Option<String>,
    /// Default `/workspace`.
    pub cwd: Option<String>,
    /// Added to the sandbox's env.
    #[schema(schema_with = super::openapi::command_env)]
    pub env: BTreeMap<String, String>,
    /// At most 256 bytes, without NUL.
    #[schema(max_length = 256, pattern = r"^[^\u0000]*$")]
    pub name: Option<String>,
    /// Default `sandbox`.
    pub user: Option<String>,
}

impl StartBody {
    pub fn validate(self) -> ApiResult<StartProcessRequest> {
        let mut bad = Vec::new();
        let command = self.command.or(self.cmd).unwrap_or_default();
        if command.trim().is_empty() {
            bad.push(FieldError::new("command", "is required"));
        }
        if command.contains('\0') {
            bad.push(FieldError::new("command", "cannot hold NUL"));
        }
        if let Some(name) = &self.name {
            if name.len() > 256 || name.contains('\0') {
                bad.push(FieldError::new(
                    "name",
                    "must be at most 256 bytes without NUL",
                ));
            }
        }
        check_env(&self.env, &mut bad);
        if !bad.is_empty() {
            return Err(ApiError::validation(bad));
        }
        Ok(StartProcessRequest {
            command,
            name: self.name.filter(|n| !n.is_empty()),
            cwd: self.cwd.filter(|c| !c.is_empty()),
            env: self.env,
            user: self.user.filter(|u| !u.is_empty()),
        })
    }
}

fn check_env(env: &BTreeMap<String, String>, bad: &mut Vec<FieldError>) {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            bad.push(FieldError::new(format!("env.{k}"), "invalid name"));
        } else if v.contains('\0') {
            bad.push(FieldError::new(format!("env.{k}"), "cannot hold NUL"));
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct SignalBody {
    /// A name (`"SIGINT"`, `"int"`) or a number (`2`, `"2"`).
    #[schema(schema_with = super::openapi::signal, required = true)]
    pub signal: Option<Value>,
}

/// A signal as the agent takes it (`"SIGTERM"`), from a name with or
/// without `SIG`, any case, or a number 1-31 (as JSON number or string).
pub fn parse_signal(v: Option<&Value>) -> ApiResult<String> {
    let bad = || {
        ApiError::field(
            "signal",
            "must be a signal name such as \"SIGTERM\" or a number 1-31",
        )
    };
    let by_number = |n: u64| {
        usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| SIGNALS.get(i))
            .map(|s| format!("SIG{s}"))
    };
    match v {
        None | Some(Value::Null) => Err(ApiError::field("signal", "is required")),
        Some(Value::Number(n)) => n.as_u64().and_then(by_number).ok_or_else(bad),
        Some(Value::String(s)) => {
            let s = s.trim();
            if let Ok(n) = s.parse::<u64>() {
                return by_number(n).ok_or_else(bad);
            }
            let upper = s.to_ascii_uppercase();
            let name = upper.strip_prefix("SIG").unwrap_or(&upper);
            SIGNALS
                .iter()
                .find(|known| **known == name)
                .map(|s| format!("SIG{s}"))
                .ok_or_else(bad)
        }
        Some(_) => Err(bad()),
    }
}

/// `data` or `data_base64` (not both), or `eof: true` alone.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct StdinBody {
    /// UTF-8 text.
    pub data: Option<String>,
    #[schema(content_encoding = "base64")]
    pub data_base64: Option<String>,
    /// Close stdin after writing.
    pub eof: bool,
}

impl StdinBody {
    pub fn validate(self) -> ApiResult<StdinRequest> {
        let data = match (self.data, self.data_base64) {
            (Some(_), Some(_)) => {
                return Err(ApiError::field(
                    "data_base64",
                    "cannot be sent together with data",
                ))
            }
            (Some(s), None) => Some(Base64Bytes::from(s.into_bytes())),
            (None, Some(b)) => match base64::engine::general_purpose::STANDARD.decode(b.trim()) {
                Ok(v) => Some(Base64Bytes::from(v)),
                Err(_) => return Err(ApiError::field("data_base64", "is not valid base64")),
            },
            (None, None) if self.eof => None,
            (None, None) => return Err(ApiError::field("data", "is required unless eof is true")),
        };
        Ok(StdinRequest {
            data,
            eof: self.eof,
        })
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct TerminalBody {
    #[schema(
        schema_with = super::openapi::int_range_or_null::<1, MAX_DIMENSION>,
        default = 80
    )]
    pub cols: Option<i64>,
    #[schema(
        schema_with = super::openapi::int_range_or_null::<1, MAX_DIMENSION>,
        default = 24
    )]
    pub rows: Option<i64>,
    /// Default: the user's login shell.
    #[schema(pattern = r"^[^\u0000]*$")]
    pub shell: Option<String>,
    /// Default `/workspace`.
    pub cwd: Option<String>,
    #[schema(schema_with = super::openapi::command_env)]
    pub env: BTreeMap<String, String>,
    /// Default `sandbox`.
    pub user: Option<String>,
}

impl TerminalBody {
    pub fn validate(self) -> ApiResult<PtyOpenRequest> {
        let mut bad = Vec::new();
        let cols = check_dimension("cols", self.cols.unwrap_or(DEFAULT_COLS), &mut bad);
        let rows = check_dimension("rows", self.rows.unwrap_or(DEFAULT_ROWS), &mut bad);
        if let Some(shell) = &self.shell {
            if shell.contains('\0') {
                bad.push(FieldError::new("shell", "cannot hold NUL"));
            }
        }
        check_env(&self.env, &mut bad);
        if !bad.is_empty() {
            return Err(ApiError::validation(bad));
        }
        Ok(PtyOpenRequest {
            cols,
            rows,
            shell: self.shell.filter(|s| !s.trim().is_empty()),
            cwd: self.cwd.filter(|c| !c.is_empty()),
            env: self.env,
            user: self.user.filter(|u| !u.is_empty()),
        })
    }
}

fn check_dimension(field: &str, v: i64, bad: &mut Vec<FieldError>) -> u16 {
    match u16::try_from(v) {
        Ok(n) if (1..=MAX_DIMENSION).contains(&v) => n,
        _ => {
            bad.push(FieldError::new(
                field,
                format!("must be between 1 and {MAX_DIMENSION}"),
            ));
            1
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Lines per stream (default 200; 0 = everything buffered).
    #[param(schema_with = super::openapi::int_range::<0, { MAX_TAIL as i64 }>, required = false)]
    pub tail: Option<String>,
}

/// `?tail=`: lines per stream, default 200; `0` means everything buffered.
pub fn parse_tail(tail: Option<&str>) -> ApiResult<Option<usize>> {
    match tail.map(str::trim) {
        None | Some("") => Ok(Some(DEFAULT_TAIL)),
        Some(s) => match s.parse::<usize>() {
            Ok(0) => Ok(None),
            Ok(n) if n <= MAX_TAIL => Ok(Some(n)),
            _ => Err(ApiError::field(
                "tail",
                format!("must be an integer between 0 and {MAX_TAIL}"),
            )),
        },
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// First output sequence number to send (`Last-Event-ID` wins).
    #[param(value_type = u64, required = false)]
    pub from_seq: Option<String>,
}

/// The first output seq a process stream sends: after `Last-Event-ID`
/// (the seq of the last frame the client saw) when present, since that is
/// what a reconnecting `EventSource` sends; else `?from_seq=` (inclusive);
/// else everything still buffered.
pub fn resume_seq(last_event_id: Option<i64>, from_seq: Option<&str>) -> ApiResult<Option<u64>> {
    if let Some(last) = last_event_id.filter(|n| *n >= 0) {
        return Ok(Some(last as u64 + 1));
    }
    match from_seq.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ApiError::field("from_seq", "must be an integer >= 0")),
    }
}

/// `123` or `proc_123`; anything else names no process.
pub fn parse_pid(s: &str) -> ApiResult<u32> {
    let digits = s.strip_prefix("proc_").unwrap_or(s);
    match digits.parse::<u32>() {
        Ok(n) if n > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(ApiError::not_found("process")),
    }
}

/// The last `n` lines of `b` (`None`: all of it). A final newline ends the
/// last line rather than starting an empty one.
pub fn tail_lines(b: &[u8], n: Option<usize>) -> &[u8] {
    let Some(n) = n else { return b };
    if n == 0 {
        return &[];
    }
    let body = b.strip_suffix(b"\n").unwrap_or(b);
    let mut seen = 0;
    for (i, &c) in body.iter().enumerate().rev() {
        if c == b'\n' {
            seen += 1;
            if seen == n {
                return &b[i + 1..];
            }
        }
    }
    b
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A process as API.md shows it.
pub fn process_json(p: &ProcessInfo) -> Value {
    json!({
        "id": format!("proc_{}", p.pid),
        "pid": p.pid,
        "name": p.name,
        "command": p.command,
        "state": match p.state {
            ProcessState::Running => "running",
            ProcessState::Exited => "exited",
        },
        "exit_code": p.exit_code,
        "signal": p.signal,
        "started_at": rfc3339(p.started_at_ms),
        "exited_at": p.exited_at_ms.map(rfc3339),
    })
}

/// `ws(s)://host/api/v1/sandboxes/{id}/terminals/{tid}/ws` from the public
/// base URL.
pub fn terminal_ws_url(public_url: &str, sandbox_id: &str, tid: &str) -> String {
    let base = public_url.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{base}/api/v1/sandboxes/{sandbox_id}/terminals/{tid}/ws")
}

// ---------------------------------------------------------------- processes

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/processes",
    tag = PROC,
    summary = "Start a background process",
    params(SandboxId),
    request_body = StartBody,
    responses((status = 201, description = "Created: the process", body = Data), E404And422),
)]
async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<StartBody>,
) -> ApiResult<impl IntoResponse> {
    let req = body.validate()?;
    let p = state
        .guest(&caller, &id, true)
        .await?
        .process_start(&req)
        .await?;
    tracing::debug!(sandbox_id = %id, pid = p.pid, "process started");
    Ok((StatusCode::CREATED, data(process_json(&p))))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/processes",
    tag = PROC,
    summary = "List processes",
    params(SandboxId, PageQuery),
    responses((status = 200, description = "OK", body = DataPage), E404And422),
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let pg = parse_page(q.page.as_deref(), q.page_size.as_deref())?;
    let mut procs = state
        .guest(&caller, &id, false)
        .await?
        .process_list()
        .await?;
    procs.sort_by_key(|p| (p.started_at_ms, p.pid));
    let total = procs.len() as u64;
    let skip = (pg.page as usize - 1).saturating_mul(pg.page_size as usize);
    let items: Vec<Value> = procs
        .iter()
        .skip(skip)
        .take(pg.page_size as usize)
        .map(process_json)
        .collect();
    Ok(page(items, pg.page, pg.page_size, total))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/processes/{pid}",
    tag = PROC,
    summary = "Get a process",
    params(SandboxId, ProcessId),
    responses((status = 200, description = "OK", body = Data), E404),
)]
async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let pid = parse_pid(&pid)?;
    let p = state
        .guest(&caller, &id, false)
        .await?
        .process_get(pid)
        .await?;
    Ok(data(process_json(&p)))
}

#[utoipa::path(
    delete,
    path = "/sandboxes/{id}/processes/{pid}",
    tag = PROC,
    summary = "Kill a process (SIGTERM, then SIGKILL after 5 s)",
    params(SandboxId, ProcessId),
    responses((status = 200, description = "OK", body = Data), E404),
)]
async fn kill(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let pid = parse_pid(&pid)?;
    let guest = state.guest(&caller, &id, true).await?;
    let p = guest
        .process_kill(pid, hearth_agent_protocol::DEFAULT_KILL_GRACE_MS)
        .await?;
    Ok(data(process_json(&p)))
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/processes/{pid}/signal",
    tag = PROC,
    summary = "Send a signal to a process",
    params(SandboxId, ProcessId),
    request_body = SignalBody,
    responses((status = 200, description = "OK", body = Data), E404And422),
)]
async fn signal(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
    ApiJson(body): ApiJson<SignalBody>,
) -> ApiResult<impl IntoResponse> {
    let pid = parse_pid(&pid)?;
    let sig = parse_signal(body.signal.as_ref())?;
    let guest = state.guest(&caller, &id, true).await?;
    let p = guest.process_signal(pid, &sig).await?;
    Ok(data(process_json(&p)))
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/processes/{pid}/stdin",
    tag = PROC,
    summary = "Write to a process's stdin",
    params(SandboxId, ProcessId),
    request_body = StdinBody,
    responses((status = 200, description = "OK", body = Data), E404And422),
)]
async fn stdin(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
    ApiJson(body): ApiJson<StdinBody>,
) -> ApiResult<impl IntoResponse> {
    let pid = parse_pid(&pid)?;
    let req = body.validate()?;
    let guest = state.guest(&caller, &id, true).await?;
    let p = guest.process_stdin(pid, &req).await?;
    Ok(data(process_json(&p)))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/processes/{pid}/logs",
    tag = PROC,
    summary = "Buffered output of a process",
    params(SandboxId, ProcessId, LogsQuery),
    responses((status = 200, description = "OK: `{stdout, stderr, dropped_bytes, truncated}`", body = Data), E404And422),
)]
async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<impl IntoResponse> {
    let pid = parse_pid(&pid)?;
    let tail = parse_tail(q.tail.as_deref())?;
    let l = state
        .guest(&caller, &id, false)
        .await?
        .process_logs(pid)
        .await?;
    Ok(data(json!({
        "stdout": text(tail_lines(l.stdout.as_slice(), tail)),
        "stderr": text(tail_lines(l.stderr.as_slice(), tail)),
        "dropped_bytes": l.dropped_bytes,
        "truncated": l.dropped_bytes > 0,
    })))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/processes/{pid}/stream",
    tag = PROC,
    summary = "Stream a process's output, buffered output first",
    params(SandboxId, ProcessId, StreamQuery, LastEventId),
    responses(
        (status = 200, description = "Server-sent events, as `exec/stream`", body = EventStream, content_type = "text/event-stream"),
        E404And422,
    ),
)]
async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
    Query(q): Query<StreamQuery>,
    headers: http::HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let pid = parse_pid(&pid)?;
    let from = resume_seq(sse::last_event_id(&headers), q.from_seq.as_deref())?;
    let guest = state.guest(&caller, &id, false).await?;
    let mut output = guest.process_output(pid, from).await?;
    let events = async_stream(move |tx| async move {
        forward_output(&mut output, &tx).await;
    });
    Ok(sse::response(events, sse::heartbeat_of(&state)))
}

// ---------------------------------------------------------------- terminals

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/terminals",
    tag = TERM,
    summary = "Open a terminal",
    params(SandboxId),
    request_body = TerminalBody,
    responses((status = 201, description = "Created: `{id, ws_url, pid, cols, rows}`", body = Data), E404And422),
)]
async fn open_terminal(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TerminalBody>,
) -> ApiResult<impl IntoResponse> {
    let req = body.validate()?;
    let t = state
        .guest(&caller, &id, true)
        .await?
        .terminal_open(&req)
        .await?;
    tracing::debug!(sandbox_id = %id, terminal = %t.id, "terminal opened");
    let ws_url = terminal_ws_url(&state.config.public_url(), &id, &t.id);
    Ok((
        StatusCode::CREATED,
        data(json!({
            "id": t.id,
            "ws_url": ws_url,
            "pid": t.pid,
            "cols": t.cols,
            "rows": t.rows,
        })),
    ))
}

#[utoipa::path(
    delete,
    path = "/sandboxes/{id}/terminals/{tid}",
    tag = TERM,
    summary = "Close a terminal",
    params(SandboxId, TerminalId),
    responses((status = 200, description = "OK", body = Data), E404),
)]
async fn close_terminal(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, tid)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    state
        .guest(&caller, &id, true)
        .await?
        .terminal_close(&tid)
        .await?;
    Ok(data(json!({ "id": tid, "closed": true })))
}

/// Attaches before upgrading, so an unknown terminal is a 404 the client
/// can read rather than a socket that closes at once.
#[utoipa::path(
    get,
    path = "/sandboxes/{id}/terminals/{tid}/ws",
    tag = TERM,
    summary = "Attach to a terminal (WebSocket)",
    params(SandboxId, TerminalId),
    responses(
        (status = 101, description = "Switching Protocols: binary frames carry PTY bytes both ways; a text frame `{\"type\":\"resize\",\"cols\":N,\"rows\":N}` resizes."),
        E404,
    ),
)]
async fn terminal_ws(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, tid)): Path<(String, String)>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let ws = ws.map_err(|e| {
        ApiError::bad_request(format!("expected a WebSocket upgrade: {}", e.body_text()))
    })?;
    let guest = state.guest(&caller, &id, true).await?;
    guest.terminal_get(&tid).await?;
    let pipe = guest.terminal_attach(&tid).await?;
    Ok(ws.on_upgrade(move |socket| Bridge { guest, tid }.run(socket, pipe)))
}

/// A WebSocket client control message (text frame).
#[derive(Debug, PartialEq, Eq)]
pub enum Control {
    Resize {
        cols: u16,
        rows: u16,
    },
    /// `{"type":"resize"}` with missing or out-of-range sizes.
    BadResize(String),
    /// Any other text: terminal input.
    Input,
}

/// `{"type":"resize","cols":N,"rows":N}` is a resize; other text is typed.
pub fn parse_control(text: &str) -> Control {
    #[derive(Deserialize)]
    struct Msg {
        #[serde(rename = "type")]
        kind: String,
        cols: Option<i64>,
        rows: Option<i64>,
    }
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return Control::Input;
    }
    match serde_json::from_str::<Msg>(trimmed) {
        Ok(m) if m.kind == "resize" => {
            let mut bad = Vec::new();
            let cols = m.cols.map(|c| check_dimension("cols", c, &mut bad));
            let rows = m.rows.map(|r| check_dimension("rows", r, &mut bad));
            match (cols, rows) {
                (Some(cols), Some(rows)) if bad.is_empty() => Control::Resize { cols, rows },
                _ => Control::BadResize(format!(
                    "resize needs cols and rows between 1 and {MAX_DIMENSION}"
                )),
            }
        }
        _ => Control::Input,
    }
}

/// One WebSocket client attached to one terminal.
struct Bridge {
    guest: Guest,
    tid: String,
}

impl Bridge {
    /// Copies bytes both ways until either side ends. The client leaving
    /// detaches (the shell keeps running); the shell's output ending closes
    /// the socket.
    async fn run(self, socket: WebSocket, pipe: Pipe) {
        let (mut ws_tx, mut ws_rx) = socket.split();
        let (mut pty_rd, mut pty_wr) = tokio::io::split(pipe);
        // Replies to the client (resize errors) go through the output side,
        // which owns the sink.
        let (notice_tx, mut notice_rx) = tokio::sync::mpsc::channel::<String>(8);

        // Output goes on being read after the client has gone (and is
        // dropped), until the agent ends the stream: see below.
        let output = async {
            let mut buf = vec![0u8; WS_CHUNK];
            let mut client_gone = false;
            loop {
                tokio::select! {
                    r = pty_rd.read(&mut buf) => match r {
                        Ok(0) => break,
                        Ok(n) => {
                            let frame = Message::Binary(bytes::Bytes::copy_from_slice(&buf[..n]));
                            client_gone = client_gone || ws_tx.send(frame).await.is_err();
                        }
                        Err(e) => {
                            tracing::debug!(terminal = %self.tid, error = %e, "terminal output ended");
                            break;
                        }
                    },
                    Some(note) = notice_rx.recv(), if !client_gone => {
                        client_gone = ws_tx.send(Message::Text(note.into())).await.is_err();
                    }
                }
            }
            if !client_gone {
                // The close frame's reason carries the shell's exit code
                // when it exited (`exit 3`): the CLI exits with it.
                let reason = match self.guest.terminal_get(&self.tid).await {
                    Ok(info) => info.exit_code.map(|c| format!("exit {c}")),
                    Err(_) => None,
                };
                let _ = ws_tx
                    .send(Message::Close(Some(CloseFrame {
                        code: 1000,
                        reason: reason.unwrap_or_else(|| "terminal closed".into()).into(),
                    })))
                    .await;
            }
        };

        let input = async {
            while let Some(msg) = ws_rx.next().await {
                let bytes = match msg {
                    Ok(Message::Binary(b)) => b,
                    Ok(Message::Text(t)) => match parse_control(t.as_str()) {
                        Control::Input => bytes::Bytes::copy_from_slice(t.as_str().as_bytes()),
                        Control::Resize { cols, rows } => {
                            self.guest.touch();
                            if let Err(e) = self.guest.terminal_resize(&self.tid, cols, rows).await
                            {
                                let err = ApiError::from(e);
                                let _ = notice_tx.send(error_notice(err.code, &err.message)).await;
                            }
                            continue;
                        }
                        Control::BadResize(msg) => {
                            let _ = notice_tx.send(error_notice("validation_error", &msg)).await;
                            continue;
                        }
                    },
                    Ok(Message::Close(_)) | Err(_) => break,
                    // Pings are answered by the socket itself.
                    Ok(_) => continue,
                };
                if bytes.is_empty() {
                    continue;
                }
                self.guest.touch();
                if let Err(e) = pty_wr.write_all(&bytes).await {
                    tracing::debug!(terminal = %self.tid, error = %e, "terminal input ended");
                    return;
                }
            }
            // The client left: end our input stream. The agent writes what
            // is still on its way to the shell, then ends our output.
            let _ = pty_wr.shutdown().await;
        };

        tokio::pin!(output);
        tokio::select! {
            _ = &mut output => {}
            _ = input => {
                // Dropping the stream now could discard the client's last
                // keystrokes in flight; wait for the agent to end it (an
                // agent from before this behaviour never does: bounded).
                if tokio::time::timeout(DETACH_GRACE, &mut output).await.is_err() {
                    tracing::debug!(terminal = %self.tid, "agent did not end the detached stream");
                }
            }
        }
    }
}

fn error_notice(code: &str, message: &str) -> String {
    json!({ "type": "error", "code": code, "message": message }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail_lines(b"a\nb\nc\n", Some(2)), b"b\nc\n");
        assert_eq!(tail_lines(b"a\nb\nc", Some(2)), b"b\nc");
        assert_eq!(tail_lines(b"a\nb\nc\n", Some(3)), b"a\nb\nc\n");
        assert_eq!(tail_lines(b"a\nb\nc\n", Some(10)), b"a\nb\nc\n");
        assert_eq!(tail_lines(b"a\nb\n", Some(1)), b"b\n");
        assert_eq!(tail_lines(b"a\nb\n", None), b"a\nb\n");
        assert_eq!(tail_lines(b"", Some(5)), b"");
        assert_eq!(tail_lines(b"\n\n\n", Some(1)), b"\n");
    }

    #[test]
    fn tail_query_defaults_and_bounds() {
        assert_eq!(parse_tail(None).expect("default"), Some(200));
        assert_eq!(parse_tail(Some("5")).expect("five"), Some(5));
        assert_eq!(parse_tail(Some("0")).expect("all"), None);
        let e = parse_tail(Some("-1")).expect_err("negative");
        assert_eq!(e.details[0].field, "tail");
        assert!(parse_tail(Some("1000001")).is_err());
    }

    #[test]
    fn signals_parse_by_name_and_number() {
        let p = |v: Value| parse_signal(Some(&v));
        assert_eq!(p(json!("SIGINT")).expect("name"), "SIGINT");
        assert_eq!(p(json!("term")).expect("short"), "SIGTERM");
        assert_eq!(p(json!(" sigkill ")).expect("case"), "SIGKILL");
        assert_eq!(p(json!(9)).expect("number"), "SIGKILL");
        assert_eq!(p(json!("15")).expect("numeric string"), "SIGTERM");
        assert_eq!(p(json!(31)).expect("last"), "SIGSYS");
        for bad in [
            json!("SIGNOPE"),
            json!(0),
            json!(32),
            json!(-1),
            json!(2.5),
            json!(true),
            json!(""),
        ] {
            let e = p(bad.clone()).expect_err("bad signal");
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
            assert_eq!(e.details[0].field, "signal");
        }
        let e = parse_signal(None).expect_err("missing");
        assert_eq!(e.details[0].message, "is required");
    }

    #[test]
    fn pids_are_positive_integers_or_not_found() {
        assert_eq!(parse_pid("42").expect("pid"), 42);
        assert_eq!(parse_pid("proc_42").expect("prefixed"), 42);
        for bad in ["0", "abc", "-1", "+5", "99999999999", "", "proc_"] {
            let e = parse_pid(bad).expect_err("bad pid");
            assert_eq!(e.status, StatusCode::NOT_FOUND, "{bad}");
            assert_eq!(e.code, "not_found");
        }
    }

    #[test]
    fn start_body_requires_a_command() {
        let b: StartBody = serde_json::from_value(json!({"command": "  "})).expect("body");
        let e = b.validate().expect_err("empty");
        assert_eq!(e.details[0].field, "command");
        let b: StartBody =
            serde_json::from_value(json!({"command": "sleep 1", "env": {"A=B": "x", "OK": "y"}}))
                .expect("body");
        let e = b.validate().expect_err("bad env");
        assert_eq!(e.details.len(), 1);
        assert_eq!(e.details[0].field, "env.A=B");
        let b: StartBody =
            serde_json::from_value(json!({"cmd": "sleep 1", "name": "web", "cwd": ""}))
                .expect("body");
        let r = b.validate().expect("valid");
        assert_eq!(r.command, "sleep 1");
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.cwd, None);
    }

    #[test]
    fn stdin_body_takes_text_base64_or_eof() {
        let v = |j: Value| {
            serde_json::from_value::<StdinBody>(j)
                .expect("body")
                .validate()
        };
        assert_eq!(
            v(json!({"data": "hi\n"}))
                .expect("text")
                .data
                .expect("data")
                .as_slice(),
            b"hi\n"
        );
        assert_eq!(
            v(json!({"data_base64": "aGk="}))
                .expect("b64")
                .data
                .expect("data")
                .as_slice(),
            b"hi"
        );
        let r = v(json!({"eof": true})).expect("eof only");
        assert!(r.eof && r.data.is_none());
        assert_eq!(v(json!({})).expect_err("nothing").details[0].field, "data");
        assert_eq!(
            v(json!({"data_base64": "!!"})).expect_err("bad").details[0].field,
            "data_base64"
        );
        assert_eq!(
            v(json!({"data": "a", "data_base64": "YQ=="}))
                .expect_err("both")
                .details[0]
                .field,
            "data_base64"
        );
    }

    #[test]
    fn terminal_sizes_are_checked() {
        let v = |j: Value| {
            serde_json::from_value::<TerminalBody>(j)
                .expect("body")
                .validate()
        };
        let r = v(json!({"cols": 120, "rows": 40, "shell": "/bin/sh"})).expect("valid");
        assert_eq!((r.cols, r.rows), (120, 40));
        assert_eq!(r.shell.as_deref(), Some("/bin/sh"));
        let r = v(json!({})).expect("defaults");
        assert_eq!((r.cols, r.rows), (80, 24));
        let e = v(json!({"cols": 0, "rows": 1001})).expect_err("bad");
        let fields: Vec<&str> = e.details.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["cols", "rows"]);
        assert!(v(json!({"cols": 70000, "rows": 10})).is_err());
    }

    #[test]
    fn resume_prefers_last_event_id() {
        assert_eq!(resume_seq(None, None).expect("none"), None);
        assert_eq!(resume_seq(Some(4), None).expect("after 4"), Some(5));
        assert_eq!(resume_seq(None, Some("7")).expect("from 7"), Some(7));
        assert_eq!(
            resume_seq(Some(4), Some("7")).expect("header wins"),
            Some(5)
        );
        assert_eq!(
            resume_seq(Some(-1), Some("0")).expect("negative ignored"),
            Some(0)
        );
        assert_eq!(
            resume_seq(None, Some("x")).expect_err("bad").details[0].field,
            "from_seq"
        );
    }

    #[test]
    fn control_frames() {
        assert_eq!(
            parse_control(r#"{"type":"resize","cols":100,"rows":30}"#),
            Control::Resize {
                cols: 100,
                rows: 30
            }
        );
        assert!(matches!(
            parse_control(r#"{"type":"resize","cols":0,"rows":30}"#),
            Control::BadResize(_)
        ));
        assert!(matches!(
            parse_control(r#"{"type":"resize"}"#),
            Control::BadResize(_)
        ));
        assert_eq!(parse_control("ls -la\n"), Control::Input);
        assert_eq!(
            parse_control(r#"{"type":"input","data":"x"}"#),
            Control::Input
        );
        assert_eq!(parse_control("{not json"), Control::Input);
    }

    #[test]
    fn ws_url_swaps_the_scheme() {
        assert_eq!(
            terminal_ws_url("http://127.0.0.1:7070", "sbx_1", "pty_2"),
            "ws://127.0.0.1:7070/api/v1/sandboxes/sbx_1/terminals/pty_2/ws"
        );
        assert_eq!(
            terminal_ws_url("https://hearth.example.com/", "sbx_1", "pty_2"),
            "wss://hearth.example.com/api/v1/sandboxes/sbx_1/terminals/pty_2/ws"
        );
    }

    #[test]
    fn process_json_has_the_api_fields() {
        let p = ProcessInfo {
            pid: 7,
            name: Some("web".into()),
            command: "sleep 1".into(),
            state: ProcessState::Exited,
            exit_code: Some(143),
            signal: Some(15),
            started_at_ms: 0,
            exited_at_ms: Some(1500),
        };
        let v = process_json(&p);
        assert_eq!(v["pid"], 7);
        assert_eq!(v["state"], "exited");
        assert_eq!(v["exit_code"], 143);
        assert_eq!(v["started_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["exited_at"], "1970-01-01T00:00:01.500Z");
    }
}
