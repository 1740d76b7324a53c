//! `/healthz` (no key), `/openapi.json`, `/metrics`.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::SYSTEM;
use super::AppState;

/// The checked-in OpenAPI document; a test keeps it equal to the routes.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// `/healthz` and `/openapi.json`, documented at the root; their
/// `/api/v1` twins and the root `/metrics` are served but not documented
/// twice.
pub fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .route("/api/v1/healthz", get(healthz))
        .routes(routes!(openapi))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
}

pub fn authed_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
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

#[utoipa::path(
    get,
    path = "/metrics",
    tag = SYSTEM,
    summary = "Prometheus metrics",
    responses((status = 200, description = "OK", body = String, content_type = "text/plain")),
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
