//! PTY sessions and TCP tunnels, end to end against the real agent binary.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use hearth_agent_client::{AgentClient, Duplex};
use hearth_agent_protocol::{ErrorCode, PtyOpenRequest};
use hearth_test_support::{wait_until, AgentProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;

const AGENT: &str = env!("CARGO_BIN_EXE_hearth-agent");
const DEADLINE: Duration = Duration::from_secs(10);
/// Set through the environment so the tests can tell when the shell waits
/// for input.
const PROMPT: &str = "PTYTEST> ";

async fn start() -> (AgentProcess, AgentClient) {
    let agent = AgentProcess::start(AGENT.as_ref(), &[]).await.unwrap();
    let client = agent.client();
    (agent, client)
}

fn sh_request(env: &[(&str, &str)]) -> PtyOpenRequest {
    let mut map: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    map.entry("PS1".into()).or_insert_with(|| PROMPT.into());
    PtyOpenRequest {
        cols: 80,
        rows: 24,
        shell: Some("/bin/sh".into()),
        env: map,
        ..Default::default()
    }
}

/// Terminal output read so far, kept across waits.
struct Term {
    pipe: Duplex,
    out: Vec<u8>,
}

impl Term {
    fn new(pipe: Duplex) -> Term {
        Term {
            pipe,
            out: Vec::new(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    /// Reads until the output since `from` contains `needle`; returns the
    /// offset just past it. Fails on deadline or end of stream.
    async fn wait_for(&mut self, from: usize, needle: &str) -> usize {
        let found = timeout(DEADLINE, async {
            loop {
                if let Some(i) = find(&self.out[from..], needle.as_bytes()) {
                    return Some(from + i + needle.len());
                }
                let mut buf = [0u8; 4096];
                let n = self.pipe.read(&mut buf).await.unwrap();
                if n == 0 {
                    return None;
                }
                self.out.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        match found {
            Ok(Some(end)) => end,
            Ok(None) => panic!("stream ended before {needle:?}; output: {:?}", self.text()),
            Err(_) => panic!(
                "no {needle:?} within {DEADLINE:?}; output: {:?}",
                self.text()
            ),
        }
    }

    /// Waits for the prompt, types `line` and returns the offset where the
    /// command's own output starts (after the echoed command line).
    async fn run(&mut self, from: usize, line: &str) -> usize {
        let at = self.wait_for(from, PROMPT).await;
        self.pipe
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        self.wait_for(at, &format!("{line}\r\n")).await
    }

    /// Reads until the stream ends; fails on deadline.
    async fn wait_end(&mut self) {
        timeout(DEADLINE, async {
            let mut buf = [0u8; 4096];
            loop {
                let n = self.pipe.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                self.out.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("stream did not end; output: {:?}", self.text()));
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------- pty

#[tokio::test]
async fn pty_echo_returns_output_on_its_own_line() {
    let (_agent, c) = start().await;
    let info = c.pty_open(&sh_request(&[])).await.unwrap();
    assert!(info.id.starts_with("pty_"), "{info:?}");
    assert_eq!((info.cols, info.rows, info.exited), (80, 24, false));
    assert!(info.pid > 0);

    let mut t = Term::new(c.pty_attach(&info.id).await.unwrap());
    let at = t.run(0, "echo hi").await;
    let end = t.wait_for(at, "\r\n").await;
    assert_eq!(&t.out[at..end], b"hi\r\n", "output: {:?}", t.text());

    assert_eq!(c.pty_get(&info.id).await.unwrap(), info);
    assert_eq!(c.pty_list().await.unwrap(), vec![info]);
}

#[tokio::test]
async fn pty_resize_reaches_the_shell() {
    let (_agent, c) = start().await;
    let info = c.pty_open(&sh_request(&[])).await.unwrap();
    let mut t = Term::new(c.pty_attach(&info.id).await.unwrap());
    let at = t.run(0, "stty size").await;
    let end = t.wait_for(at, "\r\n").await;
    assert_eq!(&t.out[at..end], b"24 80\r\n", "output: {:?}", t.text());

    c.pty_resize(&info.id, 100, 40).await.unwrap();
    let got = c.pty_get(&info.id).await.unwrap();
    assert_eq!((got.cols, got.rows), (100, 40));
    let at = t.run(end, "stty size").await;
    let end = t.wait_for(at, "\r\n").await;
    assert_eq!(&t.out[at..end], b"40 100\r\n", "output: {:?}", t.text());

    let err = c.pty_resize(&info.id, 0, 40).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest));
}

#[tokio::test]
async fn pty_honors_env_cwd_and_default_term() {
    let (agent, c) = start().await;
    let dir = agent.path("work dir");
    std::fs::create_dir(&dir).unwrap();
    let dir = std::fs::canonicalize(dir).unwrap();
    let mut req = sh_request(&[("FOO", "bar baz")]);
    req.cwd = Some(dir.to_str().unwrap().to_string());
    let info = c.pty_open(&req).await.unwrap();

    let mut t = Term::new(c.pty_attach(&info.id).await.unwrap());
    let at = t.run(0, "echo \"<$FOO>\"; pwd; echo \"[$TERM]\"").await;
    let end = t.wait_for(at, "]\r\n").await;
    let got = String::from_utf8_lossy(&t.out[at..end]).into_owned();
    assert_eq!(
        got,
        format!("<bar baz>\r\n{}\r\n[xterm-256color]\r\n", dir.display())
    );
    // The terminal is set up for UTF-8 line editing.
    let at = t.run(end, "stty -a | tr ' ' '\\n' | grep iutf8").await;
    let end = t.wait_for(at, "\r\n").await;
    assert_eq!(&t.out[at..end], b"iutf8\r\n", "output: {:?}", t.text());
}

#[tokio::test]
async fn pty_reattach_replays_scrollback_and_keeps_the_shell() {
    let (_agent, c) = start().await;
    let info = c.pty_open(&sh_request(&[])).await.unwrap();

    let mut t = Term::new(c.pty_attach(&info.id).await.unwrap());
    let at = t.run(0, "echo first-$((20+22))").await;
    t.wait_for(at, "first-42\r\n").await;
    drop(t);

    // Output produced while nobody is attached lands in the scrollback too.
    let mut t = Term::new(c.pty_attach(&info.id).await.unwrap());
    t.wait_for(0, "first-42\r\n").await;
    let at = t.run(0, "echo second-$((2+3))").await;
    t.wait_for(at, "second-5\r\n").await;
    let got = c.pty_get(&info.id).await.unwrap();
    assert_eq!((got.pid, got.exited), (info.pid, false));

    // A second attach replaces the first: the first stream ends.
    let mut t2 = Term::new(c.pty_attach(&info.id).await.unwrap());
    t.wait_end().await;
    t2.wait_for(0, "second-5\r\n").await;
    let at = t2.run(0, "echo third-$((3+4))").await;
    t2.wait_for(at, "third-7\r\n").await;
}

#[tokio::test]
async fn pty_stalled_or_vanished_client_does_not_wedge_the_shell() {
    let (_agent, c) = start().await;
    let info = c.pty_open(&sh_request(&[])).await.unwrap();
    let mut stalled = Term::new(c.pty_attach(&info.id).await.unwrap());
    // ~33 MB of output: more than the HTTP/2 windows and queues hold, so a
    // client that never reads would stop the shell if it stayed attached.
    stalled.run(0, "seq 1 4000000; echo done-$((5*5))").await;

    // A new client takes over and sees the output through to the end.
    let mut t = Term::new(c.pty_attach(&info.id).await.unwrap());
    let mut lines = 0u64;
    // Only the tail of `t.out` is kept below; the output is large.
    timeout(Duration::from_secs(60), async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = t.pipe.read(&mut buf).await.unwrap();
            assert!(n > 0, "stream ended early");
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            t.out.extend_from_slice(&buf[..n]);
            if find(&t.out, b"done-25\r\n").is_some() {
                return;
            }
            if t.out.len() > 4096 {
                t.out.drain(..t.out.len() - 64);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("shell stalled after {lines} lines"));
    // The replaced client's stream has ended.
    stalled.wait_end().await;

    // Dropped mid-flood without reading: the session carries on.
    t.run(0, "seq 1 2000000; echo done-$((6*6))").await;
    drop(t);
    let mut t = Term::new(c.pty_attach(&info.id).await.unwrap());
    timeout(Duration::from_secs(60), async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = t.pipe.read(&mut buf).await.unwrap();
            assert!(n > 0, "stream ended early");
            t.out.extend_from_slice(&buf[..n]);
            if find(&t.out, b"done-36\r\n").is_some() {
                return;
            }
            if t.out.len() > 4096 {
                t.out.drain(..t.out.len() - 64);
            }
        }
    })
    .await
    .unwrap();
    let at = t.run(0, "echo still-$((7*7))").await;
    t.wait_for(at, "still-49\r\n").await;
    c.health().await.unwrap();
}

#[tokio::test]
async fn pty_shell_exit_ends_stream_and_marks_exited() {
    let (_agent, c) = start().await;
    let info = c.pty_open(&sh_request(&[])).await.unwrap();
    let mut t = Term::new(c.pty_attach(&info.id).await.unwrap());
    t.run(0, "exit 3").await;
    t.wait_end().await;
    let id = info.id.clone();
    let c2 = c.clone();
    wait_until(DEADLINE, "pty marked exited", || {
        let (c, id) = (c2.clone(), id.clone());
        async move { c.pty_get(&id).await.ok().filter(|i| i.exited) }
    })
    .await
    .unwrap();
    // The stream ends only once the exit is recorded, with its code.
    assert_eq!(c.pty_get(&id).await.unwrap().exit_code, Some(3));
    // Still listed until deleted; attaching replays and ends at once.
    assert!(c.pty_list().await.unwrap().iter().any(|i| i.id == id));
    let mut t = Term::new(c.pty_attach(&id).await.unwrap());
    t.wait_end().await;
    assert!(t.text().contains("exit 3"), "replay: {:?}", t.text());
    c.pty_close(&id).await.unwrap();
    assert_eq!(
        c.pty_get(&id).await.unwrap_err().code(),
        Some(ErrorCode::PtyNotFound)
    );
}

#[tokio::test]
async fn pty_close_kills_the_shell() {
    let (_agent, c) = start().await;
    let info = c.pty_open(&sh_request(&[])).await.unwrap();
    let proc_dir = format!("/proc/{}", info.pid);
    assert!(std::path::Path::new(&proc_dir).exists());
    let mut t = Term::new(c.pty_attach(&info.id).await.unwrap());
    // A foreground job that ignores nothing but keeps running.
    t.run(0, "sleep 1000").await;

    c.pty_close(&info.id).await.unwrap();
    assert_eq!(
        c.pty_get(&info.id).await.unwrap_err().code(),
        Some(ErrorCode::PtyNotFound)
    );
    assert!(c.pty_list().await.unwrap().is_empty());
    t.wait_end().await;
    wait_until(DEADLINE, "shell process gone", || {
        let gone = !std::path::Path::new(&proc_dir).exists();
        async move { gone.then_some(()) }
    })
    .await
    .unwrap();
    assert_eq!(
        c.pty_close(&info.id).await.unwrap_err().code(),
        Some(ErrorCode::PtyNotFound)
    );
}

#[tokio::test]
async fn pty_bad_requests_are_typed_errors() {
    let (_agent, c) = start().await;
    for id in ["pty_nope", "a/b", "%%"] {
        let code =
            |r: Result<_, hearth_agent_client::AgentClientError>| r.err().and_then(|e| e.code());
        assert_eq!(
            code(c.pty_get(id).await.map(|_| ())),
            Some(ErrorCode::PtyNotFound),
            "{id}"
        );
        assert_eq!(
            code(c.pty_resize(id, 80, 24).await),
            Some(ErrorCode::PtyNotFound)
        );
        assert_eq!(code(c.pty_close(id).await), Some(ErrorCode::PtyNotFound));
        assert_eq!(
            code(c.pty_attach(id).await.map(|_| ())),
            Some(ErrorCode::PtyNotFound)
        );
    }
    let err = c.pty_get("pty_nope").await.unwrap_err();
    assert!(
        matches!(
            err,
            hearth_agent_client::AgentClientError::Agent { status: 404, .. }
        ),
        "{err:?}"
    );

    for (cols, rows) in [(0, 24), (80, 0), (1001, 24)] {
        let mut req = sh_request(&[]);
        req.cols = cols;
        req.rows = rows;
        let err = c.pty_open(&req).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{cols}x{rows}");
    }
    let mut req = sh_request(&[]);
    req.shell = Some("/no/such/shell".into());
    let err = c.pty_open(&req).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::FileNotFound));
    assert!(err.to_string().contains("/no/such/shell"), "{err}");

    let mut req = sh_request(&[]);
    req.shell = Some("sh".into());
    let err = c.pty_open(&req).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidPath));

    let mut req = sh_request(&[]);
    req.cwd = Some("/no/such/dir".into());
    let err = c.pty_open(&req).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::FileNotFound));

    assert!(c.pty_list().await.unwrap().is_empty());
    c.health().await.unwrap();
}

#[tokio::test]
async fn pty_default_shell_is_a_login_shell() {
    let (_agent, c) = start().await;
    let info = c
        .pty_open(&PtyOpenRequest {
            cols: 80,
            rows: 24,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut t = Term::new(c.pty_attach(&info.id).await.unwrap());
    // No prompt to rely on: a login shell's profile may set its own.
    t.pipe
        .write_all(
            b"echo \"shell=$0 login=$(shopt -q login_shell 2>/dev/null && echo yes) mark=$((6*7))\"\n",
        )
        .await
        .unwrap();
    let at = t.wait_for(0, "mark=42").await;
    let line_start = t.out[..at].iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let line = String::from_utf8_lossy(&t.out[line_start..at]).into_owned();
    let expected = if std::path::Path::new("/bin/bash").exists() {
        "shell=/bin/bash login=yes mark=42"
    } else {
        "shell=/bin/sh login= mark=42"
    };
    assert!(line.ends_with(expected), "line: {line:?}");
    c.pty_close(&info.id).await.unwrap();
}

// ---------------------------------------------------------------- tunnel

/// A TCP echo server; reports the bytes each connection echoed once its
/// client half-closed.
async fn echo_server() -> (u16, mpsc::UnboundedReceiver<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = sock.into_split();
                if let Ok(n) = tokio::io::copy(&mut r, &mut w).await {
                    let _ = w.shutdown().await;
                    let _ = tx.send(n);
                }
            });
        }
    });
    (port, rx)
}

