//! `/sandboxes/{id}/previews`, `/expose`, `/preview-token`,
//! `/share-tokens`: previews of a sandbox's ports and their share tokens
//! (minted, listed, revoked per preview, per sandbox or one by one). The
//! proxy that serves them is `crate::proxy`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Data, DataList, E404And422, PreviewId, SandboxId, E404, PREVIEW};
use super::{data, ApiJson, AppState};
use crate::core::clock::rfc3339;
use crate::core::previews::{SHARE_TOKENS_LISTED, SHARE_TTL_DEFAULT, SHARE_TTL_MAX};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::model::{PreviewRecord, PreviewTokenRecord, Visibility};
use crate::routes::Auth;
use crate::validate::range;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one, delete))
        .routes(routes!(share, list_shares, revoke))
        .routes(routes!(revoke_preview_share))
        .routes(routes!(expose))
        .routes(routes!(preview_token))
        .routes(routes!(list_share_tokens, revoke_share_tokens))
        .routes(routes!(revoke_share_token))
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

/// A share token as listed: never its secret, only its prefix.
fn token_view(state: &AppState, t: &PreviewTokenRecord) -> serde_json::Value {
    json!({
        "id": t.id,
        "sandbox_id": t.sandbox_id,
        "preview_id": t.preview_id,
        "prefix": t.prefix,
        "created_at": rfc3339(t.created_at),
        "expires_at": rfc3339(t.expires_at),
        "expired": t.expires_at <= state.now_ms(),
        "revoked": t.revoked_at.is_some(),
        "revoked_at": t.revoked_at.map(rfc3339),
    })
}

/// A list of share tokens as `{data: [...]}`.
fn tokens_view(state: &AppState, list: &[PreviewTokenRecord]) -> axum::Json<serde_json::Value> {
    data(
        list.iter()
            .map(|t| token_view(state, t))
            .collect::<Vec<_>>(),
    )
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

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = PreviewCreateBody)]
struct CreateBody {
    /// The guest port to serve.
    #[schema(value_type = i64, required = true, minimum = 1, maximum = 65535)]
    port: Option<i64>,
    #[schema(value_type = Option<Visibility>, default = "private")]
    visibility: Option<String>,
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/previews",
    tag = PREVIEW,
    summary = "Serve a sandbox port at a preview URL (public or private)",
    params(SandboxId),
    request_body = CreateBody,
    responses((status = 201, description = "Created", body = Data), E404And422),
)]
async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
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

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/previews",
    tag = PREVIEW,
    summary = "List a sandbox's previews",
    params(SandboxId),
    responses((status = 200, description = "OK", body = DataList), E404),
)]
async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let list = state.list_previews(&caller, &id).await?;
    Ok(data(
        list.iter().map(|p| view(&state, p)).collect::<Vec<_>>(),
    ))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/previews/{prv}",
    tag = PREVIEW,
    summary = "Get a preview",
    params(SandboxId, PreviewId),
    responses((status = 200, description = "OK", body = Data), E404),
)]
async fn get_one(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, pid)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let p = state.get_preview(&caller, &id, &pid).await?;
    Ok(data(view(&state, &p)))
}

#[utoipa::path(
    delete,
    path = "/sandboxes/{id}/previews/{prv}",
    tag = PREVIEW,
    summary = "Delete a preview",
    params(SandboxId, PreviewId),
    responses((status = 200, description = "OK", body = Data), E404),
)]
async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, pid)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let p = state.delete_preview(&caller, &id, &pid).await?;
    Ok(data(view(&state, &p)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = ExposeBody)]
struct PortBody {
    /// The guest port to serve.
    #[schema(value_type = i64, required = true, minimum = 1, maximum = 65535)]
    port: Option<i64>,
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/expose",
    tag = PREVIEW,
    summary = "The preview URL of a port (a private preview is made when missing)",
    params(SandboxId),
    request_body = PortBody,
    responses((status = 200, description = "OK: `{url, port, data}`", body = Object), E404And422),
)]
async fn expose(
    State(state): State<AppState>,
    Auth(caller): Auth,
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

#[derive(Debug, Default, Deserialize, ToSchema)]
struct ShareBody {
    /// Seconds the token lives.
    #[schema(
        schema_with = super::openapi::int_range_or_null::<1, { SHARE_TTL_MAX as i64 }>,
        default = 3600
    )]
    ttl_seconds: Option<i64>,
}

