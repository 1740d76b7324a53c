//! `/tokens/scoped`: mint (the plain token is answered once), list,
//! revoke. Only an API key mints; a token holds at most the scopes it was
//! given, for at most a day, on the sandboxes pinned to it or else those
//! of its user and workspace.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Data, DataList, E404And422, E404, TOKENS};
use super::{data, ApiJson, AppState};
use crate::core::clock::rfc3339;
use crate::core::keys::scoped::{NewToken, MAX_TTL_SEC, SCOPES};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::model::ScopedTokenRecord;
use crate::routes::Auth;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, mint))
        .routes(routes!(revoke))
}

fn view(state: &AppState, t: &ScopedTokenRecord) -> serde_json::Value {
    json!({
        "id": t.id,
        "prefix": t.prefix,
        "user_id": t.user_id,
        "workspace_id": t.workspace_id,
        "scopes": t.scopes,
        "sandbox_ids": t.sandbox_ids,
        "created_at": rfc3339(t.created_at),
        "expires_at": rfc3339(t.expires_at),
        "expired": t.expires_at <= state.now_ms(),
        "revoked": t.revoked_at.is_some(),
        "revoked_at": t.revoked_at.map(rfc3339),
    })
}

/// Longest user or workspace id, and most pinned sandboxes.
const MAX_ID: usize = 256;
const MAX_SANDBOXES: usize = 100;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct MintBody {
    /// The end user it acts for: the sandboxes it creates are tagged
    /// `external_user_id` with it.
    #[schema(
        required = true,
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub user_id: String,
    /// Tagged `external_workspace_id` likewise.
    #[schema(
        required = true,
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub workspace_id: String,
    /// Seconds it lives, 1-86400 (default 3600).
    #[schema(minimum = 1, maximum = 86400, default = 3600)]
    pub expires_in_seconds: Option<i64>,
    /// Default: every scope.
    #[schema(schema_with = super::openapi::token_scopes)]
    pub scopes: Option<Vec<String>>,
    /// When given, the only sandboxes it may touch (at most 100, each the
    /// caller's).
    #[schema(max_items = 100)]
    pub sandbox_ids: Option<Vec<String>>,
}

fn label(bad: &mut Vec<FieldError>, field: &str, v: &str) {
    if v.is_empty() || v.len() > MAX_ID || v.chars().any(char::is_control) {
        bad.push(FieldError::new(
            field,
            format!("1-{MAX_ID} characters without control characters"),
        ));
    }
}

#[utoipa::path(
    post,
    path = "/tokens/scoped",
    tag = TOKENS,
    summary = "Mint a scoped token (the plain token is shown once)",
    request_body = MintBody,
    responses((status = 201, description = "Created: `{id, token, expires_at, scopes}`, also under `data`", body = Data), E404And422),
)]
async fn mint(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(b): ApiJson<MintBody>,
) -> ApiResult<impl IntoResponse> {
    let mut bad = Vec::new();
    label(&mut bad, "user_id", &b.user_id);
    label(&mut bad, "workspace_id", &b.workspace_id);
    let ttl = match b.expires_in_seconds {
        None => 3600,
        Some(n) if (1..=MAX_TTL_SEC as i64).contains(&n) => n as u64,
        Some(_) => {
            bad.push(FieldError::new(
                "expires_in_seconds",
                format!("must be between 1 and {MAX_TTL_SEC}"),
            ));
            3600
        }
    };
    if let Some(scopes) = &b.scopes {
        for (i, s) in scopes.iter().enumerate() {
            if !SCOPES.contains(&s.as_str()) {
                bad.push(FieldError::new(
                    format!("scopes[{i}]"),
                    format!("must be one of {}", SCOPES.join(", ")),
                ));
            }
        }
    }
    if let Some(ids) = &b.sandbox_ids {
        if ids.len() > MAX_SANDBOXES {
            bad.push(FieldError::new(
                "sandbox_ids",
                format!("at most {MAX_SANDBOXES}"),
            ));
        }
    }
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let (rec, token) = state
        .mint_scoped_token(
            &caller,
            NewToken {
                user_id: b.user_id,
                workspace_id: b.workspace_id,
                ttl_sec: ttl,
                scopes: b.scopes,
                sandbox_ids: b.sandbox_ids,
            },
        )
        .await?;
    let mut v = view(&state, &rec);
    v["token"] = json!(token);
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "id": rec.id,
            "token": token,
            "expires_at": rfc3339(rec.expires_at),
            "scopes": rec.scopes,
            "data": v,
        })),
    ))
}

#[utoipa::path(
    get,
    path = "/tokens/scoped",
    tag = TOKENS,
    summary = "The tenant's scoped tokens, newest first (no secrets; at most 1000)",
    responses((status = 200, description = "OK", body = DataList)),
)]
async fn list(State(state): State<AppState>, Auth(caller): Auth) -> ApiResult<impl IntoResponse> {
    let list = state.list_scoped_tokens(&caller).await?;
    Ok(data(
        list.iter().map(|t| view(&state, t)).collect::<Vec<_>>(),
    ))
}

#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenId {
    /// Token id (`stk_...`).
    pub id: String,
}

#[utoipa::path(
    delete,
    path = "/tokens/scoped/{id}",
    tag = TOKENS,
    summary = "Revoke a scoped token: 401 from its next request, its streams end",
    params(TokenId),
    responses((status = 200, description = "OK", body = Data), E404),
)]
async fn revoke(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    state.revoke_scoped_token(&caller, &id).await?;
    Ok(data(json!({ "id": id, "revoked": true })))
}
