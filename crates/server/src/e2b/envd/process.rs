//! `process.Process` on Hearth's background processes: `Start` runs the
//! argv through the agent (as the E2B user's Hearth counterpart) and
//! streams its start, output and end; `Connect` follows a running one;
//! `List`, `SendInput`, `StreamInput`, `SendSignal` and `CloseStdin` map
//! one to one. A `Start` with `pty` opens a terminal instead ([`super::pty`]),
//! and the calls naming its pid act on that terminal.

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::StreamExt;
use hearth_agent_protocol::{
    Base64Bytes, OutputEvent, StartProcessRequest, StdinRequest, StreamKind,
};
use hearth_e2b_proto::process::{
    process_event, process_input, process_selector, CloseStdinRequest, CloseStdinResponse,
    ConnectRequest, ConnectResponse, ListRequest, ListResponse, ProcessConfig, ProcessEvent,
    ProcessInfo, ProcessSelector, SendInputRequest, SendInputResponse, SendSignalRequest,
    SendSignalResponse, Signal, StartRequest, StartResponse, StreamInputRequest,
    StreamInputResponse, UpdateRequest, UpdateResponse,
};

use super::connect::{Call, Code, Frame, Frames, RpcError};
use super::Envd;
use crate::core::guest::Guest;

/// `argv` as one POSIX shell command line.
fn shell_line(cmd: &str, args: &[String]) -> String {
    std::iter::once(cmd)
        .chain(args.iter().map(String::as_str))
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&c));
    match plain {
        true => s.to_string(),
        false => format!("'{}'", s.replace('\'', r"'\''")),
    }
}

/// The pid a selector names (a tag is looked up among running processes).
async fn pid_of(guest: &Guest, sel: Option<ProcessSelector>) -> Result<u32, RpcError> {
    match sel.and_then(|s| s.selector) {
        Some(process_selector::Selector::Pid(pid)) => Ok(pid),
        Some(process_selector::Selector::Tag(tag)) => guest
            .process_list()
            .await?
            .into_iter()
            .find(|p| p.name.as_deref() == Some(tag.as_str()))
            .map(|p| p.pid)
            .ok_or_else(|| {
                RpcError::new(Code::NotFound, format!("process with tag {tag} not found"))
            }),
        None => Err(RpcError::new(Code::InvalidArgument, "no process selected")),
    }
}

fn event(e: process_event::Event) -> ProcessEvent {
    ProcessEvent { event: Some(e) }
}

/// One agent output frame as an E2B process event, and whether it ends
/// the stream.
fn to_event(
    frame: Option<crate::core::error::Result<OutputEvent>>,
) -> (Result<ProcessEvent, RpcError>, bool) {
    match frame {
        None => (
            Err(RpcError::new(
                Code::Unavailable,
                "the process's output ended before it did",
            )),
            true,
        ),
        Some(Err(e)) => (Err(e.into()), true),
        Some(Ok(OutputEvent::Output { stream, data, .. })) => {
            let output = match stream {
                StreamKind::Stdout => process_event::data_event::Output::Stdout(data.0),
                StreamKind::Stderr => process_event::data_event::Output::Stderr(data.0),
            };
            let data = process_event::DataEvent {
                output: Some(output),
            };
            (Ok(event(process_event::Event::Data(data))), false)
        }
        Some(Ok(OutputEvent::Dropped { .. })) => (
            Ok(event(process_event::Event::Keepalive(Default::default()))),
            false,
        ),
        Some(Ok(OutputEvent::Exit {
            exit_code, signal, ..
        })) => {
            let status = match signal {
                Some(s) => format!("signal: {s}"),
                None => format!("exit status {exit_code}"),
            };
            let end = process_event::EndEvent {
                exit_code,
                exited: signal.is_none(),
                status,
                error: None,
            };
            (Ok(event(process_event::Event::End(end))), true)
        }
    }
}

