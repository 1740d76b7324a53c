//! `/sandbox-templates`: the built-in templates (`default`, the Debian
//! image, alias `miosa-sandbox`; and `minimal`) and their warm snapshots.
//! Building templates from a BuildSpec is not built yet: those routes answer
//! 501 `not_implemented`.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

use super::AppState;
use crate::core::keys::Caller;
use crate::error::{ApiError, ApiResult};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sandbox-templates", get(list).post(not_built))
        .route("/sandbox-templates/validate", post(not_built))
        .route("/sandbox-templates/{id}", get(get_one))
        .route("/sandbox-templates/{id}/builds", post(not_built))
        .route("/sandbox-template-builds/{build_id}", get(not_built))
        .route(
            "/sandbox-template-builds/{build_id}/logs/stream",
            get(not_built),
        )
}

const BUILT_IN: [(&str, &str, &[&str]); 2] = [
    (
        "default",
        "Debian bookworm with Python (venv at /opt/venv), git, curl, Node.js",
        &["miosa-sandbox", "debian"],
    ),
    ("minimal", "busybox and the agent; boots in seconds", &[]),
];

fn view(state: &AppState, id: &str) -> Option<serde_json::Value> {
    let (id, description, aliases) = BUILT_IN
        .iter()
        .find(|(t, _, aliases)| *t == id || aliases.contains(&id))?;
    let warm: Vec<String> = std::fs::read_dir(state.data_dir().join("templates").join(id))
        .map(|versions| {
            versions
                .flatten()
                .flat_map(|v| std::fs::read_dir(v.path()).into_iter().flatten().flatten())
                .filter(|shape| shape.path().join("manifest.json").is_file())
                .filter_map(|shape| shape.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    Some(json!({
        "id": id,
        "name": id,
        "description": description,
        "aliases": aliases,
        "built_in": true,
        "warm_shapes": warm,
    }))
}

async fn list(State(state): State<AppState>, _caller: Caller) -> impl IntoResponse {
    let data: Vec<_> = BUILT_IN
        .iter()
        .filter_map(|(id, _, _)| view(&state, id))
        .collect();
    axum::Json(json!({ "default_template_id": "default", "data": data }))
}

async fn get_one(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    view(&state, &id)
        .map(|v| axum::Json(json!({ "data": v })))
        .ok_or_else(|| ApiError::not_found("template"))
}

async fn not_built(_caller: Caller) -> ApiError {
    ApiError::not_implemented("building templates from a BuildSpec")
}
