//! `/sandboxes/{id}/network-policy`: the sandbox's egress policy (MIOSA's
//! network-policy shape), read, replaced and removed. A change reaches a
//! running VM at once; the host's fixed rules (no host, no other sandbox,
//! no private, link-local or multicast range) hold under every policy.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{E404And422, NetworkPolicyData, SandboxId, E404, NET};
use super::{data, ApiJson, AppState};
use crate::core::clock::rfc3339;
use crate::core::sandboxes::network::{Effect, EgressPolicy, EgressRule};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::model::SandboxRecord;
use crate::routes::Auth;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_policy, put_policy, delete_policy))
}

/// The answer of every route here.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = NetworkPolicy, description = "A sandbox's egress policy as stored.")]
pub(crate) struct PolicyView {
    sandbox_id: String,
    default_effect: Effect,
    rules: Vec<EgressRule>,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl PolicyView {
    fn new(r: SandboxRecord) -> PolicyView {
        let (default_effect, rules) = match r.egress_policy {
            Some(p) => (p.default_effect, p.rules),
            None => (Effect::Allow, Vec::new()),
        };
        PolicyView {
            sandbox_id: r.id,
            default_effect,
            rules,
            updated_at: rfc3339(r.egress_policy_updated_at.unwrap_or(r.created_at)),
        }
    }
}

/// Adds every problem of `policy` to `bad`, fields under `prefix`.
pub fn check_policy(bad: &mut Vec<FieldError>, prefix: &str, policy: &EgressPolicy) {
    if let Err(errors) = policy.validate() {
        for (field, message) in errors {
            let field = if prefix.is_empty() {
                field
            } else {
                format!("{prefix}.{field}")
            };
            bad.push(FieldError::new(field, message));
        }
    }
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/network-policy",
    tag = NET,
    summary = "The sandbox's egress policy",
    params(SandboxId),
    responses((status = 200, description = "OK", body = NetworkPolicyData), E404),
)]
async fn get_policy(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let rec = state.get_sandbox(&caller, &id).await?;
    Ok(data(PolicyView::new(rec)))
}

#[utoipa::path(
    put,
    path = "/sandboxes/{id}/network-policy",
    tag = NET,
    summary = "Replace the egress policy (applies to a running VM at once)",
    params(SandboxId),
    request_body = EgressPolicy,
    responses((status = 200, description = "OK", body = NetworkPolicyData), E404And422),
)]
async fn put_policy(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(policy): ApiJson<EgressPolicy>,
) -> ApiResult<impl IntoResponse> {
    let mut bad = Vec::new();
    check_policy(&mut bad, "", &policy);
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let rec = state.set_egress_policy(&caller, &id, Some(policy)).await?;
    Ok(data(PolicyView::new(rec)))
}

#[utoipa::path(
    delete,
    path = "/sandboxes/{id}/network-policy",
    tag = NET,
    summary = "Remove the egress policy (allow what the fixed rules leave)",
    params(SandboxId),
    responses((status = 200, description = "OK", body = NetworkPolicyData), E404),
)]
async fn delete_policy(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let rec = state.set_egress_policy(&caller, &id, None).await?;
    Ok(data(PolicyView::new(rec)))
}
