//! Publishing: the two publish bodies (one declaration of their shared
//! fields), their checks, and `POST /sandboxes/{id}/deploy` and `POST
//! /deployments/{id}/publish`.

#[allow(unused_imports)]
use super::*;

/// Declares a publish body: its own fields, then those every publish
/// takes (`POST /sandboxes/{id}/deploy` and `POST
/// /deployments/{id}/publish` share them; one declaration keeps their
/// schemas the same).
macro_rules! publish_body {
    ($(#[$meta:meta])* pub struct $name:ident { $($own:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default, Deserialize, ToSchema)]
        #[serde(default)]
        pub struct $name {
            $($own)*
            /// The port the app listens on in the sandbox.
            #[schema(required = true, minimum = 1, maximum = 65535)]
            pub port: Option<i64>,
            /// The command that starts the app (run in each instance).
            #[schema(
                required = true,
                min_length = 1,
                max_length = 4096,
                pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
            )]
            pub start_command: Option<String>,
            /// Alias of `start_command`.
            #[schema(
                min_length = 1,
                max_length = 4096,
                pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
            )]
            pub run_command: Option<String>,
            /// Answered 2xx/3xx before the URL switches (default `/`).
            #[schema(min_length = 1, max_length = 1024, pattern = r"^/[!-~]*$")]
            pub health_check_path: Option<String>,
            /// Switch the URL to this version once healthy (default true).
            pub promote: Option<bool>,
            /// Seconds the new instance has to pass its health check, 1-600
            /// (default 90).
            #[schema(minimum = 1, maximum = 600, default = 90)]
            pub health_timeout_sec: Option<i64>,
            /// Answer once the version serves or failed (default true); false:
            /// 202 at once (the snapshot taken), the build and roll-out going on
            /// (poll the version).
            pub wait: Option<bool>,
            /// Run once at publish in a clone of the sandbox (its output is kept
            /// as the version's `build_log`); a non-zero exit fails the version.
            #[schema(
                min_length = 1,
                max_length = 4096,
                pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
            )]
            pub build_command: Option<String>,
            /// The directory the build and start commands run in (absolute).
            #[schema(min_length = 1, max_length = 4096, pattern = r"^/[^\u0000]*$")]
            pub output_path: Option<String>,
            /// Instances serving the deployment, load-balanced (default 1, or the
            /// deployment's count; at most 20 and the tenant's `replicas` quota).
            #[schema(minimum = 1, maximum = 20)]
            pub replicas: Option<i64>,
            /// A custom domain to serve too, once verified (see
            /// `/deployments/{id}/domains`).
            #[schema(
                min_length = 3,
                max_length = 253,
                pattern = r"^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]([a-z0-9-]*[a-z0-9])?$",
                example = "app.example.com"
            )]
            pub custom_domain: Option<String>,
            /// The instances' shape. Instances restore the version's memory
            /// snapshot, so they take the source sandbox's shape: a different one
            /// is refused (422) with what it is.
            pub resources: Option<DeployResources>,
            /// A new deployment's external ids (default: the sandbox's).
            #[schema(max_length = 256)]
            pub external_workspace_id: Option<String>,
            #[schema(max_length = 256)]
            pub external_user_id: Option<String>,
            #[schema(max_length = 256)]
            pub external_project_id: Option<String>,
        }
    };
}

publish_body! {
    /// `POST /sandboxes/{id}/deploy`: a new deployment (`name`) or a new
    /// version of one (`deployment_id`).
    pub struct DeployBody {
        /// A new deployment of this name (unique in the tenant)...
        #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.-]+$")]
        pub name: Option<String>,
        /// ...or a new version of this deployment.
        #[schema(min_length = 1, max_length = 64)]
        pub deployment_id: Option<String>,
        /// A new deployment's name under the apps domain
        /// (`<domain>.apps.<proxy domain>`; default random).
        #[schema(
            min_length = 3,
            max_length = 63,
            pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
        )]
        pub domain: Option<String>,
    }
}

