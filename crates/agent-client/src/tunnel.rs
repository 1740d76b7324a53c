//! TCP tunnels: a byte pipe to `127.0.0.1:PORT` inside the guest.

use hearth_agent_protocol::routes;
use http::Method;

use crate::body::{channel_body, Duplex};
use crate::{AgentClient, ClientResult};

impl AgentClient {
    /// Connects to `127.0.0.1:port` in the guest. A port nothing listens on
    /// fails here with [`ErrorCode::PortClosed`](hearth_agent_protocol::ErrorCode::PortClosed).
    /// `shutdown` on the pipe half-closes the guest connection; reads end
    /// when the guest closes its side.
    pub async fn tunnel(&self, port: u16) -> ClientResult<Duplex> {
        let (tx, body) = channel_body();
        let resp = self
            .send_raw(
                Method::POST,
                &format!("{}?port={port}", routes::TUNNEL),
                "application/octet-stream",
                body,
            )
            .await?;
        Ok(Duplex::new(tx, resp.into_body()))
    }
}