#[tokio::test]
async fn tunnel_echoes_and_half_close_ends_the_stream() {
    let (_agent, c) = start().await;
    let (port, mut echoed) = echo_server().await;
    let mut pipe = c.tunnel(port).await.unwrap();

    pipe.write_all(b"hello tunnel").await.unwrap();
    let mut back = [0u8; 12];
    timeout(DEADLINE, pipe.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"hello tunnel");

    pipe.write_all(b" and more").await.unwrap();
    pipe.shutdown().await.unwrap();
    let mut rest = Vec::new();
    timeout(DEADLINE, pipe.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest, b" and more");
    let n = timeout(DEADLINE, echoed.recv()).await.unwrap().unwrap();
    assert_eq!(n, 21);
}

#[tokio::test]
async fn tunnel_guest_close_ends_the_stream() {
    let (_agent, c) = start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        sock.write_all(b"greeting, bye").await.unwrap();
    });
    let mut pipe = c.tunnel(port).await.unwrap();
    let mut got = Vec::new();
    timeout(DEADLINE, pipe.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"greeting, bye");
}

#[tokio::test]
async fn tunnel_moves_8_mib_intact() {
    let (_agent, c) = start().await;
    let (port, mut echoed) = echo_server().await;
    let pipe = c.tunnel(port).await.unwrap();

    let mut data = vec![0u8; 8 * 1024 * 1024];
    let mut x: u32 = 0x1234_5678;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let (mut rd, mut wr) = tokio::io::split(pipe);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&sent).await.unwrap();
        wr.shutdown().await.unwrap();
        wr
    });
    let mut got = Vec::with_capacity(data.len());
    timeout(Duration::from_secs(60), rd.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    let _wr = writer.await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "echoed bytes differ");
    let n = timeout(DEADLINE, echoed.recv()).await.unwrap().unwrap();
    assert_eq!(n, data.len() as u64);
}

