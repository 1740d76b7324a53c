//! `hearth sandbox shell ID`: an interactive terminal into a running
//! sandbox. Opens a PTY with `POST /sandboxes/{id}/terminals` at the local
//! terminal's size, bridges it over the terminal WebSocket (binary frames
//! are bytes both ways, a text frame resizes), and closes it when the shell
//! exits.
//!
//! The local terminal goes into raw mode for the session (restored on
//! every way out, panics included) and follows window size changes. Input
//! that is not a terminal takes no terminal at all ([`piped`]).

mod piped;

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use nix::sys::termios::{self, SetArg, Termios};
use serde_json::{json, Value};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::api::{error_line, Api};

/// Terminal size when the terminal reports none.
const DEFAULT_SIZE: (u16, u16) = (80, 24);
/// Largest dimension the server accepts.
const MAX_DIMENSION: u16 = 1000;
/// Largest chunk of stdin sent as one frame.
const READ_CHUNK: usize = 16 * 1024;

/// Runs an interactive shell (`shell`, else the sandbox's login shell) in
/// sandbox `id`; the exit status: the shell's exit code (the server puts
/// it in the close frame's reason), or 128 + the signal for a session
/// ended here by SIGINT, SIGTERM or SIGHUP.
pub async fn run(api: &Api, id: &str, shell: Option<&str>) -> anyhow::Result<u8> {
    if !std::io::stdin().is_terminal() {
        return piped::run(api, id, shell).await;
    }
    let (cols, rows) = local_size().unwrap_or(DEFAULT_SIZE);
    let mut body = json!({ "cols": cols, "rows": rows });
    if let Some(shell) = shell {
        body["shell"] = json!(shell);
    }
    let v = api
        .post(&format!("/sandboxes/{id}/terminals"), body)
        .await?;
    let tid = v["data"]["id"]
        .as_str()
        .with_context(|| format!("the server opened a terminal but sent no id: {v}"))?
        .to_string();
    let result = session(api, id, &tid).await;
    close(api, id, &tid).await;
    result
}

/// Attaches to terminal `tid` and bridges it to stdin/stdout until the
/// shell exits; the local terminal is restored before this returns.
async fn session(api: &Api, id: &str, tid: &str) -> anyhow::Result<u8> {
    let ws = connect(api, id, tid).await?;
    let (mut sink, mut frames) = ws.split();

    // Dropped (restoring the terminal) on every way out of this function.
    let raw = RawMode::enter().context("put the terminal into raw mode")?;

    let (tx, mut input) = mpsc::channel::<Vec<u8>>(16);
    spawn_stdin_reader(tx)?;
    let mut winch = signal(SignalKind::window_change()).ok();
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    let mut hangup = signal(SignalKind::hangup()).ok();

    let mut stdout = std::io::stdout();
    let mut input_open = true;
    let code = loop {
        tokio::select! {
            frame = frames.next() => match frame {
                Some(Ok(Message::Binary(bytes))) => {
                    if stdout.write_all(&bytes).and_then(|()| stdout.flush()).is_err() {
                        // Nobody reads our output any more; end the session.
                        break 0;
                    }
                }
                Some(Ok(Message::Text(text))) => notice(text.as_str(), &mut stdout),
                Some(Ok(Message::Close(frame))) => {
                    break frame.as_ref().and_then(|f| exit_code(&f.reason)).unwrap_or(0)
                }
                None => break 0,
                // Pings are answered by the socket itself.
                Some(Ok(_)) => {}
                Some(Err(tungstenite::Error::ConnectionClosed)) => break 0,
                Some(Err(e)) => {
                    drop(raw);
                    bail!("the terminal connection failed: {e}");
                }
            },
            chunk = input.recv(), if input_open => match chunk {
                Some(bytes) => {
                    if sink.send(Message::Binary(bytes.into())).await.is_err() {
                        // The socket is closing; its frames tell the rest.
                        input_open = false;
                    }
                }
                // The terminal hung up: nobody is left to type.
                None => break 0,
            },
            Some(()) = next_signal(&mut winch) => {
                if let Some((cols, rows)) = local_size() {
                    let resize = json!({ "type": "resize", "cols": cols, "rows": rows });
                    let _ = sink.send(Message::Text(resize.to_string().into())).await;
                }
            },
            Some(()) = next_signal(&mut interrupt) => break 128 + nix::libc::SIGINT as u8,
            Some(()) = next_signal(&mut terminate) => break 128 + nix::libc::SIGTERM as u8,
            Some(()) = next_signal(&mut hangup) => break 128 + nix::libc::SIGHUP as u8,
        }
    };
    drop(raw);
    let _ = sink.close().await;
    Ok(code)
}

/// The shell's exit code from the server's close reason (`exit 3`; a
/// code outside 0-255 is what a shell would report, mod 256).
fn exit_code(reason: &str) -> Option<u8> {
    let code: i64 = reason.strip_prefix("exit ")?.trim().parse().ok()?;
    Some(code.rem_euclid(256) as u8)
}

