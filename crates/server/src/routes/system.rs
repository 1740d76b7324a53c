//! `/healthz` (no key), `/openapi.json`, `/metrics` (an admin key: the
//! numbers cover every tenant). `[metrics] listen` adds a listener that
//! serves `/metrics` alone, without a key ([`metrics_router`]).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::SYSTEM;
use super::{presented_key, AppState, Auth};
use crate::core::keys::Caller;
use crate::error::{ApiError, ApiResult};

/// The checked-in OpenAPI document; a test keeps it equal to the routes.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// `/healthz` and `/openapi.json`, documented at the root; their
/// `/api/v1` twins and the root `/metrics` (which checks its key itself)
/// are served but not documented twice.
pub fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .route("/api/v1/healthz", get(healthz))
        .routes(routes!(openapi))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(root_metrics))
}

pub fn authed_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// The metrics-only listener's application: `GET /metrics` without a key,
/// nothing else.
pub fn metrics_router(core: AppState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(render))
        .with_state(core)
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = SYSTEM,
    summary = "Health and version",
    responses((status = 200, description = "OK: `{status, version, vmm}`", body = Object)),
)]
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let caps = state.vmm_capabilities();
    axum::Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "vmm": { "backend": caps.backend, "accel": caps.accel, "kvm": caps.kvm },
    }))
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = SYSTEM,
    summary = "This document",
    responses((status = 200, description = "OK", body = Object)),
)]
async fn openapi() -> impl IntoResponse {
    ([(http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// Metrics cover every tenant: an admin key only.
fn admin_only(caller: &Caller) -> ApiResult<()> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "metrics cover every tenant: they need an admin key",
        ))
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = SYSTEM,
    summary = "Prometheus metrics (admin key)",
    description = "Also served at the root `/metrics` with the same key, and without a key \
                   on the `[metrics] listen` address when one is configured. A key that is \
                   not an admin key gets 403 `forbidden`.",
    responses((status = 200, description = "OK", body = String, content_type = "text/plain")),
)]
async fn metrics(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<impl IntoResponse> {
    admin_only(&caller)?;
    Ok(render(State(state)).await)
}

/// The root `/metrics`: outside `/api/v1`, so it checks the key itself.
async fn root_metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let key = presented_key(&headers)
        .ok_or_else(|| ApiError::unauthorized("missing API key (Authorization: Bearer <key>)"))?;
    admin_only(&state.authenticate(&key).await?)?;
    Ok(render(State(state)).await)
}

async fn render(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
