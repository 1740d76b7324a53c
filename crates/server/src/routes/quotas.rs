//! Quotas: `GET /quotas` (the caller's tenant: limits and use), and for
//! admin keys `GET`/`PUT /tenants/{id}/quotas` (any tenant; `PUT` sets the
//! tenant's overrides, `null` or a missing field keeps the config default).

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Data, E404And422, QUOTAS};
use super::{data, ApiJson, AppState};
use crate::core::quotas::QuotaOverrides;
use crate::error::{ApiError, ApiResult};
use crate::routes::Auth;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(mine))
        .routes(routes!(get_tenant, put_tenant))
}

#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
struct TenantId {
    /// Tenant id.
    #[allow(dead_code)]
    id: String,
}

/// The largest limit a PUT may set (a sandbox count or MiB total no host
/// reaches; larger is a typo).
const MAX_LIMIT: u64 = 1 << 40;
/// The highest request rate an admin may set per key.
const MAX_RATE: u64 = 1_000_000;

fn checked_tenant(caller_admin: bool, id: &str) -> ApiResult<()> {
    if !caller_admin {
        return Err(ApiError::forbidden(
            "only an admin key can read or set another tenant's quotas",
        ));
    }
    if !super::keys::valid_tenant(id) {
        return Err(ApiError::field(
            "id",
            "letters, digits, _ and -, at most 64",
        ));
    }
    Ok(())
}

#[utoipa::path(
    get,
    path = "/quotas",
    tag = QUOTAS,
    summary = "The caller's tenant: quota limits and current use",
    responses((status = 200, description = "OK: `{tenant_id, limits, usage, overrides}`", body = Data)),
)]
async fn mine(State(state): State<AppState>, Auth(caller): Auth) -> ApiResult<impl IntoResponse> {
    Ok(data(state.quota_report(&caller.tenant_id).await?))
}

#[utoipa::path(
    get,
    path = "/tenants/{id}/quotas",
    tag = QUOTAS,
    summary = "A tenant's quota limits and use (admin)",
    params(TenantId),
    responses((status = 200, description = "OK: `{tenant_id, limits, usage, overrides}`", body = Data), E404And422),
)]
async fn get_tenant(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    checked_tenant(caller.admin, &id)?;
    Ok(data(state.quota_report(&id).await?))
}

#[utoipa::path(
    put,
    path = "/tenants/{id}/quotas",
    tag = QUOTAS,
    summary = "Set a tenant's quota overrides (admin)",
    params(TenantId),
    request_body = QuotaOverrides,
    responses((status = 200, description = "OK: the tenant's limits and use", body = Data), E404And422),
)]
async fn put_tenant(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<QuotaOverrides>,
) -> ApiResult<impl IntoResponse> {
    checked_tenant(caller.admin, &id)?;
    // Unset fields read as 0 here: only what the body sets is checked.
    let set = body.over(&crate::core::quotas::Quotas::default());
    let mut bad: Vec<_> = set
        .fields()
        .into_iter()
        .filter(|(_, v)| *v > MAX_LIMIT)
        .map(|(k, _)| crate::error::FieldError::new(k, format!("must be at most {MAX_LIMIT}")))
        .collect();
    if set.requests_per_sec > MAX_RATE {
        bad.push(crate::error::FieldError::new(
            "requests_per_sec",
            format!("must be at most {MAX_RATE} (0 = no limit)"),
        ));
    }
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    Ok(data(state.set_quotas(&caller, &id, body).await?))
}
