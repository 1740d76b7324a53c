//! Custom domains: `POST/GET /deployments/{id}/domains`, `POST
//! .../domains/{did}/verify`, `DELETE .../domains/{did}`.

#[allow(unused_imports)]
use super::*;

pub(super) fn domain_view(d: &DomainRecord) -> serde_json::Value {
    let (name, value) = challenge(d);
    json!({
        "id": d.id,
        "deployment_id": d.deployment_id,
        "domain": d.domain,
        "state": d.state,
        "verification": { "type": "TXT", "name": name, "value": value },
        "has_certificate": d.certificate_pem.is_some(),
        "created_at": rfc3339(d.created_at),
        "verified_at": d.verified_at.map(rfc3339),
    })
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct DomainBody {
    /// The host name (lower case), e.g. `app.example.com`.
    #[schema(
        required = true,
        min_length = 3,
        max_length = 253,
        pattern = r"^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]([a-z0-9-]*[a-z0-9])?$",
        example = "app.example.com"
    )]
    pub domain: String,
    /// A PEM certificate chain valid for the domain: served by the TLS
    /// listener for that name once verified (empty: none).
    #[schema(max_length = 65536)]
    pub certificate_pem: Option<String>,
    /// The certificate's PEM private key (sealed at rest, never shown).
    #[schema(max_length = 16384)]
    pub private_key_pem: Option<String>,
}

#[utoipa::path(
    post,
    path = "/deployments/{id}/domains",
    tag = DEPLOY,
    summary = "Add a custom domain (served once verified)",
    description = "Answers the domain, `pending`, with the TXT record to create \
                   (`verification.name` holding `verification.value`); then `POST \
                   .../domains/{did}/verify`.",
    params(DeploymentId),
    request_body = DomainBody,
    responses((status = 201, description = "The domain", body = Data), E404And422),
)]
pub(super) async fn add_domain(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<DomainBody>,
) -> ApiResult<impl IntoResponse> {
    let domain = b.domain.trim_end_matches('.').to_string();
    if let Err(why) = valid_domain(&domain, &state.config.preview.domain) {
        return Err(ApiError::field("domain", format!("must be {why}")));
    }
    let given = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let certificate = match (given(b.certificate_pem), given(b.private_key_pem)) {
        (None, None) => None,
        (Some(chain), Some(key)) => {
            if chain.len() > 65536 || key.len() > 16384 {
                return Err(ApiError::field(
                    "certificate_pem",
                    "a chain of at most 64 KiB and a key of at most 16 KiB",
                ));
            }
            crate::proxy::listener::check_certificate(&domain, chain.as_bytes(), key.as_bytes())
                .map_err(|why| ApiError::field("certificate_pem", why))?;
            Some((chain, key.into_bytes()))
        }
        _ => {
            return Err(ApiError::field(
                "private_key_pem",
                "give certificate_pem and private_key_pem together",
            ))
        }
    };
    let d = state.add_domain(&caller, &id, &domain, certificate).await?;
    Ok((StatusCode::CREATED, data(domain_view(&d))))
}

#[utoipa::path(
    get,
    path = "/deployments/{id}/domains",
    tag = DEPLOY,
    summary = "A deployment's custom domains",
    params(DeploymentId),
    responses((status = 200, description = "OK", body = DataList), E404),
)]
pub(super) async fn list_domains(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let list = state.list_domains(&caller, &id).await?;
    Ok(data(list.iter().map(domain_view).collect::<Vec<_>>()))
}

#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DomainPath {
    /// Deployment id (`dep_...`).
    pub id: String,
    /// Domain id (`dom_...`).
    pub did: String,
}

#[utoipa::path(
    post,
    path = "/deployments/{id}/domains/{did}/verify",
    tag = DEPLOY,
    summary = "Check the domain's TXT record; verified domains are served",
    description = "409 `domain_not_verified` naming the record and what was found, or \
                   `domain_taken` when another deployment holds the domain verified.",
    params(DomainPath),
    responses((status = 200, description = "The domain, `verified`", body = Data), E404),
)]
pub(super) async fn verify_domain(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, did)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    Ok(data(domain_view(
        &state.verify_domain(&caller, &id, &did).await?,
    )))
}

#[utoipa::path(
    delete,
    path = "/deployments/{id}/domains/{did}",
    tag = DEPLOY,
    summary = "Remove a custom domain (no longer served)",
    params(DomainPath),
    responses((status = 200, description = "The removed domain", body = Data), E404),
)]
pub(super) async fn delete_domain(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, did)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let d = state.delete_domain(&caller, &id, &did).await?;
    let mut v = domain_view(&d);
    v["deleted"] = json!(true);
    Ok(data(v))
}
