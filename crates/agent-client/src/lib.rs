//! Host-side client of `hearth-agent`: one HTTP/2 connection per guest,
//! multiplexing every call and stream, re-established on demand.
//!
//! Typed calls live in one module per resource (`exec`, `files`, `pty`,
//! `tunnel`); this module owns the connection and the request plumbing.

mod body;
mod connect;
mod exec;
mod files;
mod pty;
mod tunnel;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hearth_agent_protocol::{AgentError, ErrorCode};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Mutex;

pub use body::{ByteStream, Duplex, NdjsonStream};
pub use connect::Connector;
pub use files::encode_query_bytes;

/// Body type of every request.
pub type ClientBody = BoxBody<Bytes, std::io::Error>;

/// What can go wrong talking to an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentClientError {
    #[error("connect to agent at {target}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("agent handshake: {0}")]
    Handshake(String),
    #[error("agent speaks protocol {agent}, host speaks {host}")]
    VersionMismatch { agent: u32, host: u32 },
    #[error("agent connection")]
    Http(#[source] hyper::Error),
    #[error("agent answered {status}: {}", error.message)]
    Agent { status: u16, error: AgentError },
    #[error("decode agent answer")]
    Decode(#[source] serde_json::Error),
    #[error("agent stream")]
    Stream(#[source] std::io::Error),
    #[error("agent did not answer within {0:?}")]
    Timeout(Duration),
    /// The guest is not trusted: nothing it sends is read without a bound.
    #[error("agent answer is over {limit} bytes")]
    TooLarge { limit: usize },
}

impl AgentClientError {
    /// The agent's error code, when the agent answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            AgentClientError::Agent { error, .. } => Some(error.code),
            _ => None,
        }
    }

    /// True when the failure is the connection, not the request.
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            AgentClientError::Connect { .. }
                | AgentClientError::Handshake(_)
                | AgentClientError::Http(_)
                | AgentClientError::Timeout(_)
        )
    }
}

pub type ClientResult<T> = Result<T, AgentClientError>;

/// A cheap-to-clone handle to one agent.
#[derive(Debug, Clone)]
pub struct AgentClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connector: Connector,
    conn: Mutex<Option<SendRequest<ClientBody>>>,
    connect_timeout: Duration,
}

impl AgentClient {
    /// A client that connects lazily through `connector`.
    pub fn new(connector: Connector) -> Self {
        AgentClient {
            inner: Arc::new(Inner {
                connector,
                conn: Mutex::new(None),
                connect_timeout: Duration::from_secs(10),
            }),
        }
    }

    /// Same, with a different deadline for connect + handshake.
    pub fn with_connect_timeout(connector: Connector, timeout: Duration) -> Self {
        AgentClient {
            inner: Arc::new(Inner {
                connector,
                conn: Mutex::new(None),
                connect_timeout: timeout,
            }),
        }
    }

    pub fn connector(&self) -> &Connector {
        &self.inner.connector
    }

    /// Connects now (if not connected) and returns once the agent answered
    /// the handshake.
    pub async fn connect(&self) -> ClientResult<()> {
        self.sender().await.map(|_| ())
    }

    /// Drops the current connection; the next call opens a new one.
    pub async fn disconnect(&self) {
        self.inner.conn.lock().await.take();
    }

    async fn sender(&self) -> ClientResult<SendRequest<ClientBody>> {
        let mut guard = self.inner.conn.lock().await;
        if let Some(s) = guard.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        let timeout = self.inner.connect_timeout;
        let s = tokio::time::timeout(timeout, self.inner.connector.open())
            .await
            .map_err(|_| AgentClientError::Timeout(timeout))??;
        *guard = Some(s.clone());
        Ok(s)
    }