/// `resources` of a publish: each field, when given, must be the source
/// sandbox's.
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(default)]
pub struct DeployResources {
    #[schema(minimum = 1, maximum = 4294967295_u64)]
    pub cpu_count: Option<u32>,
    #[schema(minimum = 1, maximum = 4294967295_u64)]
    pub memory_mb: Option<u32>,
    #[schema(minimum = 1, maximum = 4294967295_u64)]
    pub disk_size_mb: Option<u32>,
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/deploy",
    tag = DEPLOY,
    summary = "Publish the sandbox: a new deployment or a new version, serving once healthy",
    description = "Answers `{deployment, version, promoted}` once the new version's instance passed \
                   its health check and serves the deployment's URL, or failed (then `promoted` is \
                   false, the version `failed` with its `error`, and the URL stays on what it served).",
    params(SandboxId),
    request_body = DeployBody,
    responses(
        (status = 201, description = "Published (or failed: `promoted` false)", body = Data),
        (status = 202, description = "`wait: false`: the snapshot is taken, the build and roll-out go on", body = Data),
        E404And422,
    ),
)]
pub(super) async fn deploy(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<DeployBody>,
) -> ApiResult<impl IntoResponse> {
    let params = b.validate(&state.config.preview.domain)?;
    published(&state, &caller, &id, params).await
}

/// Publishes `source`: 201 with what it did, or 202 when not waited for.
pub(super) async fn published(
    state: &AppState,
    caller: &crate::core::keys::Caller,
    source: &str,
    params: DeployParams,
) -> ApiResult<axum::response::Response> {
    let status = match params.wait {
        true => StatusCode::CREATED,
        false => StatusCode::ACCEPTED,
    };
    let d = state.deploy(caller, source, params).await?;
    Ok((status, data(deployed_view(state, &d).await?)).into_response())
}

impl DeployBody {
    fn validate(self, proxy_domain: &str) -> ApiResult<DeployParams> {
        let b = self;

        let mut bad = Vec::new();
        let port = match b.port {
            Some(p) if (1..=65535).contains(&p) => p as u16,
            _ => {
                bad.push(FieldError::new("port", "is required, 1-65535"));
                0
            }
        };
        let bad_command = |c: &str| c.trim().is_empty() || c.len() > 4096 || c.contains('\0');
        if b.run_command.as_deref().is_some_and(bad_command) {
            bad.push(FieldError::new("run_command", "1-4096 bytes without NUL"));
        }
        let command = b.start_command.or(b.run_command).unwrap_or_default();
        if bad_command(&command) {
            bad.push(FieldError::new(
                "start_command",
                "is required: 1-4096 bytes without NUL",
            ));
        }
        let health = b.health_check_path.unwrap_or_else(|| "/".into());
        if !health.starts_with('/')
            || health.len() > 1024
            || !health.bytes().all(|c| c.is_ascii_graphic())
        {
            bad.push(FieldError::new(
                "health_check_path",
                "an absolute path of printable ASCII, at most 1024 bytes",
            ));
        }
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 128
                && n.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
        };
        match (&b.name, &b.deployment_id) {
            (Some(n), _) if !name_ok(n) => {
                bad.push(FieldError::new("name", "1-128 letters, digits, _, - and ."))
            }
            (_, Some(d)) if d.is_empty() || d.len() > 64 => {
                bad.push(FieldError::new("deployment_id", "1-64 characters"))
            }
            (None, None) => bad.push(FieldError::new(
                "name",
                "name a new deployment, or give deployment_id",
            )),
            _ => {}
        }
        let max = MAX_HEALTH_DEADLINE.as_secs() as i64;
        let health_deadline = match b.health_timeout_sec {
            None => HEALTH_DEADLINE,
            Some(s) if (1..=max).contains(&s) => Duration::from_secs(s as u64),
            Some(_) => {
                bad.push(FieldError::new(
                    "health_timeout_sec",
                    format!("must be between 1 and {max}"),
                ));
                HEALTH_DEADLINE
            }
        };
        if b.build_command.as_deref().is_some_and(bad_command) {
            bad.push(FieldError::new("build_command", "1-4096 bytes without NUL"));
        }
        if b.output_path
            .as_deref()
            .is_some_and(|p| !p.starts_with('/') || p.len() > 4096 || p.contains('\0'))
        {
            bad.push(FieldError::new(
                "output_path",
                "an absolute path of at most 4096 bytes without NUL",
            ));
        }
        let replicas = match b.replicas {
            None => None,
            Some(n) if (1..=i64::from(MAX_REPLICAS)).contains(&n) => Some(n as u32),
            Some(_) => {
                bad.push(FieldError::new(
                    "replicas",
                    format!("must be between 1 and {MAX_REPLICAS}"),
                ));
                None
            }
        };
        if let Some(slug) = &b.domain {
            let ok = (3..=63).contains(&slug.len())
                && slug
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !slug.starts_with('-')
                && !slug.ends_with('-');
            if !ok {
                bad.push(FieldError::new(
                    "domain",
                    "3-63 lower-case letters, digits and -, not at either end",
                ));
            } else if b.deployment_id.is_some() {
                bad.push(FieldError::new(
                    "domain",
                    "names a new deployment's URL; a deployment keeps its own",
                ));
            }
        }
        if let Some(r) = &b.resources {
            for (name, v) in [
                ("cpu_count", r.cpu_count),
                ("memory_mb", r.memory_mb),
                ("disk_size_mb", r.disk_size_mb),
            ] {
                if v == Some(0) {
                    bad.push(FieldError::new(
                        format!("resources.{name}"),
                        "must be at least 1",
                    ));
                }
            }
        }
        if let Some(d) = &b.custom_domain {
            if let Err(why) = valid_domain(d, proxy_domain) {
                bad.push(FieldError::new("custom_domain", format!("must be {why}")));
            }
        }
        for (field, v) in [
            ("external_workspace_id", &b.external_workspace_id),
            ("external_user_id", &b.external_user_id),
            ("external_project_id", &b.external_project_id),
        ] {
            if v.as_deref()
                .is_some_and(|v| v.len() > 256 || v.chars().any(char::is_control))
            {
                bad.push(FieldError::new(
                    field,
                    "at most 256 bytes without control characters",
                ));
            }
        }
        if !bad.is_empty() {
            return Err(ApiError::validation(bad));
        }
        Ok(DeployParams {
            name: b.name,
            deployment_id: b.deployment_id,
            port,
            run_command: command,
            health_check_path: health,
            build_command: b.build_command,
            output_path: b.output_path,
            replicas,
            external: Externals {
                workspace_id: b.external_workspace_id,
                user_id: b.external_user_id,
                project_id: b.external_project_id,
            },
            slug: b.domain,
            custom_domain: b.custom_domain,
            resources: b.resources.map(|r| Shape {
                cpu_count: r.cpu_count,
                memory_mb: r.memory_mb,
                disk_size_mb: r.disk_size_mb,
            }),
            promote: b.promote.unwrap_or(true),
            wait: b.wait.unwrap_or(true),
            health_deadline,
        })
    }
}