/// Opens the terminal's WebSocket at the server the API talks to.
async fn connect(
    api: &Api,
    id: &str,
    tid: &str,
) -> anyhow::Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let http_url = api.url(&format!("/sandboxes/{id}/terminals/{tid}/ws"));
    let url = if let Some(rest) = http_url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if http_url.starts_with("https://") {
        bail!(
            "this hearth was built without TLS WebSocket support, so it cannot open a terminal \
             at {}; use an http:// server URL",
            api.base
        );
    } else {
        bail!("the server URL {} is not http://", api.base);
    };
    let mut req = url
        .as_str()
        .into_client_request()
        .with_context(|| format!("invalid terminal URL {url}"))?;
    let auth = HeaderValue::from_str(&format!("Bearer {}", api.key))
        .context("the API key cannot be sent in a header")?;
    req.headers_mut().insert("authorization", auth);
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => {
            let status = reqwest::StatusCode::from_u16(resp.status().as_u16())
                .unwrap_or(reqwest::StatusCode::BAD_GATEWAY);
            let text = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned();
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            Err(anyhow!(error_line(status, &v)))
        }
        Err(e) => Err(anyhow!("cannot open the terminal at {url}: {e}")),
    }
}

/// Closes the terminal; one already gone (the shell exited and the
/// sandbox forgot it) is fine, other failures are a warning.
async fn close(api: &Api, id: &str, tid: &str) {
    let req = api
        .http
        .delete(api.url(&format!("/sandboxes/{id}/terminals/{tid}")))
        .bearer_auth(&api.key);
    match req.send().await {
        Ok(resp) if resp.status().is_success() || resp.status() == 404 => {}
        Ok(resp) => {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            eprintln!(
                "warning: could not close terminal {tid}: {}",
                error_line(status, &v)
            );
        }
        Err(e) => eprintln!("warning: could not close terminal {tid}: {e}"),
    }
}

/// A server text frame: an error notice goes to stderr, anything else is
/// shown as output.
fn notice(text: &str, stdout: &mut std::io::Stdout) {
    match serde_json::from_str::<Value>(text) {
        Ok(v) if v["type"] == "error" => {
            let msg = v["message"].as_str().unwrap_or(text);
            // The terminal is raw: a line ends with a carriage return too.
            eprint!("hearth: terminal: {msg}\r\n");
        }
        Ok(v) if v.get("type").is_some() => {}
        _ => {
            let _ = stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush());
        }
    }
}

/// Waits for the next delivery of `sig`; never ready when it could not be
/// installed, so a `select!` branch on it stays quiet.
async fn next_signal(sig: &mut Option<Signal>) -> Option<()> {
    match sig {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Reads stdin on a thread of its own (a blocking read the runtime need
/// not wait for at exit) into `tx`; the channel closes at end of input.
fn spawn_stdin_reader(tx: mpsc::Sender<Vec<u8>>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("shell-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx.blocking_send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        })
        .context("start the stdin reader")?;
    Ok(())
}

nix::ioctl_read_bad!(tiocgwinsz, nix::libc::TIOCGWINSZ, nix::libc::winsize);

/// (cols, rows) of the terminal on stdin, else stdout; `None` when neither
/// is a terminal (or it reports no size).
fn local_size() -> Option<(u16, u16)> {
    [nix::libc::STDIN_FILENO, nix::libc::STDOUT_FILENO]
        .into_iter()
        .find_map(|fd| {
            let mut ws = nix::libc::winsize {
                ws_row: 0,
                ws_col: 0,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer,
            // which points at a live local; a bad or non-terminal fd is an
            // error return, not undefined behaviour.
            unsafe { tiocgwinsz(fd, &mut ws) }.ok()?;
            (ws.ws_col > 0 && ws.ws_row > 0)
                .then(|| (ws.ws_col.min(MAX_DIMENSION), ws.ws_row.min(MAX_DIMENSION)))
        })
}

/// The terminal on stdin in raw mode; the saved settings come back when
/// this is dropped (also while a panic unwinds).
struct RawMode {
    stdin: std::io::Stdin,
    saved: Termios,
}

impl std::fmt::Debug for RawMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawMode").finish_non_exhaustive()
    }
}

impl RawMode {
    fn enter() -> nix::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        // TCSANOW keeps input typed before the switch.
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
        Ok(RawMode { stdin, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.stdin.as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::exit_code;

    #[test]
    fn the_close_reason_carries_the_exit_code() {
        assert_eq!(exit_code("exit 0"), Some(0));
        assert_eq!(exit_code("exit 5"), Some(5));
        assert_eq!(exit_code("exit 300"), Some(44));
        assert_eq!(exit_code("exit -1"), Some(255));
        assert_eq!(exit_code("terminal closed"), None);
        assert_eq!(exit_code("exit x"), None);
    }
}
