//! `GET/PUT /deployments/{id}/env`: the start command's environment.

#[allow(unused_imports)]
use super::*;

/// The start command's environment: at most this many variables...
const MAX_ENV_VARS: usize = 200;
/// ...and this many bytes of names and values together.
const MAX_ENV_BYTES: usize = 128 * 1024;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct EnvBody {
    /// Replaces the environment (at most 200 variables, 128 KiB).
    #[schema(required = true, schema_with = crate::routes::openapi::shell_env)]
    pub env: Option<BTreeMap<String, String>>,
}

pub(super) fn env_view(d: &DeploymentRecord) -> axum::Json<serde_json::Value> {
    data(json!({ "deployment_id": d.id, "env": d.env }))
}

#[utoipa::path(
    get,
    path = "/deployments/{id}/env",
    tag = DEPLOY,
    summary = "The environment the start command gets",
    params(DeploymentId),
    responses((status = 200, description = "`{deployment_id, env}`", body = Data), E404),
)]
pub(super) async fn get_env(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(env_view(&state.get_deployment(&caller, &id).await?))
}

#[utoipa::path(
    put,
    path = "/deployments/{id}/env",
    tag = DEPLOY,
    summary = "Replace the start command's environment",
    description = "Instances started from now on get it: a publish, `redeploy` (restarts every \
                   instance without downtime), a scale-up or a replacement.",
    params(DeploymentId),
    request_body = EnvBody,
    responses((status = 200, description = "`{deployment_id, env}`", body = Data), E404And422),
)]
pub(super) async fn put_env(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<EnvBody>,
) -> ApiResult<impl IntoResponse> {
    let Some(env) = b.env else {
        return Err(ApiError::field(
            "env",
            "is required (an object; {} clears it)",
        ));
    };
    let mut bad = Vec::new();
    crate::validate::check_env(&mut bad, "env", &env);
    let bytes: usize = env.iter().map(|(k, v)| k.len() + v.len()).sum();
    if env.len() > MAX_ENV_VARS || bytes > MAX_ENV_BYTES {
        bad.push(FieldError::new(
            "env",
            format!("at most {MAX_ENV_VARS} variables and {MAX_ENV_BYTES} bytes"),
        ));
    }
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    Ok(env_view(
        &state.put_deployment_env(&caller, &id, env).await?,
    ))
}