    /// Sends a request, reconnecting once when the connection turns out to
    /// be dead before the request left. Non-2xx answers become
    /// [`AgentClientError::Agent`].
    pub(crate) async fn send(&self, req: Request<ClientBody>) -> ClientResult<Response<Incoming>> {
        let mut req = req;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut sender = self.sender().await?;
            let sent = match sender.ready().await {
                Ok(()) => sender.try_send_request(req).await,
                Err(e) => {
                    self.forget().await;
                    if attempt < 2 {
                        continue;
                    }
                    return Err(AgentClientError::Http(e));
                }
            };
            match sent {
                Ok(resp) => return check_status(resp).await,
                Err(mut e) => {
                    self.forget().await;
                    match e.take_message() {
                        // Never left this host: safe to send again on a new connection.
                        Some(back) if attempt < 2 => req = back,
                        _ => return Err(AgentClientError::Http(e.into_error())),
                    }
                }
            }
        }
    }

    /// Drops a connection that failed, so the next call reconnects.
    async fn forget(&self) {
        self.inner.conn.lock().await.take();
    }

    /// JSON in, JSON out.
    pub(crate) async fn call<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        method: Method,
        uri: &str,
        body: Option<&Req>,
    ) -> ClientResult<Resp> {
        let resp = self.send(json_request(method, uri, body)?).await?;
        read_json(resp).await
    }

    /// A request whose answer is an NDJSON stream of `T`.
    pub(crate) async fn stream<Req: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        uri: &str,
        body: Option<&Req>,
    ) -> ClientResult<NdjsonStream<T>> {
        let resp = self.send(json_request(method, uri, body)?).await?;
        Ok(NdjsonStream::new(resp.into_body()))
    }

    /// A request with a raw body; `uri` is path and query, like `call`'s.
    pub(crate) async fn send_raw(
        &self,
        method: Method,
        uri: &str,
        content_type: &str,
        body: ClientBody,
    ) -> ClientResult<Response<Incoming>> {
        let req = Request::builder()
            .method(method)
            .uri(format!("{BASE}{uri}"))
            .header(http::header::CONTENT_TYPE, content_type)
            .body(body)
            .map_err(|e| AgentClientError::Handshake(format!("build request: {e}")))?;
        self.send(req).await
    }
}

/// The authority every request carries; the agent ignores it.
const BASE: &str = "http://agent";

fn json_request<Req: Serialize + ?Sized>(
    method: Method,
    uri: &str,
    body: Option<&Req>,
) -> ClientResult<Request<ClientBody>> {
    let bytes = match body {
        Some(b) => Bytes::from(serde_json::to_vec(b).map_err(AgentClientError::Decode)?),
        None => Bytes::new(),
    };
    Request::builder()
        .method(method)
        .uri(format!("{BASE}{uri}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(full(bytes))
        .map_err(|e| AgentClientError::Handshake(format!("build request: {e}")))
}

pub(crate) fn full(bytes: Bytes) -> ClientBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Largest JSON answer read whole: a unary exec's two capped outputs in
/// base64 (16 MiB each by default) with room to spare.
pub const MAX_JSON_ANSWER: usize = 96 << 20;
/// Largest error answer read.
const MAX_ERROR_ANSWER: usize = 64 << 10;

/// Reads a whole body, failing once it passes `limit` bytes (what is read
/// so far is dropped; the connection is not).
pub(crate) async fn collect_limited(body: Incoming, limit: usize) -> ClientResult<Bytes> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(h) => Err(AgentClientError::Http(*h)),
            Err(_) => Err(AgentClientError::TooLarge { limit }),
        },
    }
}

async fn check_status(resp: Response<Incoming>) -> ClientResult<Response<Incoming>> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let bytes = collect_limited(resp.into_body(), MAX_ERROR_ANSWER).await?;
    let error = serde_json::from_slice::<AgentError>(&bytes).unwrap_or_else(|_| AgentError {
        code: if status == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorCode::PayloadTooLarge
        } else {
            ErrorCode::Internal
        },
        message: String::from_utf8_lossy(&bytes).into_owned(),
    });
    Err(AgentClientError::Agent {
        status: status.as_u16(),
        error,
    })
}

async fn read_json<T: DeserializeOwned>(resp: Response<Incoming>) -> ClientResult<T> {
    let bytes = collect_limited(resp.into_body(), MAX_JSON_ANSWER).await?;
    serde_json::from_slice(&bytes).map_err(AgentClientError::Decode)
}
