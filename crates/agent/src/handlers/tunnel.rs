//! TCP tunnels: a full-duplex byte stream to `127.0.0.1:PORT` inside the
//! guest, carried by one request/response pair. The preview proxy uses it to
//! reach dev servers. The connection is made before any streaming starts, so
//! a closed port is an ordinary error answer.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use axum::routing::post;
use hearth_agent_protocol::{routes, ErrorCode, TunnelQuery};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::AgentRouter;
use crate::error::{HandlerError, HandlerResult};
use crate::extract::QueryArgs;
use crate::stream;

/// A local connect that takes longer than this is not going to succeed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn routes() -> AgentRouter {
    AgentRouter::new().route(routes::TUNNEL, post(open))
}

/// `POST /v1/tunnel?port=N`: request body -> socket, socket -> response body.
async fn open(QueryArgs(q): QueryArgs<TunnelQuery>, body: Body) -> HandlerResult<Response> {
    let socket = connect(q.port).await?;
    if let Err(e) = socket.set_nodelay(true) {
        tracing::debug!(port = q.port, error = %e, "set TCP_NODELAY");
    }
    let (reader, mut writer) = socket.into_split();
    let abandoned = CancellationToken::new();
    let reader = GuestReader {
        inner: reader,
        on_abandon: Some(abandoned.clone().drop_guard()),
    };
    tokio::spawn(async move {
        // Ends when the client ends its side (then the socket's write side
        // is shut down), or when the client goes away before the guest
        // finished, so a guest that stopped reading cannot pin this task.
        tokio::select! {
            _ = stream::pump_body_into(body, &mut writer) => {}
            _ = abandoned.cancelled() => {}
        }
    });
    tracing::debug!(port = q.port, "tunnel opened");
    Ok(stream::reader_response(reader, "application/octet-stream"))
}

async fn connect(port: u16) -> HandlerResult<TcpStream> {
    if port == 0 {
        return Err(HandlerError::bad_request("port must be 1..=65535"));
    }
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Err(HandlerError::new(
            ErrorCode::PortClosed,
            format!("nothing listens on {addr}"),
        )),
        Ok(Err(e)) => Err(HandlerError::new(
            ErrorCode::PortClosed,
            format!("connect {addr}: {e}"),
        )),
        Err(_) => Err(HandlerError::new(
            ErrorCode::PortClosed,
            format!("connect {addr}: timed out after {CONNECT_TIMEOUT:?}"),
        )),
    }
}

/// The guest-to-client direction. Dropped before the guest's end of stream
/// means the client is gone: the guard then stops the other direction too.
struct GuestReader {
    inner: OwnedReadHalf,
    on_abandon: Option<DropGuard>,
}

impl AsyncRead for GuestReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() == before && buf.remaining() > 0 {
            // The guest closed its side; the client may still be sending.
            if let Some(guard) = self.on_abandon.take() {
                guard.disarm();
            }
        }
        Poll::Ready(Ok(()))
    }
}