/// The agent's output frames as E2B process events; the stream ends
/// after the end event.
fn events(
    out: crate::core::guest::Output,
) -> impl futures_util::Stream<Item = Result<ProcessEvent, RpcError>> + Send {
    futures_util::stream::unfold((out, false), |(mut out, ended)| async move {
        if ended {
            return None;
        }
        let (ev, ended) = to_event(out.next().await);
        Some((ev, (out, ended)))
    })
}

/// A process's events from the start: its start event (with its pid),
/// then what the agent still holds of its output and what follows.
async fn process_stream(
    guest: &Guest,
    pid: u32,
) -> Result<impl futures_util::Stream<Item = Result<ProcessEvent, RpcError>> + Send, RpcError> {
    let out = guest.process_output(pid, None).await?;
    let first = event(process_event::Event::Start(process_event::StartEvent {
        pid,
    }));
    Ok(futures_util::stream::once(async move { Ok(first) }).chain(events(out)))
}

pub async fn start(envd: Envd, headers: HeaderMap, body: Bytes) -> Response {
    let call = match Call::of(&headers) {
        Ok(c) => c,
        Err(e) => return Call::unsupported(e),
    };
    match start_inner(&envd, call, &body).await {
        Ok(resp) => resp,
        Err(e) => call.fail(e),
    }
}

async fn start_inner(envd: &Envd, call: Call, body: &[u8]) -> Result<Response, RpcError> {
    let req: StartRequest = call.request(body)?;
    let config = req
        .process
        .ok_or_else(|| RpcError::new(Code::InvalidArgument, "process is required"))?;
    let guest = envd.guest(true).await?;
    if let Some(pty) = &req.pty {
        let stream = super::pty::start(envd, guest, config, pty)
            .await?
            .map(|e| e.map(|event| StartResponse { event: Some(event) }));
        return Ok(call.stream(stream));
    }
    let info = guest
        .process_start(&StartProcessRequest {
            command: shell_line(&config.cmd, &config.args),
            name: req.tag.clone(),
            cwd: config.cwd.clone().filter(|c| !c.is_empty()),
            env: config.envs.into_iter().collect(),
            user: envd.user.clone(),
        })
        .await?;
    if req.stdin != Some(true) {
        // No input will come: the process reads end of file.
        let _ = guest
            .process_stdin(
                info.pid,
                &StdinRequest {
                    data: None,
                    eof: true,
                },
            )
            .await;
    }
    let stream = process_stream(&guest, info.pid)
        .await?
        .map(|e| e.map(|event| StartResponse { event: Some(event) }));
    Ok(call.stream(stream))
}

pub async fn connect(envd: Envd, headers: HeaderMap, body: Bytes) -> Response {
    let call = match Call::of(&headers) {
        Ok(c) => c,
        Err(e) => return Call::unsupported(e),
    };
    let run = async {
        let req: ConnectRequest = call.request(&body)?;
        let guest = envd.guest(true).await?;
        let pid = pid_of(&guest, req.process).await?;
        // A process first (one agent call); a PTY when it is none.
        let terminal = match envd.pty(pid) {
            Some(s) => super::pty::Found::Attached(s).terminal().to_string(),
            None => match process_stream(&guest, pid).await {
                Ok(stream) => {
                    let stream =
                        stream.map(|e| e.map(|event| ConnectResponse { event: Some(event) }));
                    return Ok(call.stream(stream));
                }
                Err(e) if e.code == Code::NotFound => {
                    let found = super::pty::find(&envd, &guest, pid).await?;
                    found.ok_or(e)?.terminal().to_string()
                }
                Err(e) => return Err(e),
            },
        };
        let stream = super::pty::attach(&envd, guest, terminal, pid)
            .await?
            .map(|e| e.map(|event| ConnectResponse { event: Some(event) }));
        Ok::<_, RpcError>(call.stream(stream))
    };
    run.await.unwrap_or_else(|e| call.fail(e))
}

