//! `/sandboxes/{id}/processes` (background processes) and
//! `/sandboxes/{id}/terminals` (PTY shells over a WebSocket), proxied to the
//! guest agent, which owns the processes, their output ring buffers and the
//! terminals; this module only validates, translates and bridges bytes.

use std::collections::BTreeMap;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
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
use super::{data, page, parse_page, sse, ApiJson, ApiQuery, AppState, PageQuery};
use crate::core::clock::rfc3339;
use crate::core::guest::{Guest, Pipe};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::routes::Auth;

mod handlers;
mod terminal;
#[cfg(test)]
mod tests;

use handlers::*;
use terminal::*;
pub use terminal::{parse_control, Control};

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
    /// Vault secrets (by name) added to this command's env only, as each
    /// one's `expose_as_env` (else its name); at most 32.
    #[schema(schema_with = super::openapi::secret_names::<32>)]
    pub secrets: Vec<String>,
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
