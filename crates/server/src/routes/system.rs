//! `/healthz` (no key), `/openapi.json`, `/metrics`.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::AppState;

/// The checked-in OpenAPI document; a test keeps it equal to the routes.
pub const OPENAPI: &str = include_str!("../../openapi.json");

pub fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
}

pub fn authed_routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let caps = state.vmm_capabilities();
    axum::Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "vmm": { "backend": caps.backend, "accel": caps.accel, "kvm": caps.kvm },
    }))
}

async fn openapi() -> impl IntoResponse {
    ([(http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
