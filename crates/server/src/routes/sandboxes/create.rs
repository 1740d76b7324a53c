//! Create: the body (sizing, presets, env, tags, metadata, network) checked
//! field by field into one 422, and the handler.

use super::*;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct NetworkBody {
    /// `false`: no network at all.
    #[schema(default = true)]
    pub egress: Option<bool>,
    /// The egress policy, as `PUT /sandboxes/{id}/network-policy` takes it.
    pub policy: Option<crate::core::sandboxes::network::EgressPolicy>,
}

/// The create body of API.md. Every field optional; ranges checked in
/// [`CreateBody::validate`], all at once.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(
    as = SandboxCreateBody,
    description = "Every field is optional; a value out of range is 422 naming the field."
)]
#[serde(default)]
pub struct CreateBody {
    /// `default` (Debian; `miosa-sandbox` is an alias), `minimal`, or a
    /// custom template's id or name.
    #[schema(
        max_length = 128,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$",
        default = "default"
    )]
    pub template_id: Option<String>,
    /// Alias of `template_id`.
    #[schema(deprecated, max_length = 128)]
    pub template: Option<String>,
    /// With several nodes: prefer one whose `region` label is this (a
    /// preference: another node takes the sandbox when none there has
    /// room). With one node it changes nothing.
    #[schema(max_length = 128)]
    pub region: Option<String>,
    /// Shorthand for `cpu_count`, `memory_mb` and `disk_size_mb`
    /// (explicit fields win). Sizes beyond the host's limits are 422.
    #[schema(value_type = Option<crate::routes::openapi::SandboxSize>)]
    pub size: Option<String>,
    /// At most the host's vCPUs too.
    #[schema(minimum = 1, maximum = 8, default = 1)]
    pub cpu_count: Option<i64>,
    /// At most the host's available memory too.
    #[schema(minimum = 128, maximum = 8192, default = 1024)]
    pub memory_mb: Option<i64>,
    #[schema(minimum = 256, maximum = 10240, default = 3072)]
    pub disk_size_mb: Option<i64>,
    /// Alias of `disk_size_mb` (which wins).
    #[schema(minimum = 256, maximum = 10240)]
    pub disk_mb: Option<i64>,
    /// Seconds until the sandbox is destroyed (paused when `persistent`).
    #[schema(minimum = 1, maximum = 86400, default = 300)]
    pub timeout_sec: Option<i64>,
    /// Seconds without activity until the sandbox is destroyed (paused
    /// when `persistent`); 0 = off.
    #[schema(minimum = 0, maximum = 86400, default = 0)]
    pub idle_timeout_sec: Option<i64>,
    /// No timeout applies.
    #[schema(default = false)]
    pub always_on: Option<bool>,
    /// A timeout pauses instead of destroying.
    #[schema(default = false)]
    pub persistent: Option<bool>,
    #[schema(schema_with = crate::routes::openapi::shell_env_or_null)]
    pub env: Option<BTreeMap<String, String>>,
    /// Env whose values are never returned.
    #[schema(schema_with = crate::routes::openapi::shell_env_or_null)]
    pub secret_env: Option<BTreeMap<String, String>>,
    /// At most 16 KiB as JSON.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[schema(schema_with = crate::routes::openapi::tags)]
    pub tags: Option<Vec<String>>,
    /// Unique per tenant among sandboxes not destroyed.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub external_workspace_id: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub external_user_id: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub external_project_id: Option<String>,
    #[schema(default = json!({ "egress": true }))]
    pub network: Option<NetworkBody>,
    /// As the `Idempotency-Key` header.
    #[schema(schema_with = crate::routes::openapi::string_or_null::<1, { MAX_KEY_LEN }>)]
    pub idempotency_key: Option<String>,
}

/// `size` shorthand: (cpu_count, memory_mb, disk_size_mb).
pub fn size_preset(size: &str) -> Option<(u32, u32, u32)> {
    Some(match size {
        "xs" => (1, 512, 1024),
        "s" | "sm" | "small" => (1, 1024, 3072),
        "m" | "md" | "medium" => (2, 2048, 5120),
        "l" | "lg" | "large" => (4, 4096, 8192),
        "xl" => (8, 8192, 10240),
        _ => return None,
    })
}

pub(super) fn check_tags(bad: &mut Vec<FieldError>, tags: &[String]) {
    if tags.len() > 50 {
        bad.push(FieldError::new("tags", "at most 50 tags"));
    }
    for (i, t) in tags.iter().enumerate() {
        if t.is_empty() || t.len() > 64 || t.contains(',') || t.chars().any(char::is_control) {
            bad.push(FieldError::new(
                format!("tags[{i}]"),
                "tags are 1-64 characters without commas",
            ));
        }
    }
}

pub(super) fn check_metadata(
    bad: &mut Vec<FieldError>,
    m: &serde_json::Map<String, serde_json::Value>,
) {
    if crate::core::sandboxes::metadata_size(m) > crate::core::sandboxes::MAX_METADATA_BYTES {
        bad.push(FieldError::new(
            "metadata",
            "must be at most 16 KiB of JSON",
        ));
    }
}