/// Runs a unary call: decodes its request, answers `f`'s message.
pub(super) async fn unary<Req, Resp, F, Fut>(headers: &HeaderMap, body: &[u8], f: F) -> Response
where
    Req: prost::Message + serde::de::DeserializeOwned + Default,
    Resp: prost::Message + serde::Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: std::future::Future<Output = Result<Resp, RpcError>>,
{
    let call = match Call::of(headers) {
        Ok(c) => c,
        Err(e) => return Call::unsupported(e),
    };
    let run = async {
        let req: Req = call.request(body)?;
        f(req).await
    };
    match run.await {
        Ok(m) => call.reply(&m),
        Err(e) => call.fail(e),
    }
}

pub async fn list(envd: Envd, headers: HeaderMap, body: Bytes) -> Response {
    unary(&headers, &body, move |_: ListRequest| async move {
        let guest = envd.guest(false).await?;
        let info = |cmd: &str, args: Vec<String>, pid, tag| ProcessInfo {
            config: Some(ProcessConfig {
                cmd: cmd.into(),
                args,
                envs: Default::default(),
                cwd: None,
            }),
            pid,
            tag,
        };
        let mut processes: Vec<ProcessInfo> = guest
            .process_list()
            .await?
            .into_iter()
            .filter(|p| p.state == hearth_agent_protocol::ProcessState::Running)
            .map(|p| info("/bin/sh", vec!["-c".into(), p.command], p.pid, p.name))
            .collect();
        let login = vec!["-i".to_string(), "-l".to_string()];
        // PTYs, attached or not (Hearth's own terminals are PTYs too).
        processes.extend(
            guest
                .terminal_list()
                .await?
                .into_iter()
                .filter(|t| !t.exited)
                .map(|t| info("/bin/bash", login.clone(), t.pid, None)),
        );
        Ok(ListResponse { processes })
    })
    .await
}

pub async fn send_input(envd: Envd, headers: HeaderMap, body: Bytes) -> Response {
    unary(&headers, &body, move |req: SendInputRequest| async move {
        let guest = envd.guest(true).await?;
        let pid = pid_of(&guest, req.process).await?;
        write_input(&envd, &guest, pid, req.input).await?;
        Ok(SendInputResponse {})
    })
    .await
}

/// Input for a process's stdin, or for the terminal of a PTY.
async fn write_input(
    envd: &Envd,
    guest: &Guest,
    pid: u32,
    input: Option<hearth_e2b_proto::process::ProcessInput>,
) -> Result<(), RpcError> {
    let (data, for_pty) = match input.and_then(|i| i.input) {
        Some(process_input::Input::Stdin(d)) => (d, false),
        Some(process_input::Input::Pty(d)) => (d, true),
        None => return Ok(()),
    };
    // Stdin goes to a PTY this server holds, else to the process; `pty`
    // input to a PTY wherever it is.
    if let Some(pty) = envd.pty(pid) {
        return pty.write(&data).await;
    }
    if for_pty {
        let pty = super::pty::find(envd, guest, pid).await?;
        return pty
            .ok_or_else(|| no_pty(pid))?
            .write(envd, guest, pid, &data)
            .await;
    }
    guest
        .process_stdin(
            pid,
            &StdinRequest {
                data: Some(Base64Bytes(data)),
                eof: false,
            },
        )
        .await?;
    Ok(())
}

