//! Terminals: open and close a PTY shell, and the WebSocket bridge that
//! copies its bytes both ways (binary frames, resize control messages).

use super::*;

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/terminals",
    tag = TERM,
    summary = "Open a terminal",
    params(SandboxId),
    request_body = TerminalBody,
    responses((status = 201, description = "Created: `{id, ws_url, pid, cols, rows}`", body = Data), E404And422),
)]
pub(super) async fn open_terminal(
    State(state): State<AppState>,
    Auth(caller): Auth,
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
pub(super) async fn close_terminal(
    State(state): State<AppState>,
    Auth(caller): Auth,
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
pub(super) async fn terminal_ws(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, tid)): Path<(String, String)>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let ws = ws.map_err(|e| {
        ApiError::bad_request(format!("expected a WebSocket upgrade: {}", e.body_text()))
    })?;
    let guest = state.guest(&caller, &id, true).await?;
    guest.terminal_get(&tid).await?;
    let pipe = guest.terminal_attach(&tid).await?;
    let core = state.clone();
    Ok(ws.on_upgrade(move |socket| async move {
        let revoked = core.key_revoked(&caller);
        Bridge { guest, tid }.run(socket, pipe, revoked).await;
    }))
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
pub(super) struct Bridge {
    guest: Guest,
    tid: String,
}

impl Bridge {
    /// Copies bytes both ways until either side ends. The client leaving
    /// detaches (the shell keeps running); the shell's output ending closes
    /// the socket. So does `revoked` completing (the key that opened the
    /// socket was revoked): a close frame 1008 says so, the shell runs on.
    async fn run(
        self,
        socket: WebSocket,
        pipe: Pipe,
        revoked: impl std::future::Future<Output = ()>,
    ) {
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
            tokio::pin!(revoked);
            loop {
                tokio::select! {
                    () = &mut revoked, if !client_gone => {
                        let _ = ws_tx
                            .send(Message::Close(Some(CloseFrame {
                                code: 1008,
                                reason: "the API key was revoked".into(),
                            })))
                            .await;
                        return;
                    }
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

pub(super) fn error_notice(code: &str, message: &str) -> String {
    json!({ "type": "error", "code": code, "message": message }).to_string()
}
