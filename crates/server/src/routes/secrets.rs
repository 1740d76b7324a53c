//! The secrets vault: `/egress/secrets` (create, list, get, rotate,
//! delete) and `/egress/bindings` (bind a secret to a sandbox as an env
//! variable, list, unbind). No answer ever carries a value: a secret shows
//! its `value_prefix` (at most a quarter of it) and `last4`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Data, DataList, E404And422, E404, E422, SECRETS};
use super::{data, query_text, ApiJson, ApiQuery, AppState};
use crate::core::clock::{parse_time, rfc3339};
use crate::core::secrets::{NewSecret, KINDS, MAX_VALUE_BYTES, RESOURCE_TYPES, SCOPES};
use crate::core::store::SecretFilter;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::model::{SecretBindingRecord, SecretRecord};
use crate::routes::Auth;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_secrets, create_secret))
        .routes(routes!(get_secret, rotate_secret, delete_secret))
        .routes(routes!(list_bindings, create_binding))
        .routes(routes!(delete_binding))
}

fn secret_view(s: &SecretRecord) -> serde_json::Value {
    json!({
        "id": s.id,
        "name": s.name,
        "type": s.kind,
        "scope": s.scope,
        "value_prefix": s.value_prefix,
        "last4": s.last4,
        "expose_as_env": s.expose_as_env,
        "resource_id": s.resource_id,
        "resource_type": s.resource_type,
        "metadata": s.metadata,
        "created_at": rfc3339(s.created_at),
        "rotated_at": s.rotated_at.map(rfc3339),
        "expires_at": s.expires_at.map(rfc3339),
    })
}

fn binding_view(b: &SecretBindingRecord) -> serde_json::Value {
    json!({
        "id": b.id,
        "secret_id": b.secret_id,
        "resource_id": b.resource_id,
        "resource_type": b.resource_type,
        "expose_as_env": b.expose_as_env,
        "created_at": rfc3339(b.created_at),
    })
}

/// Longest secret name.
const MAX_NAME: usize = 128;
/// Longest metadata, as JSON.
const MAX_METADATA_BYTES: usize = 4096;

/// Secret names: letters, digits, `_`, `-` and `.`.
fn check_name(bad: &mut Vec<FieldError>, field: &str, n: &str) {
    let ok = !n.is_empty()
        && n.len() <= MAX_NAME
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !ok {
        bad.push(FieldError::new(
            field,
            format!("1-{MAX_NAME} letters, digits, _, - and ."),
        ));
    }
}

/// An env variable name: letters, digits and `_`, not starting with a digit.
/// Most secrets one call may name.
pub const MAX_CALL_SECRETS: usize = 32;

/// A call's `secrets: ["NAME", ...]`: at most 32 names of secrets.
pub fn call_secrets(names: Vec<String>) -> ApiResult<Vec<String>> {
    let mut bad = Vec::new();
    if names.len() > MAX_CALL_SECRETS {
        bad.push(FieldError::new(
            "secrets",
            format!("at most {MAX_CALL_SECRETS} secrets per call"),
        ));
    }
    for (i, n) in names.iter().enumerate() {
        check_name(&mut bad, &format!("secrets[{i}]"), n);
    }
    if bad.is_empty() {
        Ok(names)
    } else {
        Err(ApiError::validation(bad))
    }
}

fn check_env_name(bad: &mut Vec<FieldError>, field: &str, n: &str) {
    let ok = !n.is_empty()
        && n.len() <= 256
        && !n.starts_with(|c: char| c.is_ascii_digit())
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        bad.push(FieldError::new(
            field,
            "letters, digits and _ (not starting with a digit), at most 256",
        ));
    }
}

fn check_value(bad: &mut Vec<FieldError>, v: &str) {
    if v.is_empty() || v.len() > MAX_VALUE_BYTES || v.contains('\0') {
        bad.push(FieldError::new(
            "value",
            format!("1-{MAX_VALUE_BYTES} bytes without NUL"),
        ));
    }
}

