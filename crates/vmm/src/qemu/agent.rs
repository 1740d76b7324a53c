//! Reaching the guest agent after a start: a fast hello probe, then `init`
//! with the VM's identity, clock and fresh entropy.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use hearth_agent_client::AgentClientError;
use hearth_agent_protocol::{Base64Bytes, InitRequest};

use super::{io_err, now_ms, QemuError, QemuVm};

fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// Sends hellos on a throwaway connection at a fast cadence until the agent
/// answers one. A restored guest swallows the first hellos in the HTTP/2
/// session it had when the snapshot was taken; the agent client retries
/// only every 250 ms, so probing first cuts ~0.4 s off every restore.
/// Failures are left to the real connection that follows.
async fn probe_agent(socket: &Path) {
    use hearth_agent_protocol::handshake::{Hello, LineScanner, READY_PREFIX};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let Ok(mut stream) = tokio::net::UnixStream::connect(socket).await else {
        return;
    };
    let base = now_ms() as u64 ^ 0x5eed_0000_0000_0000;
    let mut scanner = LineScanner::default();
    let mut buf = [0u8; 1024];
    let mut pause = Duration::from_millis(10);
    for attempt in 0u64.. {
        let hello = Hello {
            generation: base.wrapping_add(attempt),
            protocol_version: hearth_agent_protocol::PROTOCOL_VERSION,
        };
        if stream
            .write_all(hello.hello_line().as_bytes())
            .await
            .is_err()
        {
            return;
        }
        let until = tokio::time::Instant::now() + pause;
        while let Ok(read) = tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            let n = match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let answered = scanner
                .feed(&buf[..n], |line| Hello::parse(line, READY_PREFIX))
                .is_some_and(|(ready, _)| ready.generation.wrapping_sub(base) <= attempt);
            if answered {
                return;
            }
        }
        // A restored guest answers within ~100 ms: probe densely for a
        // while, then calmly through a cold boot.
        if attempt == 200 {
            pause = Duration::from_millis(100);
        }
    }
}

impl QemuVm {
    /// Waits until the agent answers, the VMM exits, or `timeout`, and
    /// hands it its identity: id, hostname, env, host clock and fresh
    /// entropy (so restored clones never share random state). `init` is the
    /// first request on the channel: it is idempotent, so a connection that
    /// fails is simply retried, and a restore saves a round trip.
    pub(super) async fn wait_agent_and_init(
        &self,
        timeout: Duration,
        stage: &'static str,
    ) -> Result<(), QemuError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let entropy = random_bytes(32).map_err(io_err("read", Path::new("/dev/urandom")))?;
        let mut req = InitRequest {
            sandbox_id: self.spec.id.clone(),
            hostname: Some(self.spec.hostname().to_string()),
            env: self.spec.env.clone(),
            keep_env: self.spec.keep_env.clone(),
            clock_unix_ms: None,
            entropy: Some(Base64Bytes::from(entropy)),
        };
        let mut last: Option<AgentClientError> = None;
        tokio::select! {
            status = self.process.exited() => {
                return Err(self.exited_error(status, stage));
            }
            _ = tokio::time::timeout(timeout, probe_agent(&self.layout.agent_socket)) => {}
        }
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(QemuError::AgentTimeout {
                    waited: started.elapsed(),
                    console_tail: self.console_for_error(),
                    last,
                });
            }
            req.clock_unix_ms = Some(now_ms());
            tokio::select! {
                status = self.process.exited() => {
                    return Err(self.exited_error(status, stage));
                }
                r = tokio::time::timeout(remaining, self.agent.init(&req)) => match r {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(e)) if !e.is_connection() => return Err(QemuError::Agent(e)),
                    Ok(Err(e)) => {
                        last = Some(e);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(_) => {}
                },
            }
        }
    }
}
