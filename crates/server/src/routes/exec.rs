//! `/sandboxes/{id}/exec` (unary) and `/exec/stream` (SSE), proxied to the
//! guest agent. Output streams through as the agent sends it.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use base64::Engine;
use hearth_agent_protocol::{Base64Bytes, ExecRequest, OutputEvent, StreamKind};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Data, E404And422, EventStream, SandboxId, EXEC};
use super::{data, sse, ApiJson, AppState};
use crate::core::guest::Output;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::routes::Auth;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(exec))
        .routes(routes!(exec_stream))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct ExecBody {
    /// Run through `/bin/sh -c`; not blank, without NUL.
    #[schema(
        value_type = String,
        required = true,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$",
        example = "echo hello"
    )]
    pub command: Option<String>,
    /// Alias of `command`.
    #[schema(deprecated)]
    pub cmd: Option<String>,
    /// Default `/workspace`.
    pub cwd: Option<String>,
    /// Added to the sandbox's env.
    #[schema(schema_with = super::openapi::exec_env)]
    pub env: BTreeMap<String, String>,
    /// Seconds, 1-86400, default 60.
    #[schema(minimum = 1, maximum = 86400, default = 60)]
    pub timeout: Option<f64>,
    /// Alias of `timeout` (which wins).
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_sec: Option<f64>,
    /// Default `sandbox`.
    pub user: Option<String>,
    /// Text written to the command's stdin.
    pub stdin: Option<String>,
    /// Bytes written to the command's stdin (`stdin` wins).
    #[schema(content_encoding = "base64")]
    pub stdin_base64: Option<String>,
    /// Vault secrets (by name) added to this command's env only, as each
    /// one's `expose_as_env` (else its name); at most 32.
    #[schema(schema_with = super::openapi::secret_names::<32>)]
    pub secrets: Vec<String>,
}

impl ExecBody {
    pub fn validate(self, output_cap: usize) -> ApiResult<ExecRequest> {
        let mut bad = Vec::new();
        let command = self.command.or(self.cmd).unwrap_or_default();
        if command.trim().is_empty() {
            bad.push(FieldError::new("command", "is required"));
        }
        if command.contains('\0') {
            bad.push(FieldError::new("command", "cannot hold NUL"));
        }
        let timeout = self.timeout.or(self.timeout_sec).unwrap_or(60.0);
        if !(1.0..=86400.0).contains(&timeout) {
            bad.push(FieldError::new(
                "timeout",
                "must be between 1 and 86400 seconds",
            ));
        }
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                bad.push(FieldError::new(format!("env.{k}"), "invalid name"));
            }
        }
        let stdin = match (self.stdin, self.stdin_base64) {
            (Some(s), _) => Some(Base64Bytes::from(s.into_bytes())),
            (None, Some(b)) => match base64::engine::general_purpose::STANDARD.decode(b) {
                Ok(v) => Some(Base64Bytes::from(v)),
                Err(_) => {
                    bad.push(FieldError::new("stdin_base64", "is not valid base64"));
                    None
                }
            },
            _ => None,
        };
        if !bad.is_empty() {
            return Err(ApiError::validation(bad));
        }
        Ok(ExecRequest {
            command,
            cwd: self.cwd.filter(|c| !c.is_empty()),
            env: self.env,
            user: self.user.filter(|u| !u.is_empty()),
            stdin,
            timeout_ms: Some((timeout * 1000.0) as u64),
            max_output_bytes: Some(output_cap as u64),
        })
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `b` as text whose JSON encoding is at most `cap` bytes, and whether it
/// was cut. The guest is not trusted to have kept its own cap, and a NUL
/// or other control byte costs six bytes as `\u0000`: the cap is on what
/// the answer weighs, not on what the guest printed.
pub fn capped_text(b: &[u8], cap: usize) -> (String, bool) {
    let s = String::from_utf8_lossy(b);
    let mut weight = 0usize;
    for (i, c) in s.char_indices() {
        weight += match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        };
        if weight > cap {
            return (s[..i].to_string(), true);
        }
    }
    (s.into_owned(), false)
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/exec",
    tag = EXEC,
    summary = "Run a command",
    params(SandboxId),
    request_body = ExecBody,
    responses(
        (status = 200, description = "OK: `{stdout, stderr, exit_code, duration_ms, timed_out, truncated}`", body = Data),
        E404And422,
    ),
)]
async fn exec(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(mut body): ApiJson<ExecBody>,
) -> ApiResult<impl IntoResponse> {
    let secrets = super::secrets::call_secrets(std::mem::take(&mut body.secrets))?;
    let req = body.validate(state.config.exec_output_cap_bytes)?;
    let guest = state.guest(&caller, &id, true).await?.with_secrets(secrets);
    let note = command_note(&guest, &req.command).await?;
    let r = guest.exec(&req).await?;
    let cap = state.config.exec_output_cap_bytes;
    let (stdout, out_cut) = capped_text(r.stdout.as_slice(), cap);
    let (stderr, err_cut) = capped_text(r.stderr.as_slice(), cap);
    let note = note.detail("exit_code", r.exit_code);
    Ok((
        axum::Extension(note),
        data(json!({
            "stdout": stdout,
            "stderr": stderr,
            "exit_code": r.exit_code,
            "duration_ms": r.duration_ms,
            "timed_out": r.timed_out,
            "truncated": r.stdout_truncated || r.stderr_truncated || out_cut || err_cut,
        })),
    ))
}

