//! Background processes and terminals end to end: the real server and a
//! real agent (host process) behind `/sandboxes/{id}/processes` and
//! `/sandboxes/{id}/terminals`.

mod common;

use std::time::Duration;

use common::{wait_until, TestServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

async fn body(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let v = resp.json().await.unwrap_or(Value::Null);
    (status, v)
}

/// One parsed SSE frame.
#[derive(Debug, Clone)]
struct Frame {
    event: String,
    id: Option<String>,
    data: Value,
}

fn parse_frames(text: &str) -> Vec<Frame> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut id = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            Some(Frame {
                event: event?,
                id,
                data: serde_json::from_str(&data).ok()?,
            })
        })
        .collect()
}

/// Reads an SSE response until `done` holds for the frames so far (or the
/// stream ends); fails after `WAIT`.
async fn read_sse(resp: reqwest::Response, done: impl Fn(&[Frame]) -> bool) -> Vec<Frame> {
    assert_eq!(resp.status(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let mut chunks = resp.bytes_stream();
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = chunks.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("sse chunk")));
            // Only whole frames count.
            let whole = text.rfind("\n\n").map(|i| &text[..i + 2]).unwrap_or("");
            if done(&parse_frames(whole)) {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("sse frames in time");
    parse_frames(&text)
}

struct Sandbox {
    srv: TestServer,
    id: String,
}

impl Sandbox {
    async fn new() -> Sandbox {
        let srv = TestServer::start().await;
        let sbx = srv.create_sandbox(json!({})).await;
        let id = sbx["id"].as_str().expect("id").to_string();
        Sandbox { srv, id }
    }

    fn url(&self, rest: &str) -> String {
        self.srv
            .url(&format!("/api/v1/sandboxes/{}{rest}", self.id))
    }

    async fn get(&self, rest: &str) -> (u16, Value) {
        body(
            self.srv
                .client
                .get(self.url(rest))
                .send()
                .await
                .expect("get"),
        )
        .await
    }

    async fn post(&self, rest: &str, v: Value) -> (u16, Value) {
        body(
            self.srv
                .client
                .post(self.url(rest))
                .json(&v)
                .send()
                .await
                .expect("post"),
        )
        .await
    }

    async fn delete(&self, rest: &str) -> (u16, Value) {
        body(
            self.srv
                .client
                .delete(self.url(rest))
                .send()
                .await
                .expect("delete"),
        )
        .await
    }

    /// Starts a background process and returns its pid.
    async fn start(&self, command: &str) -> u64 {
        let (st, v) = self.post("/processes", json!({ "command": command })).await;
        assert_eq!(st, 201, "{v}");
        v["data"]["pid"].as_u64().expect("pid")
    }

    async fn logs(&self, pid: u64, query: &str) -> Value {
        let (st, v) = self.get(&format!("/processes/{pid}/logs{query}")).await;
        assert_eq!(st, 200, "{v}");
        v["data"].clone()
    }

    /// Waits for `pid` to exit and returns the process object.
    async fn exited(&self, pid: u64) -> Value {
        wait_until(WAIT, "process exit", || async {
            let (st, v) = self.get(&format!("/processes/{pid}")).await;
            assert_eq!(st, 200, "{v}");
            (v["data"]["state"] == "exited").then(|| v["data"].clone())
        })
        .await
    }
}

#[tokio::test]
async fn background_process_runs_logs_streams_and_takes_signals() {
    let sb = Sandbox::new().await;
    let (st, v) = sb
        .post(
            "/processes",
            json!({"command": "sh -c 'echo a; sleep 30'", "name": "bg", "env": {"X": "1"}}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let p = &v["data"];
    let pid = p["pid"].as_u64().expect("pid");
    assert_eq!(p["name"], "bg");
    assert_eq!(p["command"], "sh -c 'echo a; sleep 30'");
    assert_eq!(p["state"], "running");
    assert_eq!(p["exit_code"], Value::Null);
    let started = p["started_at"].as_str().expect("started_at");
    assert!(
        chrono::DateTime::parse_from_rfc3339(started).is_ok(),
        "{started}"
    );

    // The list shows it running.
    let (st, v) = sb.get("/processes").await;
    assert_eq!(st, 200, "{v}");
    let listed = v["data"]
        .as_array()
        .expect("list")
        .iter()
        .find(|x| x["pid"].as_u64() == Some(pid))
        .cloned()
        .expect("listed");
    assert_eq!(listed["state"], "running");
    assert_eq!(v["page"]["total"], 1);

    // Logs hold its output.
    let logs = wait_until(WAIT, "logs with a", || async {
        let l = sb.logs(pid, "").await;
        (l["stdout"] == "a\n").then_some(l)
    })
    .await;
    assert_eq!(logs["stderr"], "");

    // The stream replays buffered output while it still runs.
    let resp = sb
        .srv
        .client
        .get(sb.url(&format!("/processes/{pid}/stream")))
        .send()
        .await
        .expect("stream");
    let frames = read_sse(resp, |f| f.iter().any(|f| f.event == "stdout")).await;
    let out = frames
        .iter()
        .find(|f| f.event == "stdout")
        .expect("stdout frame");
    assert_eq!(out.data["line"], "a");
    assert_eq!(out.data["data"], "a\n");
    assert_eq!(out.data["type"], "stdout");
    let seq = out.id.clone().expect("output frames carry their seq as id");
    assert_eq!(out.data["seq"].to_string(), seq);

    // SIGTERM ends it; the exit code says so.
    let (st, v) = sb
        .post(
            &format!("/processes/{pid}/signal"),
            json!({"signal": "SIGTERM"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let done = sb.exited(pid).await;
    let code = done["exit_code"].as_i64().expect("exit code");
    assert_ne!(code, 0, "{done}");
    assert!(done["exited_at"].is_string(), "{done}");

    // After exit the stream replays everything and ends with the exit frame.
    let resp = sb
        .srv
        .client
        .get(sb.url(&format!("/processes/{pid}/stream")))
        .send()
        .await
        .expect("stream");
    let frames = read_sse(resp, |f| f.iter().any(|f| f.event == "exit")).await;
    let kinds: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
    assert_eq!(kinds, ["stdout", "exit"], "{frames:?}");
    assert_eq!(frames[1].data["exit_code"].as_i64(), Some(code));

    // Resuming after the last seen seq skips what the client already has.
    let resp = sb
        .srv
        .client
        .get(sb.url(&format!("/processes/{pid}/stream")))
        .header("Last-Event-ID", &seq)
        .send()
        .await
        .expect("stream");
    let frames = read_sse(resp, |f| f.iter().any(|f| f.event == "exit")).await;
    let kinds: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
    assert_eq!(kinds, ["exit"], "{frames:?}");
    let resp = sb
        .srv
        .client
        .get(sb.url(&format!("/processes/{pid}/stream?from_seq={seq}")))
        .send()
        .await
        .expect("stream");
    let frames = read_sse(resp, |f| f.iter().any(|f| f.event == "exit")).await;
    let kinds: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
    assert_eq!(
        kinds,
        ["stdout", "exit"],
        "from_seq is inclusive: {frames:?}"
    );
}

#[tokio::test]
async fn stdin_reaches_the_process_and_eof_closes_it() {
    let sb = Sandbox::new().await;
    let pid = sb.start("cat").await;
    let (st, v) = sb
        .post(
            &format!("/processes/{pid}/stdin"),
            json!({"data": "hello\n"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    wait_until(WAIT, "cat to echo hello", || async {
        (sb.logs(pid, "").await["stdout"] == "hello\n").then_some(())
    })
    .await;
    // "bye\n" in base64.
    let (st, v) = sb
        .post(
            &format!("/processes/{pid}/stdin"),
            json!({"data_base64": "YnllCg==", "eof": true}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let done = sb.exited(pid).await;
    assert_eq!(done["exit_code"], 0, "{done}");
    assert_eq!(sb.logs(pid, "").await["stdout"], "hello\nbye\n");

    // Writing to closed stdin is the client's mistake, not a 500.
    let (st, v) = sb
        .post(&format!("/processes/{pid}/stdin"), json!({"data": "late"}))
        .await;
    assert!((400..500).contains(&st), "{st} {v}");
    // A body with nothing to do names the field.
    let (st, v) = sb.post(&format!("/processes/{pid}/stdin"), json!({})).await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["error"]["details"][0]["field"], "data");
}

#[tokio::test]
async fn logs_tail_the_last_lines() {
    let sb = Sandbox::new().await;
    let pid = sb.start("seq 1 300; echo oops >&2").await;
    sb.exited(pid).await;
    let all = sb.logs(pid, "?tail=0").await;
    assert_eq!(all["stdout"].as_str().expect("stdout").lines().count(), 300);
    let default = sb.logs(pid, "").await;
    let lines: Vec<String> = default["stdout"]
        .as_str()
        .expect("stdout")
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 200);
    assert_eq!(lines[0], "101");
    assert_eq!(lines[199], "300");
    let two = sb.logs(pid, "?tail=2").await;
    assert_eq!(two["stdout"], "299\n300\n");
    assert_eq!(two["stderr"], "oops\n");
    let (st, v) = sb.get(&format!("/processes/{pid}/logs?tail=abc")).await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["error"]["details"][0]["field"], "tail");
}

#[tokio::test]
async fn delete_kills_and_bad_input_is_rejected() {
    let sb = Sandbox::new().await;
    let pid = sb.start("sleep 30").await;
    let (st, v) = sb.delete(&format!("/processes/{pid}")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["state"], "exited", "{v}");
    assert_eq!(v["data"]["pid"].as_u64(), Some(pid));

    // Unknown or malformed pids are 404 not_found.
    for bad in ["999999", "abc", "0"] {
        let (st, v) = sb.get(&format!("/processes/{bad}")).await;
        assert_eq!(st, 404, "{bad}: {v}");
        assert_eq!(v["error"]["code"], "not_found", "{bad}: {v}");
    }
    let (st, v) = sb.delete("/processes/999999").await;
    assert_eq!(st, 404, "{v}");
    let (st, v) = sb.get("/processes/999999/logs").await;
    assert_eq!(st, 404, "{v}");
    let (st, v) = sb
        .post("/processes/999999/signal", json!({"signal": "INT"}))
        .await;
    assert_eq!(st, 404, "{v}");

    // Validation names the field.
    let (st, v) = sb.post("/processes", json!({"command": ""})).await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["error"]["code"], "validation_error");
    assert_eq!(v["error"]["details"][0]["field"], "command");
    let (st, v) = sb
        .post(
            &format!("/processes/{pid}/signal"),
            json!({"signal": "SIGNOPE"}),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["error"]["details"][0]["field"], "signal");

    // A numeric signal works too.
    let pid = sb.start("sleep 30").await;
    let (st, v) = sb
        .post(&format!("/processes/{pid}/signal"), json!({"signal": 9}))
        .await;
    assert_eq!(st, 200, "{v}");
    let done = sb.exited(pid).await;
    assert_ne!(done["exit_code"], 0, "{done}");

    // Processes of an unknown sandbox: 404 for the sandbox.
    let (st, v) = body(
        sb.srv
            .client
            .get(sb.srv.url("/api/v1/sandboxes/sbx_nope/processes"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(st, 404, "{v}");
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_ws(
    srv: &TestServer,
    path: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let url = srv.url(path).replacen("http://", "ws://", 1);
    let mut req = url.into_client_request().expect("ws request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", srv.admin_key).parse().expect("header"),
    );
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

/// Reads binary frames until their text holds `needle`; text frames
/// (server notices) are returned separately.
async fn read_until(ws: &mut Ws, needle: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut notices = Vec::new();
    let read = async {
        while let Some(msg) = ws.next().await {
            match msg.expect("ws frame") {
                Message::Binary(b) => {
                    out.push_str(&String::from_utf8_lossy(&b));
                    if out.contains(needle) {
                        return;
                    }
                }
                Message::Text(t) => notices.push(t.to_string()),
                Message::Close(_) => return,
                _ => {}
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} in terminal output: {out:?}"));
    (out, notices)
}

/// Opens an 80x24 `/bin/sh` terminal: its id and the create answer.
async fn open_sh(sb: &Sandbox) -> (String, Value) {
    let (st, v) = sb
        .post(
            "/terminals",
            json!({"cols": 80, "rows": 24, "shell": "/bin/sh"}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let tid = v["data"]["id"].as_str().expect("terminal id").to_string();
    (tid, v)
}

/// When the shell exits, the socket closes with its exit code as the
/// close reason (`exit N`).
#[tokio::test]
async fn a_terminal_socket_closes_with_the_shell_exit_code() {
    let sb = Sandbox::new().await;
    let (tid, _) = open_sh(&sb).await;
    let path = format!("/api/v1/sandboxes/{}/terminals/{tid}/ws", sb.id);
    let mut ws = connect_ws(&sb.srv, &path).await.expect("ws connect");
    ws.send(Message::binary(b"exit 7\n".to_vec()))
        .await
        .expect("send");
    let reason = tokio::time::timeout(WAIT, async {
        while let Some(msg) = ws.next().await {
            if let Message::Close(frame) = msg.expect("ws frame") {
                return frame.map(|f| f.reason.to_string());
            }
        }
        None
    })
    .await
    .expect("closed in time");
    assert_eq!(reason.as_deref(), Some("exit 7"));
}

/// A client that types and disconnects at once (a script, a closed tab)
/// must not lose what it typed: the bridge ends its input to the agent and
/// waits for the agent to confirm it reached the shell.
#[tokio::test]
async fn terminal_input_sent_just_before_a_disconnect_reaches_the_shell() {
    let sb = Sandbox::new().await;
    let (tid, _) = open_sh(&sb).await;
    let path = format!("/api/v1/sandboxes/{}/terminals/{tid}/ws", sb.id);
    for round in 0..5 {
        let mut ws = connect_ws(&sb.srv, &path).await.expect("ws connect");
        ws.send(Message::binary(
            format!("MARK{round}=set{round}\n").into_bytes(),
        ))
        .await
        .expect("send");
        ws.close(None).await.expect("close");
        drop(ws);

        let mut ws = connect_ws(&sb.srv, &path).await.expect("ws reconnect");
        ws.send(Message::binary(
            format!("echo M=$MARK{round}.\n").into_bytes(),
        ))
        .await
        .expect("send");
        let (out, _) = read_until(&mut ws, &format!("M=set{round}.")).await;
        assert!(
            out.contains(&format!("M=set{round}.")),
            "round {round}: {out}"
        );
        ws.close(None).await.expect("close");
    }
}

#[tokio::test]
async fn terminal_over_websocket() {
    let sb = Sandbox::new().await;
    let (tid, v) = open_sh(&sb).await;
    let ws_url = v["data"]["ws_url"].as_str().expect("ws_url");
    assert!(ws_url.starts_with("ws://"), "{ws_url}");
    assert!(
        ws_url.ends_with(&format!("/api/v1/sandboxes/{}/terminals/{tid}/ws", sb.id)),
        "{ws_url}"
    );

    let path = format!("/api/v1/sandboxes/{}/terminals/{tid}/ws", sb.id);
    let mut ws = connect_ws(&sb.srv, &path).await.expect("ws connect");
    // Typed text: the output holds the result, which the echoed command
    // line does not.
    ws.send(Message::text("echo hi-$((40+2))\n"))
        .await
        .expect("send");
    let (out, _) = read_until(&mut ws, "hi-42").await;
    assert!(out.contains("hi-42"), "{out}");

    // Binary input and a resize the shell sees.
    ws.send(Message::text(r#"{"type":"resize","cols":100,"rows":30}"#))
        .await
        .expect("resize");
    ws.send(Message::binary(b"stty size\n".to_vec()))
        .await
        .expect("send");
    let (out, notices) = read_until(&mut ws, "30 100").await;
    assert!(out.contains("30 100"), "{out}");
    assert!(notices.is_empty(), "{notices:?}");

    // A bad resize is answered with an error notice, not typed.
    ws.send(Message::text(r#"{"type":"resize","cols":0,"rows":30}"#))
        .await
        .expect("bad resize");
    let notice = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await.expect("frame").expect("ws frame") {
                Message::Text(t) => return t.to_string(),
                _ => continue,
            }
        }
    })
    .await
    .expect("notice in time");
    let notice: Value = serde_json::from_str(&notice).expect("notice json");
    assert_eq!(notice["type"], "error");
    assert_eq!(notice["code"], "validation_error");

    // Closing the terminal ends the socket.
    let (st, v) = sb.delete(&format!("/terminals/{tid}")).await;
    assert_eq!(st, 200, "{v}");
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(msg) = ws.next().await {
            if matches!(msg, Ok(Message::Close(_)) | Err(_)) {
                return;
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "socket stayed open after the terminal closed"
    );
    let (st, v) = sb.delete(&format!("/terminals/{tid}")).await;
    assert_eq!(st, 404, "{v}");

    // Unknown terminals are a 404 before any upgrade.
    let path = format!("/api/v1/sandboxes/{}/terminals/pty_nope/ws", sb.id);
    match connect_ws(&sb.srv, &path).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 404)
        }
        other => panic!("expected a 404, got {:?}", other.map(|_| "a socket")),
    }

    // Sizes are validated.
    let (st, v) = sb
        .post("/terminals", json!({"cols": 0, "rows": 2000}))
        .await;
    assert_eq!(st, 422, "{v}");
    let fields: Vec<&str> = v["error"]["details"]
        .as_array()
        .expect("details")
        .iter()
        .filter_map(|d| d["field"].as_str())
        .collect();
    assert_eq!(fields, ["cols", "rows"]);
}