fn one_of(bad: &mut Vec<FieldError>, field: &str, v: &str, set: &[&str]) {
    if !set.contains(&v) {
        bad.push(FieldError::new(
            field,
            format!("must be one of {}", set.join(", ")),
        ));
    }
}

/// `expires_at`: RFC 3339 or unix seconds, in the future.
fn check_expiry(bad: &mut Vec<FieldError>, v: Option<&str>, now: i64) -> Option<i64> {
    let s = v?;
    match parse_time(s) {
        Some(t) if t > now => Some(t),
        Some(_) => {
            bad.push(FieldError::new("expires_at", "must be in the future"));
            None
        }
        None => {
            bad.push(FieldError::new(
                "expires_at",
                "must be an RFC 3339 time or unix seconds",
            ));
            None
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct CreateSecretBody {
    /// Unique in the tenant; what `secrets: ["NAME"]` names.
    #[schema(
        required = true,
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9_.-]+$"
    )]
    pub name: String,
    /// The secret itself: never answered by any route.
    #[schema(
        required = true,
        min_length = 1,
        max_length = 65536,
        pattern = r"^[^\u0000]*$"
    )]
    pub value: String,
    /// `api_key` (default), `token`, `password`, `certificate` or `generic`.
    #[serde(rename = "type")]
    #[schema(rename = "type", schema_with = super::openapi::secret_kind)]
    pub kind: Option<String>,
    /// `user` (default), `workspace` or `tenant`.
    #[schema(schema_with = super::openapi::secret_scope)]
    pub scope: Option<String>,
    /// The env variable it is exposed as (bound, or named per call).
    #[schema(max_length = 256, pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")]
    pub expose_as_env: Option<String>,
    /// A sandbox to bind it to (with `expose_as_env`).
    #[schema(min_length = 1, max_length = 256)]
    pub resource_id: Option<String>,
    /// `sandbox` (default).
    #[schema(schema_with = super::openapi::secret_resource_type)]
    pub resource_type: Option<String>,
    /// RFC 3339 or unix seconds, in the future; an expired secret is no
    /// longer exposed.
    #[schema(example = "2099-01-01T00:00:00Z")]
    pub expires_at: Option<String>,
    /// At most 4 KiB of JSON.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[utoipa::path(
    post,
    path = "/egress/secrets",
    tag = SECRETS,
    summary = "Store a secret (bound to a sandbox with expose_as_env and resource_id)",
    request_body = CreateSecretBody,
    responses(
        (status = 201, description = "Created: the secret, without its value", body = Data),
        E404And422,
    ),
)]
async fn create_secret(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(b): ApiJson<CreateSecretBody>,
) -> ApiResult<impl IntoResponse> {
    let mut bad = Vec::new();
    check_name(&mut bad, "name", &b.name);
    check_value(&mut bad, &b.value);
    let kind = b.kind.unwrap_or_else(|| "api_key".into());
    one_of(&mut bad, "type", &kind, KINDS);
    let scope = b.scope.unwrap_or_else(|| "user".into());
    one_of(&mut bad, "scope", &scope, SCOPES);
    if let Some(e) = &b.expose_as_env {
        check_env_name(&mut bad, "expose_as_env", e);
    }
    if b.resource_id
        .as_ref()
        .is_some_and(|r| r.is_empty() || r.len() > 256)
    {
        bad.push(FieldError::new("resource_id", "1-256 characters"));
    }
    let resource_type = match (&b.resource_id, b.resource_type) {
        (None, t) => t,
        (Some(_), t) => Some(t.unwrap_or_else(|| "sandbox".into())),
    };
    if let Some(t) = &resource_type {
        one_of(&mut bad, "resource_type", t, RESOURCE_TYPES);
    }
    let expires_at = check_expiry(&mut bad, b.expires_at.as_deref(), state.now_ms());
    let metadata = b.metadata.unwrap_or_default();
    if serde_json::to_string(&metadata).map_or(0, |s| s.len()) > MAX_METADATA_BYTES {
        bad.push(FieldError::new("metadata", "must be at most 4 KiB of JSON"));
    }
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let (secret, binding) = state
        .create_secret(
            &caller,
            NewSecret {
                name: b.name,
                value: b.value,
                kind,
                scope,
                expose_as_env: b.expose_as_env,
                resource_id: b.resource_id,
                resource_type,
                expires_at,
                metadata,
            },
        )
        .await?;
    let mut v = secret_view(&secret);
    if let Some(b) = binding {
        v["binding"] = binding_view(&b);
    }
    Ok((StatusCode::CREATED, data(v)))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SecretQuery {
    /// Only those of (bound to) this resource.
    #[param(value_type = String, required = false, max_length = 256)]
    pub resource_id: Option<String>,
    /// Only those of this resource type (`sandbox`).
    #[param(value_type = String, required = false, max_length = 32)]
    pub resource_type: Option<String>,
    /// Secrets only: of this type.
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = String, required = false, max_length = 32)]
    pub kind: Option<String>,
    /// Secrets only: of this scope.
    #[param(value_type = String, required = false, max_length = 32)]
    pub scope: Option<String>,
    /// Bindings only: of this secret.
    #[param(value_type = String, required = false, max_length = 64)]
    pub secret_id: Option<String>,
}