/// One agent output event as an SSE frame (`None`: nothing to send).
pub fn output_frame(ev: &OutputEvent) -> Option<axum::response::sse::Event> {
    match ev {
        OutputEvent::Output { seq, stream, data } => {
            let kind = match stream {
                StreamKind::Stdout => "stdout",
                StreamKind::Stderr => "stderr",
            };
            let chunk = text(data.as_slice());
            let line = chunk.strip_suffix('\n').unwrap_or(&chunk).to_string();
            Some(sse::frame(
                kind,
                Some(*seq as i64),
                json!({ "line": line, "data": chunk, "seq": seq }),
            ))
        }
        OutputEvent::Dropped { bytes } => {
            Some(sse::frame("dropped", None, json!({ "bytes": bytes })))
        }
        OutputEvent::Exit {
            exit_code,
            signal,
            timed_out,
            duration_ms,
        } => Some(sse::frame(
            "exit",
            None,
            json!({ "exit_code": exit_code, "signal": signal, "timed_out": timed_out, "duration_ms": duration_ms }),
        )),
    }
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/exec/stream",
    tag = EXEC,
    summary = "Run a command, streaming its output",
    params(SandboxId),
    request_body = ExecBody,
    responses(
        (status = 200, description = "Server-sent events: `stdout`, `stderr`, then `exit`", body = EventStream, content_type = "text/event-stream"),
        E404And422,
    ),
)]
async fn exec_stream(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(mut body): ApiJson<ExecBody>,
) -> ApiResult<impl IntoResponse> {
    let secrets = super::secrets::call_secrets(std::mem::take(&mut body.secrets))?;
    let req = body.validate(state.config.exec_output_cap_bytes)?;
    let guest = state.guest(&caller, &id, true).await?.with_secrets(secrets);
    let note = command_note(&guest, &req.command)
        .await?
        .detail("stream", true);
    let mut output = guest.exec_stream(&req).await?;
    let events = async_stream(&state, &caller, "exec", move |tx| async move {
        forward_output(&mut output, &tx).await;
    });
    Ok((
        axum::Extension(note),
        sse::response(events, sse::heartbeat_of(&state)),
    ))
}

/// The audit note of a command: masked with the values the call's vault
/// exposes, truncated.
pub(super) async fn command_note(
    guest: &crate::core::guest::Guest,
    command: &str,
) -> ApiResult<super::audit::AuditNote> {
    let masked = guest.audit_command(command).await?;
    Ok(super::audit::AuditNote::default().detail("command", masked))
}

/// The sending side of an SSE stream made by [`async_stream`].
pub type FrameSender = tokio::sync::mpsc::Sender<Result<axum::response::sse::Event, Infallible>>;

/// Forwards command output as SSE frames until the exit frame, a guest
/// failure (sent as an `error` frame), or the client leaving. A quiet
/// process sends nothing for a long time, so a client that left is noticed
/// at once.
pub async fn forward_output(output: &mut Output, tx: &FrameSender) {
    loop {
        let item = tokio::select! {
            item = output.next() => item,
            _ = tx.closed() => return,
        };
        let Some(item) = item else { return };
        match item {
            Ok(ev) => {
                let exit = matches!(ev, OutputEvent::Exit { .. });
                if let Some(f) = output_frame(&ev) {
                    if tx.send(Ok(f)).await.is_err() {
                        return;
                    }
                }
                if exit {
                    return;
                }
            }
            Err(e) => {
                let err = ApiError::from(e);
                let _ = tx
                    .send(Ok(sse::frame(
                        "error",
                        None,
                        json!({ "code": err.code, "message": err.message }),
                    )))
                    .await;
                return;
            }
        }
    }
}

/// A stream fed by a task through a bounded channel: the task stops when
/// the client goes away (a send fails, or `tx.closed()` fires while it
/// waits), or when `caller`'s key is revoked (the stream just ends). The
/// task counts in `hearth_sse_streams_active{kind}` while it lives, so a
/// stream that outlives its client shows.
pub fn async_stream<F, Fut>(
    state: &AppState,
    caller: &crate::core::keys::Caller,
    kind: &'static str,
    f: F,
) -> tokio_stream::wrappers::ReceiverStream<Result<axum::response::sse::Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<axum::response::sse::Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let live = sse::LiveStream::new(state, kind);
    let task = f(tx);
    let (core, caller) = (state.clone(), caller.clone());
    tokio::spawn(async move {
        let _live = live;
        tokio::select! {
            () = task => {}
            () = core.key_revoked(&caller) => {
                tracing::info!(kind, key_id = %caller.key_id, "stream ended: its API key was revoked");
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    #[test]
    fn output_is_capped_by_its_json_weight() {
        use super::capped_text;
        let (s, cut) = capped_text(b"hello", 5);
        assert_eq!((s.as_str(), cut), ("hello", false));
        let (s, cut) = capped_text(b"hello!", 5);
        assert_eq!((s.as_str(), cut), ("hello", true));
        // A megabyte of NULs weighs six megabytes as JSON: cut to the cap.
        let nul = vec![0u8; 1 << 20];
        let (s, cut) = capped_text(&nul, 1 << 20);
        assert!(cut);
        let json = serde_json::to_string(&s).expect("json");
        assert!(json.len() <= (1 << 20) + 2, "{}", json.len());
        // Multi-byte characters are never split.
        let (s, cut) = capped_text("ééé".as_bytes(), 3);
        assert_eq!((s.as_str(), cut), ("é", true));
    }

    use super::*;

    #[test]
    fn exec_body_validation() {
        let b: ExecBody = serde_json::from_value(json!({"command": "echo hi"})).expect("body");
        let r = b.validate(1024).expect("valid");
        assert_eq!(r.timeout_ms, Some(60_000));
        let b: ExecBody =
            serde_json::from_value(json!({"command": "", "timeout": 0, "stdin_base64": "!!"}))
                .expect("body");
        let e = b.validate(1024).expect_err("invalid");
        let fields: Vec<&str> = e.details.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["command", "timeout", "stdin_base64"]);
    }
}
