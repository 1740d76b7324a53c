//! A runtime instance's health check: `GET health_check_path` on its port
//! through the agent's tunnel, until it answers 2xx or 3xx.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::keys::Caller;
use crate::model::DeploymentVersionRecord;
use crate::Core;

/// One check's own deadline (a listener that never answers).
const ONE_CHECK: Duration = Duration::from_secs(5);
/// Pause between checks.
const EVERY: Duration = Duration::from_millis(250);

/// The status code of an HTTP/1.x answer's first line.
fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

impl Core {
    /// Waits until the instance answers its health check, for at most
    /// `within`; the last reason it did not, when it never does.
    pub(super) async fn wait_healthy(
        self: &Arc<Self>,
        caller: &Caller,
        instance_id: &str,
        v: &DeploymentVersionRecord,
        within: Duration,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let last = match tokio::time::timeout(
                ONE_CHECK,
                self.check_once(caller, instance_id, v),
            )
            .await
            {
                Ok(Ok(code)) if (200..400).contains(&code) => return Ok(()),
                Ok(Ok(code)) => format!("GET {} answered {code}", v.health_check_path),
                Ok(Err(why)) => why,
                Err(_) => format!("GET {} did not answer within 5 s", v.health_check_path),
            };
            if tokio::time::Instant::now() + EVERY > deadline {
                return Err(format!("not healthy within {} s: {last}", within.as_secs()));
            }
            tokio::time::sleep(EVERY).await;
        }
    }

    async fn check_once(
        self: &Arc<Self>,
        caller: &Caller,
        instance_id: &str,
        v: &DeploymentVersionRecord,
    ) -> Result<u16, String> {
        let guest = self
            .guest(caller, instance_id, false)
            .await
            .map_err(|e| e.message)?;
        let mut pipe = guest
            .tunnel(v.runtime_port)
            .await
            .map_err(|e| format!("port {}: {}", v.runtime_port, e.message))?;
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: hearth-health-check\r\nConnection: close\r\n\r\n",
            v.health_check_path
        );
        pipe.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut head = vec![0u8; 256];
        let mut got = 0;
        while got < head.len() && !head[..got].contains(&b'\n') {
            let n = pipe
                .read(&mut head[got..])
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            got += n;
        }
        status_of(&head[..got]).ok_or_else(|| {
            format!(
                "port {} did not answer HTTP ({} bytes)",
                v.runtime_port, got
            )
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_status_comes_from_the_first_line() {
        assert_eq!(super::status_of(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(
            super::status_of(b"HTTP/1.0 302 Found\r\nLocation: /"),
            Some(302)
        );
        assert_eq!(super::status_of(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(super::status_of(b""), None);
    }
}
