//! Opening a connection: the transport chosen at runtime, the Firecracker
//! vsock `CONNECT` exchange when needed, the hello handshake, then HTTP/2.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hearth_agent_protocol::handshake::{Hello, LineScanner, HELLO_RETRY_MS, READY_PREFIX};
use hearth_agent_protocol::{MIN_AGENT_PROTOCOL_VERSION, PROTOCOL_VERSION};
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::{AgentClientError, ClientBody, ClientResult};

const STREAM_WINDOW: u32 = 16 * 1024 * 1024;
const CONN_WINDOW: u32 = 64 * 1024 * 1024;
const MAX_FRAME: u32 = 1024 * 1024;

/// How to reach an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connector {
    /// A Unix socket the agent (or QEMU's virtio-serial chardev) listens on.
    Unix(PathBuf),
    /// Firecracker's vsock device: a Unix socket on which `CONNECT <port>\n`
    /// is answered by `OK <host port>\n`.
    FirecrackerVsock { uds: PathBuf, port: u32 },
}

impl std::fmt::Display for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Connector::Unix(p) => write!(f, "unix:{}", p.display()),
            Connector::FirecrackerVsock { uds, port } => {
                write!(f, "vsock:{}:{port}", uds.display())
            }
        }
    }
}

/// Generations only need to differ between connections of one process and
/// from whatever a snapshot replays; time plus a counter gives both.
fn next_generation() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    now.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed) << 40)
}

impl Connector {
    pub(crate) async fn open(&self) -> ClientResult<SendRequest<ClientBody>> {
        let target = self.to_string();
        let connect_err = |source| AgentClientError::Connect {
            target: target.clone(),
            source,
        };
        let mut stream = match self {
            Connector::Unix(path) => UnixStream::connect(path).await.map_err(connect_err)?,
            Connector::FirecrackerVsock { uds, port } => {
                let mut s = UnixStream::connect(uds).await.map_err(connect_err)?;
                firecracker_connect(&mut s, *port).await?;
                s
            }
        };
        hello(&mut stream).await?;
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .max_frame_size(MAX_FRAME)
            .max_send_buf_size(4 * 1024 * 1024)
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(20));
        let (sender, conn) = builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(AgentClientError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "agent connection ended");
            }
        });
        Ok(sender)
    }
}

async fn firecracker_connect(s: &mut UnixStream, port: u32) -> ClientResult<()> {
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|e| AgentClientError::Handshake(format!("send CONNECT: {e}")))?;
    // Read byte by byte: anything after the line belongs to the agent.
    let mut line = Vec::new();
    loop {
        let b = s
            .read_u8()
            .await
            .map_err(|e| AgentClientError::Handshake(format!("read CONNECT answer: {e}")))?;
        if b == b'\n' {
            break;
        }
        if line.len() > 64 {
            return Err(AgentClientError::Handshake(
                "CONNECT answer too long".into(),
            ));
        }
        line.push(b);
    }
    if line.starts_with(b"OK ") {
        Ok(())
    } else {
        Err(AgentClientError::Handshake(format!(
            "vsock port {port} refused: {}",
            String::from_utf8_lossy(&line)
        )))
    }
}

/// Sends hellos (a new generation each time, 10 ms apart doubling up to
/// [`HELLO_RETRY_MS`]) until the agent
/// answers the latest one; skips everything before that answer.
async fn hello<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> ClientResult<()> {
    let mut scanner = LineScanner::default();
    let mut buf = [0u8; 512];
    // A guest just restored from a snapshot swallows the first hellos while
    // its old session dies: retry fast at first, then back off.
    let mut retry = Duration::from_millis(10);
    loop {
        let me = Hello {
            generation: next_generation(),
            protocol_version: PROTOCOL_VERSION,
        };
        s.write_all(me.hello_line().as_bytes())
            .await
            .map_err(|e| AgentClientError::Handshake(format!("send hello: {e}")))?;
        let deadline = tokio::time::Instant::now() + retry;
        retry = (retry * 2).min(Duration::from_millis(HELLO_RETRY_MS));
        loop {
            let n = match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Err(_) => break, // resend with a new generation
                Ok(Ok(0)) => {
                    return Err(AgentClientError::Handshake(
                        "agent closed the connection".into(),
                    ))
                }
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(AgentClientError::Handshake(format!("read answer: {e}"))),
            };
            let mut chunk = &buf[..n];
            while let Some((ready, rest)) = scanner.feed(chunk, |l| Hello::parse(l, READY_PREFIX)) {
                chunk = rest;
                if ready.generation != me.generation {
                    continue; // answer to an older hello
                }
                if !(MIN_AGENT_PROTOCOL_VERSION..=PROTOCOL_VERSION)
                    .contains(&ready.protocol_version)
                {
                    return Err(AgentClientError::VersionMismatch {
                        agent: ready.protocol_version,
                        host: PROTOCOL_VERSION,
                    });
                }
                if !rest.is_empty() {
                    // The agent speaks only after our preface; nothing may follow.
                    return Err(AgentClientError::Handshake(
                        "unexpected bytes after answer".into(),
                    ));
                }
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_agent_protocol::handshake::{Hello, HELLO_PREFIX};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// An agent that answers every hello with `version`.
    async fn agent_answering(version: u32) -> ClientResult<()> {
        let (mut host, agent) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let (rd, mut wr) = tokio::io::split(agent);
            let mut lines = BufReader::new(rd).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Some(h) = Hello::parse(line.as_bytes(), HELLO_PREFIX) else {
                    continue;
                };
                let ready = Hello {
                    generation: h.generation,
                    protocol_version: version,
                };
                let _ = wr.write_all(ready.ready_line().as_bytes()).await;
            }
        });
        hello(&mut host).await
    }

    #[tokio::test]
    async fn agents_of_every_compatible_version_are_accepted() {
        for v in MIN_AGENT_PROTOCOL_VERSION..=PROTOCOL_VERSION {
            agent_answering(v).await.expect("compatible agent");
        }
        for v in [MIN_AGENT_PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1] {
            match agent_answering(v).await {
                Err(AgentClientError::VersionMismatch { agent, host }) => {
                    assert_eq!((agent, host), (v, PROTOCOL_VERSION))
                }
                other => panic!("version {v}: {other:?}"),
            }
        }
    }
}
