//! `/sandboxes/{id}/previews`, `/expose`, `/preview-token`: previews of a
//! sandbox's ports and their share tokens. The proxy that serves them is
//! `crate::proxy`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json;

use super::{data, ApiJson, AppState};
use crate::core::clock::rfc3339;
use crate::core::keys::Caller;
use crate::core::previews::{SHARE_TTL_DEFAULT, SHARE_TTL_MAX};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::model::{PreviewRecord, Visibility};
use crate::validate::range;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sandboxes/{id}/previews", post(create).get(list))
        .route(
            "/sandboxes/{id}/previews/{prv}",
            get(get_one).delete(delete),
        )
        .route(
            "/sandboxes/{id}/previews/{prv}/share",
            post(share).delete(revoke),
        )
        .route("/sandboxes/{id}/expose", post(expose))
        .route("/sandboxes/{id}/preview-token", post(preview_token))
}

fn view(state: &AppState, p: &PreviewRecord) -> serde_json::Value {
    json!({
        "id": p.id,
        "sandbox_id": p.sandbox_id,
        "port": p.port,
        "visibility": p.visibility,
        "slug": p.slug,
        "url": state.preview_url(&p.slug),
        "created_at": rfc3339(p.created_at),
    })
}

fn port(bad: &mut Vec<FieldError>, v: Option<i64>) -> u16 {
    match v {
        None => {
            bad.push(FieldError::new("port", "is required"));
            0
        }
        v => range(bad, "port", v, 1, 65535, 0) as u16,
    }
}

#[derive(Debug, Deserialize)]
struct CreateBody {
    port: Option<i64>,
    visibility: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<impl IntoResponse> {
    let mut bad = Vec::new();
    let port = port(&mut bad, body.port);
    let visibility = match body.visibility.as_deref() {
        None => Visibility::Private,
        Some(v) => Visibility::parse(v).unwrap_or_else(|| {
            bad.push(FieldError::new("visibility", "must be public or private"));
            Visibility::Private
        }),
    };
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let p = state.create_preview(&caller, &id, port, visibility).await?;
    Ok((StatusCode::CREATED, data(view(&state, &p))))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let list = state.list_previews(&caller, &id).await?;
    Ok(data(
        list.iter().map(|p| view(&state, p)).collect::<Vec<_>>(),
    ))
}

async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let p = state.get_preview(&caller, &id, &pid).await?;
    Ok(data(view(&state, &p)))
}

async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let p = state.delete_preview(&caller, &id, &pid).await?;
    Ok(data(view(&state, &p)))
}

#[derive(Debug, Default, Deserialize)]
struct PortBody {
    port: Option<i64>,
}

async fn expose(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PortBody>,
) -> ApiResult<impl IntoResponse> {
    let mut bad = Vec::new();
    let port = port(&mut bad, body.port);
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let p = state.expose(&caller, &id, port).await?;
    let url = state.preview_url(&p.slug);
    Ok(axum::Json(
        json!({ "url": url, "port": p.port, "data": view(&state, &p) }),
    ))
}

#[derive(Debug, Default, Deserialize)]
struct ShareBody {
    ttl_seconds: Option<i64>,
}

/// `url` with the token as `?preview_token=`.
fn with_token(url: &str, token: &str) -> String {
    format!("{url}/?preview_token={token}")
}

async fn share(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
    ApiJson(body): ApiJson<ShareBody>,
) -> ApiResult<impl IntoResponse> {
    let mut bad = Vec::new();
    let ttl = range(
        &mut bad,
        "ttl_seconds",
        body.ttl_seconds,
        1,
        i64::from(SHARE_TTL_MAX),
        SHARE_TTL_DEFAULT,
    );
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let p = state.get_preview(&caller, &id, &pid).await?;
    let t = state
        .mint_preview_token(&caller, &id, Some(&p), ttl)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "data": {
                "id": p.id,
                "token_id": t.record.id,
                "share_token_prefix": t.record.prefix,
                "share_token_expires_at": rfc3339(t.record.expires_at),
            },
            "preview_token": t.token,
            "share_url": with_token(&state.preview_url(&p.slug), &t.token),
        })),
    ))
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let n = state.revoke_preview_shares(&caller, &id, &pid).await?;
    Ok(data(json!({ "id": pid, "revoked": n })))
}

#[derive(Debug, Default, Deserialize)]
struct TokenBody {
    expires_in: Option<i64>,
    port: Option<i64>,
}

/// A token for one port's preview (made private when missing), or for every
/// preview of the sandbox when no port is given.
async fn preview_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TokenBody>,
) -> ApiResult<impl IntoResponse> {
    let mut bad = Vec::new();
    let ttl = range(
        &mut bad,
        "expires_in",
        body.expires_in,
        1,
        i64::from(SHARE_TTL_MAX),
        SHARE_TTL_DEFAULT,
    );
    let port = body.port.map(|p| port(&mut bad, Some(p)));
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let preview = match port {
        Some(port) => Some(state.expose(&caller, &id, port).await?),
        None => {
            state.get_sandbox(&caller, &id).await?;
            None
        }
    };
    let t = state
        .mint_preview_token(&caller, &id, preview.as_ref(), ttl)
        .await?;
    let url = preview.map(|p| with_token(&state.preview_url(&p.slug), &t.token));
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "token": t.token,
            "url": url,
            "expires_at": rfc3339(t.record.expires_at),
        })),
    ))
}