/// `url` with the token as `?preview_token=`.
fn with_token(url: &str, token: &str) -> String {
    format!("{url}/?preview_token={token}")
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/previews/{prv}/share",
    tag = PREVIEW,
    summary = "Mint a share token (shown once) and its share URL",
    params(SandboxId, PreviewId),
    request_body = ShareBody,
    responses(
        (status = 201, description = "Created: `{data: {id, share_token_prefix, share_token_expires_at}, preview_token, share_url}`", body = Object),
        E404And422,
    ),
)]
async fn share(
    State(state): State<AppState>,
    Auth(caller): Auth,
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

#[utoipa::path(
    delete,
    path = "/sandboxes/{id}/previews/{prv}/share",
    tag = PREVIEW,
    summary = "Revoke every share token of a preview",
    params(SandboxId, PreviewId),
    responses((status = 200, description = "OK", body = Data), E404),
)]
async fn revoke(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, pid)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let n = state.revoke_preview_shares(&caller, &id, &pid).await?;
    Ok(data(json!({ "id": pid, "revoked": n })))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/previews/{prv}/share",
    tag = PREVIEW,
    summary = "List a preview's share tokens (newest first, no secrets)",
    description = "At most 1000, the newest. Each: `{id, sandbox_id, preview_id, prefix, \
                   created_at, expires_at, expired, revoked, revoked_at}`. Sandbox-wide \
                   tokens are listed at `/sandboxes/{id}/share-tokens`.",
    params(SandboxId, PreviewId),
    responses((status = 200, description = "OK", body = DataList), E404),
)]
async fn list_shares(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, pid)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let list = state.list_share_tokens(&caller, &id, Some(&pid)).await?;
    Ok(tokens_view(&state, &list))
}

#[utoipa::path(
    delete,
    path = "/sandboxes/{id}/previews/{prv}/share/{token_id}",
    tag = PREVIEW,
    summary = "Revoke one share token of a preview",
    description = "The token stops opening the preview from the next request on, and the \
                   WebSockets it opened close. Revoking a revoked token changes nothing (its \
                   `revoked_at` stays).",
    params(SandboxId, PreviewId, ("token_id" = String, Path, description = "Share token id (`pvt_...`)")),
    responses((status = 200, description = "OK: the token", body = Data), E404),
)]
async fn revoke_preview_share(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, pid, tid)): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    let t = state
        .revoke_share_token(&caller, &id, Some(&pid), &tid)
        .await?;
    Ok(data(token_view(&state, &t)))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/share-tokens",
    tag = PREVIEW,
    summary = "List every share token of a sandbox (each preview's and sandbox-wide ones)",
    description = "Newest first, at most 1000, no secrets. Each: `{id, sandbox_id, \
                   preview_id (null: every preview of the sandbox), prefix, created_at, \
                   expires_at, expired, revoked, revoked_at}`.",
    params(SandboxId),
    responses((status = 200, description = "OK", body = DataList), E404),
)]
async fn list_share_tokens(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let list = state.list_share_tokens(&caller, &id, None).await?;
    debug_assert!(list.len() <= SHARE_TOKENS_LISTED as usize);
    Ok(tokens_view(&state, &list))
}

#[utoipa::path(
    delete,
    path = "/sandboxes/{id}/share-tokens",
    tag = PREVIEW,
    summary = "Revoke every share token of a sandbox (each preview's and sandbox-wide ones)",
    description = "Answers `{data: {sandbox_id, revoked}}`: how many were live.",
    params(SandboxId),
    responses((status = 200, description = "OK", body = Data), E404),
)]
async fn revoke_share_tokens(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let n = state.revoke_sandbox_shares(&caller, &id).await?;
    Ok(data(json!({ "sandbox_id": id, "revoked": n })))
}

#[utoipa::path(
    delete,
    path = "/sandboxes/{id}/share-tokens/{token_id}",
    tag = PREVIEW,
    summary = "Revoke one share token of a sandbox (of a preview or sandbox-wide)",
    description = "The token stops opening previews from the next request on, and the \
                   WebSockets it opened close. Revoking a revoked token changes nothing (its \
                   `revoked_at` stays).",
    params(SandboxId, ("token_id" = String, Path, description = "Share token id (`pvt_...`)")),
    responses((status = 200, description = "OK: the token", body = Data), E404),
)]
async fn revoke_share_token(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, tid)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let t = state.revoke_share_token(&caller, &id, None, &tid).await?;
    Ok(data(token_view(&state, &t)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = PreviewTokenBody)]
struct TokenBody {
    /// Seconds the token lives.
    #[schema(
        schema_with = super::openapi::int_range_or_null::<1, { SHARE_TTL_MAX as i64 }>,
        default = 3600
    )]
    expires_in: Option<i64>,
    /// One port's preview (made private when missing); absent: every
    /// preview of the sandbox.
    #[schema(minimum = 1, maximum = 65535)]
    port: Option<i64>,
}

/// A token for one port's preview (made private when missing), or for every
/// preview of the sandbox when no port is given.
#[utoipa::path(
    post,
    path = "/sandboxes/{id}/preview-token",
    tag = PREVIEW,
    summary = "A token for one port's preview, or every preview of the sandbox",
    params(SandboxId),
    request_body = TokenBody,
    responses((status = 201, description = "Created: `{token, token_id, url, expires_at}`", body = Object), E404And422),
)]
async fn preview_token(
    State(state): State<AppState>,
    Auth(caller): Auth,
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
            "token_id": t.record.id,
            "url": url,
            "expires_at": rfc3339(t.record.expires_at),
        })),
    ))
}