impl SecretQuery {
    fn filter(self) -> ApiResult<SecretFilter> {
        let mut bad = Vec::new();
        let f = SecretFilter {
            resource_id: query_text(&mut bad, "resource_id", self.resource_id, 256),
            resource_type: query_text(&mut bad, "resource_type", self.resource_type, 32),
            kind: query_text(&mut bad, "type", self.kind, 32),
            scope: query_text(&mut bad, "scope", self.scope, 32),
            secret_id: query_text(&mut bad, "secret_id", self.secret_id, 64),
        };
        if bad.is_empty() {
            Ok(f)
        } else {
            Err(ApiError::validation(bad))
        }
    }
}

#[utoipa::path(
    get,
    path = "/egress/secrets",
    tag = SECRETS,
    summary = "List the tenant's secrets (no values; at most 1000)",
    params(SecretQuery),
    responses((status = 200, description = "OK", body = DataList), E422),
)]
async fn list_secrets(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<SecretQuery>,
) -> ApiResult<impl IntoResponse> {
    let list = state.list_secrets(&caller, &q.filter()?).await?;
    Ok(data(list.iter().map(secret_view).collect::<Vec<_>>()))
}

#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SecretId {
    /// Secret id (`sec_...`).
    pub id: String,
}

#[utoipa::path(
    get,
    path = "/egress/secrets/{id}",
    tag = SECRETS,
    summary = "One secret (no value)",
    params(SecretId),
    responses((status = 200, description = "OK", body = Data), E404),
)]
async fn get_secret(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(data(secret_view(&state.get_secret(&caller, &id).await?)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct RotateSecretBody {
    /// The new value: the next command started gets it.
    #[schema(min_length = 1, max_length = 65536, pattern = r"^[^\u0000]*$")]
    pub value: Option<String>,
    /// RFC 3339 or unix seconds, in the future; `null` removes the expiry.
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = Option<String>, example = "2099-01-01T00:00:00Z")]
    pub expires_at: Option<Option<String>>,
}

#[utoipa::path(
    patch,
    path = "/egress/secrets/{id}",
    tag = SECRETS,
    summary = "Rotate a secret's value (and expiry)",
    params(SecretId),
    request_body = RotateSecretBody,
    responses((status = 200, description = "OK: the secret, without its value", body = Data), E404And422),
)]
async fn rotate_secret(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<RotateSecretBody>,
) -> ApiResult<impl IntoResponse> {
    let mut bad = Vec::new();
    if let Some(v) = &b.value {
        check_value(&mut bad, v);
    }
    let expires_at = b
        .expires_at
        .map(|e| check_expiry(&mut bad, e.as_deref(), state.now_ms()));
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let s = state
        .rotate_secret(&caller, &id, b.value, expires_at)
        .await?;
    Ok(data(secret_view(&s)))
}

