//! `/api-keys`: list, create (the plain key is answered once), revoke.
//! An admin key may create keys for another tenant (`tenant_id`); every
//! other key only for its own.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{ApiKeyId, Data, DataList, E404, E422, KEYS};
use super::{data, ApiJson, AppState};
use crate::core::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::model::ApiKeyRecord;
use crate::routes::Auth;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

fn view(k: &ApiKeyRecord) -> serde_json::Value {
    json!({
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "tenant_id": k.tenant_id,
        "admin": k.admin,
        "created_at": rfc3339(k.created_at),
    })
}

#[utoipa::path(
    get,
    path = "/api-keys",
    tag = KEYS,
    summary = "List API keys",
    responses((status = 200, description = "OK", body = DataList)),
)]
async fn list(State(state): State<AppState>, Auth(caller): Auth) -> ApiResult<impl IntoResponse> {
    let keys = state.list_api_keys(&caller).await?;
    Ok(data(keys.iter().map(view).collect::<Vec<_>>()))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct CreateKeyBody {
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$",
        default = "key"
    )]
    pub name: Option<String>,
    /// Another tenant's (admin keys only; default: the caller's).
    #[schema(max_length = 64, pattern = r"^[A-Za-z0-9_-]+$", example = "ten_other")]
    pub tenant_id: Option<String>,
}

pub(super) fn valid_tenant(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[utoipa::path(
    post,
    path = "/api-keys",
    tag = KEYS,
    summary = "Create an API key (the plain key is shown once)",
    request_body = CreateKeyBody,
    responses((status = 201, description = "Created: the key, with `key` this once", body = Data), E422),
)]
async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> ApiResult<impl IntoResponse> {
    let name = body.name.unwrap_or_else(|| "key".into());
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::field("name", "must be 1-128 characters"));
    }
    let tenant = match body.tenant_id.filter(|t| *t != caller.tenant_id) {
        None => caller.tenant_id.clone(),
        Some(_) if !caller.admin => {
            return Err(ApiError::forbidden(
                "only an admin key can create keys for another tenant",
            ))
        }
        Some(t) if !valid_tenant(&t) => {
            return Err(ApiError::field(
                "tenant_id",
                "letters, digits, _ and -, at most 64",
            ))
        }
        Some(t) => t,
    };
    let new = state.create_api_key(&tenant, &name, false).await?;
    let mut v = view(&new.record);
    v["key"] = json!(new.key);
    Ok((StatusCode::CREATED, data(v)))
}

#[utoipa::path(
    delete,
    path = "/api-keys/{id}",
    tag = KEYS,
    summary = "Revoke an API key",
    params(ApiKeyId),
    responses((status = 200, description = "OK", body = Data), E404),
)]
async fn revoke(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    state.revoke_api_key(&caller, &id).await?;
    Ok(data(json!({ "id": id, "revoked": true })))
}
