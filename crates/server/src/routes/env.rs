//! `/sandboxes/{id}/env`: the env a sandbox was created with. Read-only
//! while the sandbox exists: changes would not reach processes already
//! running, so PUT and DELETE answer 409 `invalid_state` (setting env on a
//! paused sandbox is not built yet). Secret values are never returned.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::{data, AppState};
use crate::core::keys::Caller;
use crate::error::ApiResult;

pub fn routes() -> Router<AppState> {
    Router::new().route("/sandboxes/{id}/env", get(list).put(change).delete(change))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let rec = state.get_sandbox(&caller, &id).await?;
    let vars: Vec<_> = rec
        .env
        .iter()
        .map(|(k, v)| {
            if rec.secret_env.contains(k) {
                json!({ "key": k, "value": null, "secret": true })
            } else {
                json!({ "key": k, "value": v, "secret": false })
            }
        })
        .collect();
    Ok(data(json!({ "vars": vars })))
}

async fn change(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    state.change_env(&caller, &id).await?;
    Ok(data(json!({})))
}
