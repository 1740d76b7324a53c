//! Any node answers any request: a request for a sandbox another node runs
//! is forwarded there, whole and streamed both ways (REST, SSE, WebSocket),
//! from the API ([`api_layer`]) and from the preview proxy
//! ([`crate::proxy`]).
//!
//! A forwarded request keeps the caller's own credential (every node checks
//! it against the shared store) and gains a `Hearth-Forwarded-By` header
//! signed with the cluster's key ([`signature`]). That header is the
//! internal credential tenants never see or make: the node that gets it
//! trusts the client address it names and never forwards the request
//! again, and it is stripped before anything else reads the request.

pub mod forward;
pub mod moves;
pub mod place;
pub mod replicas;
pub mod signature;
pub mod transfer;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::core::nodes::peers::Owner;
use crate::error::ApiError;
use crate::routes::AppState;

/// On a request another node forwarded, verified: who sent it and the
/// client it came from.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub node_id: String,
    pub client_ip: Option<IpAddr>,
}

/// On a response this node got from another: the other node has already
/// audited and metered the request.
#[derive(Debug, Clone, Copy)]
pub struct ForwardedOut;

/// Strips `Hearth-Forwarded-By` from `req` and, when its signature holds,
/// marks the request [`Forwarded`].
pub fn accept(core: &crate::core::Core, req: &mut Request) -> Option<Forwarded> {
    let fwd = signature::verify(core, req)?;
    req.extensions_mut().insert(fwd.clone());
    Some(fwd)
}

/// The outermost layer of the API: a forwarded request's signature checked
/// and its header stripped before anything else reads the request.
pub async fn accept_layer(State(core): State<AppState>, mut req: Request, next: Next) -> Response {
    accept(&core, &mut req);
    next.run(req).await
}

/// The client's address: the one a forwarding node vouches for, else the
/// connection's.
pub fn client_ip(req: &Request) -> Option<IpAddr> {
    if let Some(f) = req.extensions().get::<Forwarded>() {
        return f.client_ip;
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The sandbox a request path is about: the segment after `sandboxes`
/// (`/api/v1/sandboxes/{id}/...`, `/e2b/sandboxes/{sandboxID}/...`), E2B's
/// ids in Hearth's form.
pub fn sandbox_of(path: &str) -> Option<String> {
    let mut parts = path.split('/');
    parts.find(|p| *p == "sandboxes")?;
    let id = parts.next().filter(|s| !s.is_empty() && *s != "by-name")?;
    match path.starts_with("/e2b/") {
        true => Some(crate::e2b::from_e2b(id)),
        false => Some(id.to_string()),
    }
}

/// Sends a request about another node's sandbox to that node, inside
/// authentication (a bad key never leaves this node) and idempotency (this
/// node keeps the record).
pub async fn api_layer(State(core): State<AppState>, req: Request, next: Next) -> Response {
    if req.extensions().get::<Forwarded>().is_some() {
        return next.run(req).await;
    }
    // Routers nested under `/api/v1` and `/e2b` see the path without it.
    let full = req
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| req.uri().clone(), |o| o.0.clone());
    let Some(id) = sandbox_of(full.path()) else {
        return next.run(req).await;
    };
    match core.sandbox_owner(&id).await {
        Ok(Owner::Here) => next.run(req).await,
        Ok(Owner::Node(node)) => {
            let ip = client_ip(&req);
            // The sandbox's record, when its node cannot answer (it may be
            // dying, not lost yet), comes from the store here.
            let record = full
                .path()
                .trim_end_matches('/')
                .ends_with(&format!("/{id}"))
                || full
                    .path()
                    .ends_with(&format!("/{}", crate::e2b::to_e2b(&id)));
            let (local, req) = if req.method() == http::Method::GET && record {
                let (parts, body) = req.into_parts();
                let copy = Request::from_parts(parts.clone(), axum::body::Body::empty());
                (Some(copy), Request::from_parts(parts, body))
            } else {
                (None, req)
            };
            match forward::to_node(&core, &node, &node.api_url, ip, req, false).await {
                Ok(mut resp) => {
                    resp.extensions_mut().insert(ForwardedOut);
                    resp
                }
                Err(why) => match local {
                    Some(copy) => next.run(copy).await,
                    None => forward::unreachable_api(why),
                },
            }
        }
        Err(e) => ApiError::from(crate::core::error::Error::from(e)).into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sandbox_comes_from_the_path() {
        let of = super::sandbox_of;
        assert_eq!(of("/api/v1/sandboxes/sbx_1/exec").as_deref(), Some("sbx_1"));
        assert_eq!(of("/api/v1/sandboxes/sbx_1").as_deref(), Some("sbx_1"));
        assert_eq!(of("/e2b/sandboxes/sbx-ab/pause").as_deref(), Some("sbx_ab"));
        assert_eq!(of("/api/v1/sandboxes/by-name/x"), None);
        assert_eq!(of("/api/v1/sandboxes"), None);
        assert_eq!(of("/api/v1/sandboxes/"), None);
        assert_eq!(of("/api/v1/deployments/d1"), None);
    }
}