/// `StreamInput` (client streaming): a start event naming the process,
/// then its input in order.
pub async fn stream_input(envd: Envd, headers: HeaderMap, body: Body) -> Response {
    let call = match Call::of(&headers) {
        Ok(c) => c,
        Err(e) => return Call::unsupported(e),
    };
    let run = async {
        let guest = envd.guest(true).await?;
        let mut frames = Frames::default();
        let mut pid = None;
        let mut body = body.into_data_stream();
        loop {
            while let Some(frame) = frames.next_frame()? {
                let Frame::Message(m) = frame else {
                    return Ok(call.reply(&StreamInputResponse {}));
                };
                let req: StreamInputRequest = call.decode(&m)?;
                use hearth_e2b_proto::process::stream_input_request::Event;
                match req.event {
                    Some(Event::Start(s)) => pid = Some(pid_of(&guest, s.process).await?),
                    Some(Event::Data(d)) => {
                        let pid = pid.ok_or_else(|| {
                            RpcError::new(Code::FailedPrecondition, "input before the start event")
                        })?;
                        write_input(&envd, &guest, pid, d.input).await?;
                    }
                    Some(Event::Keepalive(_)) | None => {}
                }
            }
            match body.next().await {
                Some(Ok(chunk)) => frames.push(&chunk),
                Some(Err(e)) => {
                    return Err(RpcError::new(Code::Canceled, format!("request body: {e}")))
                }
                None => return Ok(call.reply(&StreamInputResponse {})),
            }
        }
    };
    run.await.unwrap_or_else(|e| call.fail(e))
}

pub async fn send_signal(envd: Envd, headers: HeaderMap, body: Bytes) -> Response {
    unary(&headers, &body, move |req: SendSignalRequest| async move {
        let guest = envd.guest(true).await?;
        let pid = pid_of(&guest, req.process).await?;
        let signal = match Signal::try_from(req.signal) {
            Ok(Signal::Sigkill) => "SIGKILL",
            Ok(Signal::Sigterm) => "SIGTERM",
            _ => return Err(RpcError::new(Code::InvalidArgument, "unsupported signal")),
        };
        // A PTY's shell is hung up whatever the signal: its jobs go too.
        if let Some(s) = envd.pty(pid) {
            super::pty::Found::Attached(s).kill(&guest).await?;
            return Ok(SendSignalResponse {});
        }
        // A process first (one agent call); a detached PTY when it is none.
        match guest
            .process_signal(pid, signal)
            .await
            .map_err(RpcError::from)
        {
            Err(e) if e.code == Code::NotFound => {
                let pty = super::pty::find(&envd, &guest, pid).await?;
                pty.ok_or(e)?.kill(&guest).await?;
            }
            r => {
                r?;
            }
        }
        Ok(SendSignalResponse {})
    })
    .await
}

pub async fn close_stdin(envd: Envd, headers: HeaderMap, body: Bytes) -> Response {
    unary(&headers, &body, move |req: CloseStdinRequest| async move {
        let guest = envd.guest(true).await?;
        let pid = pid_of(&guest, req.process).await?;
        guest
            .process_stdin(
                pid,
                &StdinRequest {
                    data: None,
                    eof: true,
                },
            )
            .await?;
        Ok(CloseStdinResponse {})
    })
    .await
}

fn no_pty(pid: u32) -> RpcError {
    RpcError::new(Code::NotFound, format!("no PTY with pid {pid}"))
}

/// `Update`: resizes a PTY.
pub async fn update(envd: Envd, headers: HeaderMap, body: Bytes) -> Response {
    unary(&headers, &body, move |req: UpdateRequest| async move {
        let guest = envd.guest(false).await?;
        let pid = pid_of(&guest, req.process).await?;
        let pty = super::pty::find(&envd, &guest, pid)
            .await?
            .ok_or_else(|| no_pty(pid))?;
        let size = req
            .pty
            .ok_or_else(|| RpcError::new(Code::InvalidArgument, "pty is required"))?;
        pty.resize(&guest, &size).await?;
        Ok(UpdateResponse {})
    })
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn argv_becomes_one_quoted_shell_line() {
        let args = [
            "-l".to_string(),
            "-c".to_string(),
            "echo 'hi' && ls".to_string(),
        ];
        assert_eq!(
            super::shell_line("/bin/bash", &args),
            r"/bin/bash -l -c 'echo '\''hi'\'' && ls'"
        );
        assert_eq!(super::shell_line("ls", &[String::new()]), "ls ''");
    }
}
