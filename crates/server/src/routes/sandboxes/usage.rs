//! Usage reports: one sandbox's, or the tenant's grouped, over a period.

use super::*;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Start of the period: RFC 3339 or unix seconds (default: the
    /// beginning).
    #[param(value_type = String, required = false)]
    pub period_start: Option<String>,
    /// End of the period: RFC 3339 or unix seconds (default now).
    #[param(value_type = String, required = false)]
    pub period_end: Option<String>,
    /// Tenant usage only: one total per value of this field.
    #[param(value_type = String, required = false, pattern = "^(|none|sandbox|sandbox_id|external_workspace_id|external_user_id|external_project_id|template|template_id|deployment|deployment_id)$")]
    pub group_by: Option<String>,
}

pub(super) fn period(state: &AppState, q: &UsageQuery) -> ApiResult<(i64, i64)> {
    let mut bad = Vec::new();
    let mut parse = |field: &str, v: &Option<String>, default: i64| match v.as_deref() {
        None | Some("") => default,
        Some(s) => parse_time(s).unwrap_or_else(|| {
            bad.push(FieldError::new(
                field,
                "must be an RFC 3339 time or unix seconds",
            ));
            default
        }),
    };
    let now = state.now_ms();
    let start = parse("period_start", &q.period_start, 0);
    let end = parse("period_end", &q.period_end, now);
    if bad.is_empty() && end < start {
        bad.push(FieldError::new(
            "period_end",
            "must not be before period_start",
        ));
    }
    if bad.is_empty() {
        Ok((start, end))
    } else {
        Err(ApiError::validation(bad))
    }
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/usage",
    tag = USAGE,
    summary = "Usage of one sandbox",
    params(
        SandboxId,
        ("period_start" = Option<String>, Query, description = "Start of the period: RFC 3339 or unix seconds (default: the beginning)."),
        ("period_end" = Option<String>, Query, description = "End of the period: RFC 3339 or unix seconds (default now)."),
    ),
    responses((status = 200, description = "OK", body = Data), E404And422),
)]
pub(super) async fn sandbox_usage(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<impl IntoResponse> {
    let rec = state.get_sandbox(&caller, &id).await?;
    let (from, to) = period(&state, &q)?;
    let totals = state
        .usage(&caller, Some(&id), from, to, GroupBy::None)
        .await?;
    let u = totals.get("").cloned().unwrap_or_default();
    let mut v = serde_json::to_value(u).map_err(ApiError::internal)?;
    v["sandbox_id"] = json!(rec.id);
    v["state"] = json!(rec.state);
    Ok(data(v))
}

#[utoipa::path(
    get,
    path = "/usage",
    tag = USAGE,
    summary = "Usage of the tenant",
    params(UsageQuery),
    responses((status = 200, description = "OK", body = Data), E422),
)]
pub(super) async fn tenant_usage(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<impl IntoResponse> {
    let (from, to) = period(&state, &q)?;
    let group = GroupBy::parse(q.group_by.as_deref().unwrap_or(""))
        .ok_or_else(|| {
            ApiError::field(
                "group_by",
                "must be sandbox_id, external_workspace_id, external_user_id, external_project_id, template_id or deployment_id",
            )
        })?;
    let totals = state.usage(&caller, None, from, to, group).await?;
    let groups: Vec<serde_json::Value> = totals
        .into_iter()
        .map(|(k, u)| {
            let mut v = serde_json::to_value(u).unwrap_or_default();
            if group != GroupBy::None {
                v["key"] = json!(if k.is_empty() { None } else { Some(k) });
            }
            v
        })
        .collect();
    Ok(data(json!({
        "period_start": rfc3339(from),
        "period_end": rfc3339(to),
        "group_by": q.group_by,
        "groups": groups,
    })))
}
