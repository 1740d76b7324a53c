//! Creates across nodes: the node a create came to places it
//! ([`crate::core::nodes::placement`]) and, when another node gets it,
//! sends the request there with the promise of room it made
//! (`Hearth-Placement`, believed only on a request a node forwarded).

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::HeaderValue;
use axum::response::Response;

use super::{client_ip, forward, Forwarded, ForwardedOut};
use crate::core::nodes::placement::Placement;
use crate::core::sandboxes::CreateParams;
use crate::core::Core;
use crate::error::ApiError;

/// The promise of room a placed create carries to its node.
pub const PLACEMENT_HEADER: &str = "hearth-placement";

/// Places a create: `None` to run it here (with its promise in
/// `params.placement`), or the answer of the node it was sent to. A
/// create another node sent here runs here, under that node's promise.
pub async fn create(
    core: &Core,
    params: &mut CreateParams,
    region: Option<String>,
    parts: Parts,
    body: Bytes,
) -> Result<Option<Response>, ApiError> {
    if parts.extensions.get::<Forwarded>().is_some() {
        params.placement = parts
            .headers
            .get(PLACEMENT_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        return Ok(None);
    }
    let need = core.placement_need(params, region).await;
    let (node, promise) = match core.place(need).await? {
        Placement::Here(p) => {
            params.placement = p;
            return Ok(None);
        }
        Placement::Node(node, promise) => (node, promise),
    };
    let mut req = Request::from_parts(parts, Body::from(body));
    if let Ok(v) = HeaderValue::from_str(&promise) {
        req.headers_mut().insert(PLACEMENT_HEADER, v);
    }
    let ip = client_ip(&req);
    let resp = forward::to_node(core, &node, &node.api_url, ip, req, false).await;
    let mut resp = match resp {
        Ok(r) => r,
        Err(why) => {
            core.release_placement(&promise).await;
            forward::unreachable_api(why)
        }
    };
    resp.extensions_mut().insert(ForwardedOut);
    Ok(Some(resp))
}

/// A create from snapshot `snapshot_id` (E2B's `templateID: snap_...`):
/// the answer of the node that holds the snapshot's files when that is
/// another node, else `None` to start it here.
pub async fn to_snapshot_node(
    core: &Core,
    snapshot_id: &str,
    parts: Parts,
    body: Bytes,
) -> Result<Option<Response>, ApiError> {
    if parts.extensions.get::<Forwarded>().is_some() {
        return Ok(None);
    }
    let node = match core
        .snapshot_owner(snapshot_id)
        .await
        .map_err(crate::core::error::Error::from)?
    {
        crate::core::nodes::peers::Owner::Node(n) => n,
        crate::core::nodes::peers::Owner::Here => return Ok(None),
    };
    let req = Request::from_parts(parts, Body::from(body));
    let ip = client_ip(&req);
    let mut resp = forward::to_node(core, &node, &node.api_url, ip, req, false)
        .await
        .unwrap_or_else(forward::unreachable_api);
    resp.extensions_mut().insert(ForwardedOut);
    Ok(Some(resp))
}