publish_body! {
    /// `POST /deployments/{id}/publish`: the source (the deployment is the
    /// path's).
    pub struct PublishBody {
        /// The sandbox whose snapshot becomes the new version.
        #[schema(required = true, min_length = 1, max_length = 64)]
        pub source_sandbox_id: String,
    }
}

impl From<(String, PublishBody)> for DeployBody {
    fn from((deployment_id, p): (String, PublishBody)) -> DeployBody {
        DeployBody {
            name: None,
            deployment_id: Some(deployment_id),
            port: p.port,
            start_command: p.start_command,
            run_command: p.run_command,
            health_check_path: p.health_check_path,
            promote: p.promote,
            health_timeout_sec: p.health_timeout_sec,
            wait: p.wait,
            build_command: p.build_command,
            output_path: p.output_path,
            replicas: p.replicas,
            domain: None,
            custom_domain: p.custom_domain,
            resources: p.resources,
            external_workspace_id: p.external_workspace_id,
            external_user_id: p.external_user_id,
            external_project_id: p.external_project_id,
        }
    }
}

#[utoipa::path(
    post,
    path = "/deployments/{id}/publish",
    tag = DEPLOY,
    summary = "Publish a sandbox as a new version of this deployment",
    params(DeploymentId),
    request_body = PublishBody,
    responses(
        (status = 201, description = "`{deployment, version, promoted}`", body = Data),
        (status = 202, description = "`wait: false`: the snapshot is taken, the build and roll-out go on", body = Data),
        E404And422,
    ),
)]
pub(super) async fn publish(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<PublishBody>,
) -> ApiResult<impl IntoResponse> {
    if b.source_sandbox_id.is_empty() || b.source_sandbox_id.len() > 64 {
        return Err(ApiError::field("source_sandbox_id", "is required"));
    }
    let source = b.source_sandbox_id.clone();
    let params = DeployBody::from((id, b)).validate(&state.config.preview.domain)?;
    published(&state, &caller, &source, params).await
}
