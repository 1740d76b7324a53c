//! `hearth sandbox shell ID` with input that is not a terminal, as
//! `ssh host < script` does it: no terminal at all. The shell runs as a
//! background process with the piped bytes on its stdin, and the end of
//! the input closes its stdin, so it ends exactly where the script does.
//! (A terminal can only type ^D, and a shell still starting when it
//! arrives has not switched its terminal to character mode yet: the ^D is
//! queued as a NUL byte and the shell waits for input forever.) Its
//! stdout and stderr stay apart, and the status is the shell's own.

use anyhow::Context;
use base64::Engine;
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::{next_signal, spawn_stdin_reader};
use crate::api::{Api, ApiError};
use crate::commands::sandbox::{print_output, shell_quote};

/// The sandbox's login shell, chosen as its terminals choose it: bash
/// where there is one, else sh.
const LOGIN_SHELL: &str = "if [ -x /bin/bash ]; then exec /bin/bash -l; fi; exec /bin/sh -l";

/// Runs `shell` (else the login shell) in sandbox `id` on the piped
/// input; its exit status, or 128 + the signal for a session ended here
/// by SIGINT, SIGTERM or SIGHUP.
pub(super) async fn run(api: &Api, id: &str, shell: Option<&str>) -> anyhow::Result<u8> {
    let command = match shell {
        Some(s) => format!("exec {}", shell_quote(s)),
        None => LOGIN_SHELL.to_string(),
    };
    let v = api
        .post(
            &format!("/sandboxes/{id}/processes"),
            json!({ "command": command, "name": "shell" }),
        )
        .await?;
    let pid = v["data"]["pid"]
        .as_u64()
        .with_context(|| format!("the server started the shell but sent no pid: {v}"))?;
    let process = format!("/sandboxes/{id}/processes/{pid}");
    let outcome = session(api, &process).await;
    if !matches!(outcome, Ok(Ending::Exited(_))) {
        // Nobody is left to feed it or read it.
        stop(api, &process).await;
    }
    outcome.map(|ending| match ending {
        Ending::Exited(code) | Ending::Signalled(code) => code,
    })
}

/// How a session ended.
enum Ending {
    /// The shell exited with this status.
    Exited(u8),
    /// A signal here ended it: 128 + the signal.
    Signalled(u8),
}

/// Feeds stdin to `process` and copies its output here until it exits.
async fn session(api: &Api, process: &str) -> anyhow::Result<Ending> {
    let mut events = api
        .events(api.http.get(api.url(&format!("{process}/stream"))))
        .await?;
    let (tx, input) = mpsc::channel::<Vec<u8>>(16);
    spawn_stdin_reader(tx)?;
    let feeder = tokio::spawn(feed(api.clone(), process.to_string(), input));
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    let mut hangup = signal(SignalKind::hangup()).ok();
    let ending = tokio::select! {
        code = print_output(&mut events, false) => code.map(Ending::Exited),
        Some(()) = next_signal(&mut interrupt) => Ok(Ending::Signalled(128 + nix::libc::SIGINT as u8)),
        Some(()) = next_signal(&mut terminate) => Ok(Ending::Signalled(128 + nix::libc::SIGTERM as u8)),
        Some(()) = next_signal(&mut hangup) => Ok(Ending::Signalled(128 + nix::libc::SIGHUP as u8)),
    };
    feeder.abort();
    ending
}

/// Writes each chunk of input to the process's stdin, in order, then
/// closes it. A process that takes no more input (it exited, or closed its
/// stdin) ends the feeding quietly; any other failure is reported and
/// stops the shell, which would otherwise wait for the rest of its input
/// forever.
async fn feed(api: Api, process: String, mut input: mpsc::Receiver<Vec<u8>>) {
    let stdin = format!("{process}/stdin");
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut result = Ok(Fed::Taken);
    while let Some(bytes) = input.recv().await {
        result = write(&api, &stdin, json!({ "data_base64": b64.encode(&bytes) })).await;
        if !matches!(result, Ok(Fed::Taken)) {
            break;
        }
    }
    if matches!(result, Ok(Fed::Taken)) {
        result = write(&api, &stdin, json!({ "eof": true })).await;
    }
    let Err(e) = result else { return };
    // A shell that has exited needs no stopping (its exit is on its way
    // in the output stream).
    let exited = api
        .get(&process)
        .await
        .is_ok_and(|v| v["data"]["state"] == "exited");
    if exited {
        return;
    }
    eprintln!("hearth: could not pass the input on to the shell: {e:#}; stopping it");
    stop(&api, &process).await;
}

/// What became of a write to a process's stdin.
enum Fed {
    Taken,
    /// The process's stdin is closed or broken: it takes no more input.
    Refused,
}

/// One write (or the close) of a process's stdin.
async fn write(api: &Api, stdin: &str, body: serde_json::Value) -> anyhow::Result<Fed> {
    match api.post(stdin, body).await {
        Ok(_) => Ok(Fed::Taken),
        // The agent refuses a write to a closed or broken pipe as an
        // invalid request (422); ours are always well formed.
        Err(e)
            if e.downcast_ref::<ApiError>()
                .is_some_and(|a| a.code() == Some("validation_error")) =>
        {
            Ok(Fed::Refused)
        }
        Err(e) => Err(e),
    }
}

/// Ends the shell's process (and its group); it may be gone already.
async fn stop(api: &Api, process: &str) {
    let _ = api.delete(process).await;
}
