//! One request sent on to another node and its answer streamed back: the
//! body both ways as it comes (an SSE stream, a large upload), and a
//! WebSocket upgrade joined end to end.

use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{OriginalUri, Request};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::core::model::NodeRecord;
use crate::core::Core;
use crate::error::ApiError;
use crate::proxy::strip_hop_by_hop;

/// How long a node may take to accept a connection before it is called
/// unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// One pooled HTTP/1.1 client for every node.
static CLIENT: LazyLock<Client<HttpConnector, Body>> = LazyLock::new(|| {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(http)
});

/// Sends `req` to `base` (a node's API or proxy address) signed as
/// forwarded by this node, with `client` as the client's address. `Host`
/// stays as the client sent it when `keep_host` (the proxy routes by it),
/// else names the node. A node that cannot be reached is `Err` with why
/// (logged here).
pub async fn to_node(
    core: &Core,
    node: &NodeRecord,
    base: &str,
    client: Option<IpAddr>,
    mut req: Request,
    keep_host: bool,
) -> Result<Response, String> {
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    if keep_host {
        req.extensions_mut().insert(KeepHost);
    }
    let mut resp = send(core, node, base, client, req).await?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client) = client_upgrade {
            let upstream = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(client, upstream) {
                    Ok((c, u)) => {
                        let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "forwarded upgrade"),
                }
            });
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, Body::empty()));
        }
    }
    strip_hop_by_hop(resp.headers_mut(), false);
    Ok(resp.map(Body::new))
}

/// On a request [`send`] passes on with its `Host` as it is.
#[derive(Debug, Clone, Copy)]
struct KeepHost;

/// Sends `req` to `base` signed as forwarded by this node for `client`,
/// and answers the node's response as it comes.
pub async fn send(
    core: &Core,
    node: &NodeRecord,
    base: &str,
    client: Option<IpAddr>,
    req: Request,
) -> Result<http::Response<hyper::body::Incoming>, String> {
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let keep_host = req.extensions().get::<KeepHost>().is_some();
    let (mut parts, body) = req.into_parts();
    // Routers nested under `/api/v1` and `/e2b` see the path without it.
    let full = match parts.extensions.get::<OriginalUri>() {
        Some(o) => o.0.clone(),
        None => parts.uri.clone(),
    };
    let path = full
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    let uri: Uri = match format!("{}{path}", base.trim_end_matches('/')).parse() {
        Ok(u) => u,
        Err(e) => return Err(unreachable(node, format!("bad node address {base:?}: {e}"))),
    };
    strip_hop_by_hop(&mut parts.headers, upgrade);
    let h = &mut parts.headers;
    if !keep_host {
        h.remove(header::HOST);
        if let Some(v) = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            h.insert(header::HOST, v);
        }
    }
    h.insert(
        super::signature::HEADER,
        super::signature::sign(core, &parts.method, &path, client),
    );
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    CLIENT
        .request(Request::from_parts(parts, body))
        .await
        .map_err(|e| unreachable(node, e.to_string()))
}

fn unreachable(node: &NodeRecord, why: String) -> String {
    tracing::warn!(node_id = %node.id, api_url = %node.api_url, error = %why, "forwarding failed");
    format!(
        "node {} runs this sandbox and did not answer: {why}",
        node.id
    )
}

/// The API's answer when the node could not be reached: 502
/// `node_unreachable`.
pub fn unreachable_api(why: String) -> Response {
    ApiError::new(StatusCode::BAD_GATEWAY, "node_unreachable", why).into_response()
}
