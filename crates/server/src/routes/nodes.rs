//! Nodes (admin keys only): `GET /nodes` lists every `hearth serve`
//! sharing the store, with its capacity, labels, state, last heartbeat and
//! what its sandboxes take; `POST /nodes/{id}/drain` stops new placements
//! there and `POST /nodes/{id}/undrain` allows them again.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Data, E404And422, NODES};
use super::{data, AppState, Auth};
use crate::core::clock::rfc3339;
use crate::core::keys::Caller;
use crate::error::{ApiError, ApiResult};
use crate::model::{NodeLoad, NodeRecord};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(drain))
        .routes(routes!(undrain))
}

#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
struct NodeId {
    /// Node id.
    #[allow(dead_code)]
    id: String,
}

fn admin_only(caller: &Caller) -> ApiResult<()> {
    match caller.admin {
        true => Ok(()),
        false => Err(ApiError::forbidden(
            "nodes are the operator's: they need an admin key",
        )),
    }
}

fn view(n: &NodeRecord, load: NodeLoad, this: &str) -> Value {
    json!({
        "id": n.id,
        "api_url": n.api_url,
        "proxy_url": n.proxy_url,
        "state": n.state.as_str(),
        "labels": n.labels,
        "capacity": { "vcpus": n.vcpus, "memory_mb": n.memory_mb, "disk_mb": n.disk_mb },
        "load": {
            "sandboxes": load.sandboxes,
            "vcpus": load.vcpus,
            "memory_mb": load.memory_mb,
            "disk_mb": load.disk_mb,
        },
        "started_at": rfc3339(n.started_at),
        "heartbeat_at": rfc3339(n.heartbeat_at),
        "this_node": n.id == this,
    })
}

#[utoipa::path(
    get,
    path = "/nodes",
    tag = NODES,
    summary = "The nodes sharing the store, with capacity and load (admin)",
    responses((status = 200, description = "OK: `[{id, api_url, proxy_url, state, labels, capacity, load, started_at, heartbeat_at, this_node}]`", body = Data)),
)]
async fn list(State(state): State<AppState>, Auth(caller): Auth) -> ApiResult<impl IntoResponse> {
    admin_only(&caller)?;
    let this = state.node_id().to_string();
    let nodes: Vec<Value> = state
        .nodes()
        .await?
        .into_iter()
        .map(|(n, load)| view(&n, load, &this))
        .collect();
    Ok(data(nodes))
}

async fn set_drain(
    state: &AppState,
    caller: &Caller,
    id: &str,
    drain: bool,
) -> ApiResult<impl IntoResponse> {
    admin_only(caller)?;
    let node = state.drain_node(id, drain).await?;
    let load = state
        .nodes()
        .await?
        .into_iter()
        .find(|(n, _)| n.id == node.id)
        .map(|(_, l)| l)
        .unwrap_or_default();
    Ok(data(view(&node, load, state.node_id())))
}

#[utoipa::path(
    post,
    path = "/nodes/{id}/drain",
    tag = NODES,
    summary = "Stop new placements on a node (admin)",
    description = "What runs there keeps running. A node that is `lost` or `gone` answers 409.",
    params(NodeId),
    responses((status = 200, description = "OK: the node", body = Data), E404And422),
)]
async fn drain(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    set_drain(&state, &caller, &id, true).await
}

#[utoipa::path(
    post,
    path = "/nodes/{id}/undrain",
    tag = NODES,
    summary = "Allow new placements on a drained node again (admin)",
    params(NodeId),
    responses((status = 200, description = "OK: the node", body = Data), E404And422),
)]
async fn undrain(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    set_drain(&state, &caller, &id, false).await
}