#[utoipa::path(
    delete,
    path = "/egress/secrets/{id}",
    tag = SECRETS,
    summary = "Delete a secret and its bindings",
    params(SecretId),
    responses((status = 200, description = "OK: the deleted secret", body = Data), E404),
)]
async fn delete_secret(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let s = state.delete_secret(&caller, &id).await?;
    let mut v = secret_view(&s);
    v["deleted"] = json!(true);
    Ok(data(v))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct CreateBindingBody {
    /// The secret (`sec_...`).
    #[schema(required = true, min_length = 1, max_length = 64)]
    pub secret_id: String,
    /// The sandbox (`sbx_...`).
    #[schema(required = true, min_length = 1, max_length = 256)]
    pub resource_id: String,
    /// `sandbox` (default).
    #[schema(schema_with = super::openapi::secret_resource_type)]
    pub resource_type: Option<String>,
    /// The env variable it is exposed as (default: the secret's
    /// `expose_as_env`).
    #[schema(max_length = 256, pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")]
    pub expose_as_env: Option<String>,
}

#[utoipa::path(
    post,
    path = "/egress/bindings",
    tag = SECRETS,
    summary = "Bind a secret to a sandbox as an env variable",
    request_body = CreateBindingBody,
    responses((status = 201, description = "Created: the binding", body = Data), E404And422),
)]
async fn create_binding(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(b): ApiJson<CreateBindingBody>,
) -> ApiResult<impl IntoResponse> {
    let mut bad = Vec::new();
    if b.secret_id.is_empty() || b.secret_id.len() > 64 {
        bad.push(FieldError::new("secret_id", "is required"));
    }
    if b.resource_id.is_empty() || b.resource_id.len() > 256 {
        bad.push(FieldError::new("resource_id", "is required"));
    }
    let resource_type = b.resource_type.unwrap_or_else(|| "sandbox".into());
    one_of(&mut bad, "resource_type", &resource_type, RESOURCE_TYPES);
    if let Some(e) = &b.expose_as_env {
        check_env_name(&mut bad, "expose_as_env", e);
    }
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let env = match b.expose_as_env {
        Some(e) => e,
        None => state
            .get_secret(&caller, &b.secret_id)
            .await?
            .expose_as_env
            .ok_or_else(|| {
                ApiError::field(
                    "expose_as_env",
                    "is required when the secret has no expose_as_env",
                )
            })?,
    };
    let binding = state
        .bind_secret(&caller, &b.secret_id, &b.resource_id, &resource_type, &env)
        .await?;
    Ok((StatusCode::CREATED, data(binding_view(&binding))))
}

#[utoipa::path(
    get,
    path = "/egress/bindings",
    tag = SECRETS,
    summary = "List the tenant's bindings (at most 1000)",
    params(SecretQuery),
    responses((status = 200, description = "OK", body = DataList), E422),
)]
async fn list_bindings(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<SecretQuery>,
) -> ApiResult<impl IntoResponse> {
    let list = state.list_bindings(&caller, &q.filter()?).await?;
    Ok(data(list.iter().map(binding_view).collect::<Vec<_>>()))
}

#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BindingId {
    /// Binding id (`sbd_...`).
    pub id: String,
}

#[utoipa::path(
    delete,
    path = "/egress/bindings/{id}",
    tag = SECRETS,
    summary = "Unbind: the next command started no longer gets the secret",
    params(BindingId),
    responses((status = 200, description = "OK", body = Data), E404),
)]
async fn delete_binding(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    state.delete_binding(&caller, &id).await?;
    Ok(data(json!({ "id": id, "deleted": true })))
}
