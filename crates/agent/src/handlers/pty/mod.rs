//! PTY sessions: an interactive shell on a pseudo-terminal that outlives any
//! one client. A reader task drains the master all the time into a small
//! scrollback and, when a client is attached, into its response body; input,
//! resize and close act on the master. One client is attached at a time; a
//! new attach replaces the old one.
//!
//! This module holds the routes and handlers; `table` is the registry of
//! sessions and starts shells, `session` is one session's lifecycle,
//! `attach` its output scrollback and attached client, and `terminal` the
//! PTY device itself.

mod attach;
mod session;
mod table;
mod terminal;

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use futures_util::StreamExt;
use hearth_agent_protocol::{routes, PtyInfo, PtyOpenRequest, PtyResizeRequest};
use http::request::Parts;

use super::{AgentRouter, AgentState};
use crate::error::{HandlerError, HandlerResult};
use crate::extract::JsonBody;
use attach::pump_input;
use table::validate_size;
pub use table::PtyTable;

const OCTET_STREAM: &str = "application/octet-stream";

pub fn routes() -> AgentRouter {
    AgentRouter::new()
        .route(routes::PTY, get(list).post(open))
        .route(&format!("{}/{{id}}", routes::PTY), get(info).delete(close))
        .route(&format!("{}/{{id}}/io", routes::PTY), post(attach))
        .route(&format!("{}/{{id}}/resize", routes::PTY), post(resize))
}

// ---------------------------------------------------------------- handlers

async fn open(
    agent: AgentState,
    JsonBody(req): JsonBody<PtyOpenRequest>,
) -> HandlerResult<Json<PtyInfo>> {
    agent.ptys.open(&agent, &req).map(Json)
}

async fn list(agent: AgentState) -> Json<Vec<PtyInfo>> {
    Json(agent.ptys.list())
}

async fn info(agent: AgentState, PtyId(id): PtyId) -> HandlerResult<Json<PtyInfo>> {
    agent.ptys.get(&id).map(|s| Json(s.info()))
}

async fn resize(
    agent: AgentState,
    PtyId(id): PtyId,
    JsonBody(req): JsonBody<PtyResizeRequest>,
) -> HandlerResult<Json<PtyInfo>> {
    validate_size(req.cols, req.rows)?;
    let session = agent.ptys.get(&id)?;
    session.resize(req.cols, req.rows)?;
    Ok(Json(session.info()))
}

async fn close(agent: AgentState, PtyId(id): PtyId) -> HandlerResult<Json<PtyInfo>> {
    let session = agent.ptys.remove(&id)?;
    // In a task of its own: a client that hangs up mid-close must not leave
    // the shell half-killed.
    tokio::spawn(session.terminate())
        .await
        .map(Json)
        .map_err(|e| HandlerError::internal(format!("close pty {id}: {e}")))
}

/// Full duplex: the request body is terminal input, the response body is
/// terminal output (scrollback first), until the shell's output ends or
/// another client attaches.
async fn attach(agent: AgentState, PtyId(id): PtyId, body: Body) -> HandlerResult<Response> {
    let session = agent.ptys.get(&id)?;
    let (scrollback, live) = session.attach();
    let replay = futures_util::stream::iter((!scrollback.is_empty()).then_some(scrollback));
    let stream = match live {
        Some((rx, detach, generation)) => {
            tokio::spawn(pump_input(session, body, detach, generation));
            replay
                .chain(tokio_stream::wrappers::ReceiverStream::new(rx))
                .boxed()
        }
        None => replay.boxed(),
    };
    let stream = stream.map(Ok::<_, Infallible>);
    Ok((
        [(http::header::CONTENT_TYPE, OCTET_STREAM)],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The `{id}` path segment, with a typed error.
#[derive(Debug)]
struct PtyId(String);

impl<S: Send + Sync> FromRequestParts<S> for PtyId {
    type Rejection = HandlerError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| PtyId(id))
            .map_err(|e| HandlerError::bad_request(format!("invalid pty id: {}", e.body_text())))
    }
}
