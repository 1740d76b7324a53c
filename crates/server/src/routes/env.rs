//! `/sandboxes/{id}/env`: the env a sandbox was created with. Read-only
//! while the sandbox exists: changes would not reach processes already
//! running and a paused one resumes with the env its processes hold, so
//! PUT and DELETE answer 409 `invalid_state` with that reason. Secret
//! values are never returned.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use serde_json::json;
use utoipa::openapi::HttpMethod;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Data, SandboxId, E404, E409, ENV};
use super::{data, AppState};
use crate::error::ApiResult;
use crate::routes::Auth;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(super::openapi::summary_of(
            routes!(change),
            HttpMethod::Delete,
            "Remove env vars (always 409: env is set at create)",
        ))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/env",
    tag = ENV,
    summary = "List env vars",
    params(SandboxId),
    responses((status = 200, description = "OK: `{vars: [{key, value, secret}]}`", body = Data), E404),
)]
async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let rec = state.get_sandbox(&caller, &id).await?;
    let vars: Vec<_> = rec
        .env_keys()
        .into_iter()
        .map(|k| match rec.env.get(&k) {
            Some(v) if !rec.secret_env.contains(&k) => {
                json!({ "key": k, "value": v, "secret": false })
            }
            _ => json!({ "key": k, "value": null, "secret": true }),
        })
        .collect();
    Ok(data(json!({ "vars": vars })))
}

#[utoipa::path(
    method(put, delete),
    path = "/sandboxes/{id}/env",
    tag = ENV,
    summary = "Change env vars (always 409: env is set at create)",
    params(SandboxId),
    responses(E409, E404),
)]
async fn change(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    state.change_env(&caller, &id).await?;
    Ok(data(json!({})))
}
