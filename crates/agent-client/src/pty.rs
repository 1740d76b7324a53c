//! PTY calls: open a shell on a terminal, attach to it as a byte pipe,
//! resize, close.

use hearth_agent_protocol::{routes, PtyInfo, PtyOpenRequest, PtyResizeRequest};
use http::Method;

use crate::body::{channel_body, Duplex};
use crate::{AgentClient, ClientResult};

impl AgentClient {
    /// Starts a shell on a new terminal.
    pub async fn pty_open(&self, req: &PtyOpenRequest) -> ClientResult<PtyInfo> {
        self.call(Method::POST, routes::PTY, Some(req)).await
    }

    /// Every session, running or exited, oldest first.
    pub async fn pty_list(&self) -> ClientResult<Vec<PtyInfo>> {
        self.call::<(), _>(Method::GET, routes::PTY, None).await
    }

    pub async fn pty_get(&self, id: &str) -> ClientResult<PtyInfo> {
        self.call::<(), _>(Method::GET, &pty_path(id, ""), None)
            .await
    }

    /// Attaches to a session: writes are terminal input, reads are terminal
    /// output, starting with recent scrollback. Replaces any other attached
    /// client. Dropping the pipe detaches; the shell keeps running. Reads end
    /// when the shell's output ends.
    pub async fn pty_attach(&self, id: &str) -> ClientResult<Duplex> {
        let (tx, body) = channel_body();
        let resp = self
            .send_raw(
                Method::POST,
                &pty_path(id, "/io"),
                "application/octet-stream",
                body,
            )
            .await?;
        Ok(Duplex::new(tx, resp.into_body()))
    }

    /// Changes the terminal size; the shell gets SIGWINCH.
    pub async fn pty_resize(&self, id: &str, cols: u16, rows: u16) -> ClientResult<()> {
        let req = PtyResizeRequest { cols, rows };
        self.call::<_, PtyInfo>(Method::POST, &pty_path(id, "/resize"), Some(&req))
            .await
            .map(|_| ())
    }

    /// Hangs up the shell (SIGKILL after a short grace) and forgets the session.
    pub async fn pty_close(&self, id: &str) -> ClientResult<()> {
        self.call::<(), PtyInfo>(Method::DELETE, &pty_path(id, ""), None)
            .await
            .map(|_| ())
    }
}

/// `/v1/pty/{id}{suffix}` with the id percent-encoded as one path segment.
fn pty_path(id: &str, suffix: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    format!(
        "{}/{}{suffix}",
        routes::PTY,
        percent_encoding::utf8_percent_encode(id, SEGMENT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_one_encoded_segment() {
        assert_eq!(pty_path("pty_ab12", "/io"), "/v1/pty/pty_ab12/io");
        assert_eq!(pty_path("a/b c", ""), "/v1/pty/a%2Fb%20c");
    }
}