impl CreateBody {
    pub fn validate(self) -> ApiResult<CreateParams> {
        let mut bad = Vec::new();
        let template_id = self
            .template_id
            .or(self.template)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "default".into());
        let (mut cpu, mut mem, mut disk) = hearth_core::warm::DEFAULT_SHAPE;
        if let Some(size) = &self.size {
            match size_preset(size) {
                Some((c, m, d)) => (cpu, mem, disk) = (c, m, d),
                None => bad.push(FieldError::new("size", "must be one of xs, s, m, l, xl")),
            }
        }
        let cpu_count = range(&mut bad, "cpu_count", self.cpu_count, 1, 8, cpu);
        let memory_mb = range(&mut bad, "memory_mb", self.memory_mb, 128, 8192, mem);
        let (disk_field, disk_value) = match (self.disk_size_mb, self.disk_mb) {
            (Some(v), _) => ("disk_size_mb", Some(v)),
            (None, v) => ("disk_mb", v),
        };
        let disk_size_mb = range(&mut bad, disk_field, disk_value, 256, 10240, disk);
        let timeout_sec = range(&mut bad, "timeout_sec", self.timeout_sec, 1, 86400, 300);
        let idle_timeout_sec = range(
            &mut bad,
            "idle_timeout_sec",
            self.idle_timeout_sec,
            0,
            86400,
            0,
        );
        let mut env = self.env.unwrap_or_default();
        check_env(&mut bad, "env", &env);
        let secret = self.secret_env.unwrap_or_default();
        check_env(&mut bad, "secret_env", &secret);
        let secret_keys: Vec<String> = secret.keys().cloned().collect();
        env.extend(secret);
        let metadata = self.metadata.unwrap_or_default();
        check_metadata(&mut bad, &metadata);
        let tags = self.tags.unwrap_or_default();
        check_tags(&mut bad, &tags);
        check_label(&mut bad, "name", &self.name, 128);
        check_label(
            &mut bad,
            "external_workspace_id",
            &self.external_workspace_id,
            256,
        );
        check_label(&mut bad, "external_user_id", &self.external_user_id, 256);
        check_label(
            &mut bad,
            "external_project_id",
            &self.external_project_id,
            256,
        );
        check_label(&mut bad, "template_id", &Some(template_id.clone()), 128);
        let egress_policy = self.network.as_ref().and_then(|n| n.policy.clone());
        if let Some(p) = &egress_policy {
            crate::routes::network::check_policy(&mut bad, "network.policy", p);
        }
        if !bad.is_empty() {
            return Err(ApiError::validation(bad));
        }
        let explicit_shape = self.size.is_some()
            || self.cpu_count.is_some()
            || self.memory_mb.is_some()
            || self.disk_size_mb.is_some()
            || self.disk_mb.is_some();
        Ok(CreateParams {
            template_id,
            explicit_shape,
            cpu_count,
            memory_mb,
            disk_size_mb,
            timeout_sec,
            idle_timeout_sec,
            always_on: self.always_on.unwrap_or(false),
            persistent: self.persistent.unwrap_or(false),
            egress: self.network.and_then(|n| n.egress).unwrap_or(true),
            egress_policy,
            env,
            secret_env: secret_keys,
            metadata,
            tags,
            name: self.name,
            external_workspace_id: self.external_workspace_id,
            external_user_id: self.external_user_id,
            external_project_id: self.external_project_id,
            placement: None,
        })
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// `false` answers 202 at once, in state `provisioning` (default: 201
    /// once running).
    #[param(value_type = bool, required = false)]
    pub wait: Option<String>,
}

#[utoipa::path(
    post,
    path = "/sandboxes",
    tag = SBX,
    summary = "Create a sandbox",
    params(CreateQuery),
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created, and running", body = SandboxData),
        (status = 202, description = "Accepted (`wait=false`): the sandbox is provisioning.", body = SandboxData),
        E422,
    ),
)]
pub(super) async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<CreateQuery>,
    req: axum::extract::Request,
) -> ApiResult<axum::response::Response> {
    let wait = match q.wait.as_deref().map(str::trim) {
        None | Some("" | "true" | "1" | "yes") => true,
        Some("false" | "0" | "no") => false,
        Some(_) => return Err(ApiError::field("wait", "must be true or false")),
    };
    let (parts, raw) = req.into_parts();
    let raw = crate::routes::read_limited(raw, state.config.max_json_body_bytes).await?;
    let body: CreateBody = crate::routes::parse_json(&raw)?;
    let region = match body.region.clone().filter(|r| !r.is_empty()) {
        Some(r) if r.len() > 128 => {
            return Err(ApiError::field("region", "must be at most 128 bytes"))
        }
        r => r,
    };
    let mut params = body.validate()?;
    let placed = crate::cluster::place::create(&state, &mut params, region, parts, raw).await?;
    if let Some(forwarded) = placed {
        return Ok(forwarded);
    }
    let rec = state.create_sandbox(&caller, params, wait).await?;
    let status = if wait {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    let note = crate::routes::audit::AuditNote::created("sandbox", rec.id.clone());
    Ok((status, axum::Extension(note), data(view(&state, rec))).into_response())
}