#[tokio::test]
async fn tunnel_to_closed_port_is_port_closed() {
    let (_agent, c) = start().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = c.tunnel(port).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::PortClosed), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("nothing listens on 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        matches!(
            err,
            hearth_agent_client::AgentClientError::Agent { status: 502, .. }
        ),
        "{err:?}"
    );
    let err = c.tunnel(0).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest));
    c.health().await.unwrap();
}

#[tokio::test]
async fn tunnel_client_disconnect_closes_the_guest_connection() {
    let (_agent, c) = start().await;
    let (port, mut echoed) = echo_server().await;
    let mut pipe = c.tunnel(port).await.unwrap();
    pipe.write_all(b"abc").await.unwrap();
    let mut back = [0u8; 3];
    timeout(DEADLINE, pipe.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    drop(pipe);
    // The echo server sees its peer go away.
    let n = timeout(DEADLINE, echoed.recv()).await.unwrap().unwrap();
    assert_eq!(n, 3);
    c.health().await.unwrap();
}

#[tokio::test]
async fn tunnels_run_concurrently_on_one_connection() {
    let (_agent, c) = start().await;
    let (port, _echoed) = echo_server().await;
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let pipe = c.tunnel(port).await.unwrap();
            let payload: Vec<u8> = (0..256 * 1024).map(|j| (j as u8) ^ i).collect();
            let (mut rd, mut wr) = tokio::io::split(pipe);
            let sent = payload.clone();
            let w = tokio::spawn(async move {
                wr.write_all(&sent).await.unwrap();
                wr.shutdown().await.unwrap();
                wr
            });
            let mut got = Vec::new();
            rd.read_to_end(&mut got).await.unwrap();
            let _wr = w.await.unwrap();
            assert!(got == payload, "tunnel {i}: echoed bytes differ");
        }));
    }
    timeout(Duration::from_secs(60), async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .unwrap();
}
