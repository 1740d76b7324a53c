//! `/sandbox-templates` and `/sandbox-template-builds`: the built-in
//! templates (`default`, the Debian image, alias `miosa-sandbox`; and
//! `minimal`) with their warm snapshots, and templates built from a
//! BuildSpec: validate, create (queues version 1), rebuild (the next
//! version), build status, and the build log over SSE.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{
    BuildId, Data, E404And422, EventStream, LastEventId, TemplateId, E404, E422, TPL,
};
use super::{data, parse_json, read_limited, sse, ApiJson, AppState};
use crate::core::clock::rfc3339;
use crate::core::error::Kind;
use crate::core::templates::builds::TemplateInfo;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::model::{BuildRecord, BuildSpec, BuildStep};
use crate::routes::Auth;
use crate::validate::{check_env, range};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(validate))
        .routes(routes!(get_one))
        .routes(routes!(rebuild))
        .routes(routes!(get_build))
        .routes(routes!(build_logs))
}

const BUILT_IN: [(&str, &str, &[&str]); 2] = [
    (
        "default",
        "Debian bookworm with Python (venv at /opt/venv), git, curl, Node.js",
        &["miosa-sandbox", "debian"],
    ),
    ("minimal", "busybox and the agent; boots in seconds", &[]),
];

/// A BuildSpec as sent (API.md); [`BuildSpecBody::check`] validates it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(
    as = BuildSpec,
    description = "How to build a template. Unknown fields are refused (422)."
)]
#[serde(deny_unknown_fields)]
pub struct BuildSpecBody {
    /// `minimal`, `debian` (`default`), or another template's id or name.
    #[schema(
        min_length = 1,
        max_length = 128,
        default = "debian",
        example = "minimal"
    )]
    pub from: Option<String>,
    #[schema(schema_with = super::openapi::build_packages::<MAX_PACKAGES>)]
    pub packages: Option<Vec<String>>,
    /// Run in order as `user` in `workdir`.
    #[schema(schema_with = super::openapi::build_steps::<MAX_STEPS>)]
    pub steps: Option<Vec<serde_json::Value>>,
    #[schema(schema_with = super::openapi::shell_env_or_null)]
    pub env: Option<BTreeMap<String, String>>,
    /// An absolute path of letters, digits and `/._-`, without a `..`
    /// component.
    #[schema(
        max_length = 256,
        pattern = r"^/[A-Za-z0-9/._-]*$",
        default = "/workspace"
    )]
    pub workdir: Option<String>,
    /// A user name, made when missing.
    #[schema(max_length = 32, pattern = r"^[a-z_][a-z0-9_-]*$", example = "app")]
    pub user: Option<String>,
    /// Started in every sandbox made from the template.
    #[schema(
        min_length = 1,
        max_length = 65536,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$",
        example = "python3 -m http.server 8000"
    )]
    pub start_cmd: Option<String>,
    /// Must succeed before the template is snapshotted.
    #[schema(
        min_length = 1,
        max_length = 65536,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$",
        example = "curl -sf localhost:8000"
    )]
    pub ready_cmd: Option<String>,
    /// How long `ready_cmd` may keep failing (default 120 s).
    #[schema(minimum = 1, maximum = 3600, default = 120)]
    pub ready_timeout_sec: Option<i64>,
    #[schema(minimum = 1, maximum = 8, default = 1)]
    pub cpu_count: Option<i64>,
    #[schema(minimum = 128, maximum = 8192, default = 1024)]
    pub memory_mb: Option<i64>,
    #[schema(minimum = 256, maximum = 10240, default = 3072)]
    pub disk_size_mb: Option<i64>,
}

const MAX_STEPS: usize = 200;
const MAX_PACKAGES: usize = 500;

fn command_ok(bad: &mut Vec<FieldError>, field: &str, cmd: &Option<String>) {
    if let Some(c) = cmd {
        if c.trim().is_empty() || c.contains('\0') || c.len() > 64 * 1024 {
            bad.push(FieldError::new(
                field,
                "must be a non-empty command of at most 64 KiB without NUL",
            ));
        }
    }
}

fn parse_step(bad: &mut Vec<FieldError>, i: usize, v: serde_json::Value) -> Option<BuildStep> {
    let field = format!("build_spec.steps[{i}]");
    let step: BuildStep = match serde_json::from_value(v) {
        Ok(s) => s,
        Err(_) => {
            bad.push(FieldError::new(
                field,
                "a step is {\"run\": \"<command>\"} or {\"copy\": {\"path\", \"content_base64\"}}",
            ));
            return None;
        }
    };
    match &step {
        BuildStep::Run(cmd) => command_ok(bad, &format!("{field}.run"), &Some(cmd.clone())),
        BuildStep::Copy(c) => {
            if c.path.is_empty() || c.path.contains('\0') || c.path.split('/').any(|p| p == "..") {
                bad.push(FieldError::new(
                    format!("{field}.copy.path"),
                    "must be a path without NUL or `..`",
                ));
            }
            if base64::engine::general_purpose::STANDARD
                .decode(&c.content_base64)
                .is_err()
            {
                bad.push(FieldError::new(
                    format!("{field}.copy.content_base64"),
                    "is not valid base64",
                ));
            }
            if c.mode.is_some_and(|m| m > 0o7777) {
                bad.push(FieldError::new(
                    format!("{field}.copy.mode"),
                    "must be permission bits (at most 0o7777)",
                ));
            }
        }
    }
    Some(step)
}

impl BuildSpecBody {
    /// Whether the VM size was given (a build on a custom template takes
    /// that template's size otherwise).
    pub fn shape_given(&self) -> bool {
        self.cpu_count.is_some() || self.memory_mb.is_some() || self.disk_size_mb.is_some()
    }

    /// The spec with defaults filled in, or every bad field.
    pub fn check(self) -> Result<BuildSpec, Vec<FieldError>> {
        let mut bad = Vec::new();
        let from = self.from.unwrap_or_else(|| "debian".into());
        if from.is_empty() || from.len() > 128 {
            bad.push(FieldError::new(
                "build_spec.from",
                "must be 1-128 characters",
            ));
        }
        let packages = self.packages.unwrap_or_default();
        if packages.len() > MAX_PACKAGES {
            bad.push(FieldError::new(
                "build_spec.packages",
                format!("at most {MAX_PACKAGES} packages"),
            ));
        }
        for (i, p) in packages.iter().enumerate() {
            let ok = p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && p.len() <= 128
                && p.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | ':' | '=' | '~')
                });
            if !ok {
                bad.push(FieldError::new(
                    format!("build_spec.packages[{i}]"),
                    "is not a Debian package name (optionally with =version)",
                ));
            }
        }
        let raw_steps = self.steps.unwrap_or_default();
        if raw_steps.len() > MAX_STEPS {
            bad.push(FieldError::new(
                "build_spec.steps",
                format!("at most {MAX_STEPS} steps"),
            ));
        }
        let steps: Vec<BuildStep> = raw_steps
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| parse_step(&mut bad, i, v))
            .collect();
        let env = self.env.unwrap_or_default();
        check_env(&mut bad, "build_spec.env", &env);
        let workdir = self.workdir.unwrap_or_else(|| "/workspace".into());
        let workdir_ok = workdir.starts_with('/')
            && workdir.len() <= 256
            && !workdir.split('/').any(|p| p == "..")
            && workdir
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'));
        if !workdir_ok {
            bad.push(FieldError::new(
                "build_spec.workdir",
                "must be an absolute path of letters, digits, `/._-`",
            ));
        }
        if let Some(u) = &self.user {
            let ok = !u.is_empty()
                && u.len() <= 32
                && u.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && u.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if !ok {
                bad.push(FieldError::new("build_spec.user", "is not a user name"));
            }
        }
        command_ok(&mut bad, "build_spec.start_cmd", &self.start_cmd);
        command_ok(&mut bad, "build_spec.ready_cmd", &self.ready_cmd);
        let ready_timeout_sec = range(
            &mut bad,
            "build_spec.ready_timeout_sec",
            self.ready_timeout_sec,
            1,
            3600,
            120,
        );
        let cpu_count = range(&mut bad, "build_spec.cpu_count", self.cpu_count, 1, 8, 1);
        let memory_mb = range(
            &mut bad,
            "build_spec.memory_mb",
            self.memory_mb,
            128,
            8192,
            1024,
        );
        let disk_size_mb = range(
            &mut bad,
            "build_spec.disk_size_mb",
            self.disk_size_mb,
            256,
            10240,
            3072,
        );
        if !bad.is_empty() {
            return Err(bad);
        }
        Ok(BuildSpec {
            from,
            from_version: None,
            packages,
            steps,
            env,
            workdir,
            user: self.user,
            start_cmd: self.start_cmd,
            ready_cmd: self.ready_cmd,
            ready_timeout_sec,
            cpu_count,
            memory_mb,
            disk_size_mb,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = TemplateCreateBody)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// 1-64 letters, digits and `._-`, starting with a letter or digit;
    /// unique per tenant.
    #[schema(
        max_length = 64,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        example = "web-app"
    )]
    name: String,
    build_spec: BuildSpecBody,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = BuildSpecOnly)]
#[serde(deny_unknown_fields)]
struct SpecOnly {
    /// Checked as a template name when given.
    #[serde(default)]
    #[schema(
        max_length = 64,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        example = "web-app"
    )]
    name: Option<String>,
    #[serde(default)]
    build_spec: Option<BuildSpecBody>,
}

fn check_name(name: &str) -> Option<FieldError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    (!ok).then(|| {
        FieldError::new(
            "name",
            "must be 1-64 letters, digits and `._-`, starting with a letter or digit",
        )
    })
}

fn build_view(b: &BuildRecord) -> serde_json::Value {
    let duration_ms = b.started_at.zip(b.finished_at).map(|(s, f)| f - s);
    json!({
        "id": b.id,
        "template_id": b.template_id,
        "version": b.version,
        "state": b.state,
        "status": b.state,
        "error": b.error,
        "build_spec": b.spec,
        "created_at": rfc3339(b.created_at),
        "started_at": b.started_at.map(rfc3339),
        "finished_at": b.finished_at.map(rfc3339),
        "duration_ms": duration_ms,
        "logs_url": format!("/api/v1/sandbox-template-builds/{}/logs/stream", b.id),
    })
}

fn custom_view(t: &TemplateInfo) -> serde_json::Value {
    let ready = t.latest_ready();
    let latest = t.builds.first();
    let spec = ready.or(latest).map(|b| &b.spec);
    json!({
        "id": t.template.id,
        "name": t.template.name,
        "built_in": false,
        "version": ready.map(|b| format!("v{}", b.version)),
        "state": latest.map(|b| b.state),
        "latest_build_id": latest.map(|b| b.id.clone()),
        "cpu_count": spec.map(|s| s.cpu_count),
        "memory_mb": spec.map(|s| s.memory_mb),
        "disk_size_mb": spec.map(|s| s.disk_size_mb),
        "build_spec": spec,
        "versions": t.builds.iter().map(|b| json!({
            "version": b.version,
            "build_id": b.id,
            "state": b.state,
            "created_at": rfc3339(b.created_at),
        })).collect::<Vec<_>>(),
        "created_at": rfc3339(t.template.created_at),
    })
}

fn built_in_view(state: &AppState, id: &str) -> Option<serde_json::Value> {
    let (id, description, aliases) = BUILT_IN
        .iter()
        .find(|(t, _, aliases)| *t == id || aliases.contains(&id))?;
    let warm = state.warm_shapes(id);
    Some(json!({
        "id": id,
        "name": id,
        "description": description,
        "aliases": aliases,
        "built_in": true,
        "warm_shapes": warm,
        "snapshots": state.warm_status(id),
    }))
}

#[utoipa::path(
    get,
    path = "/sandbox-templates",
    tag = TPL,
    summary = "List templates",
    responses((status = 200, description = "OK: `{default_template_id, data: [...]}`", body = Object)),
)]
async fn list(State(state): State<AppState>, Auth(caller): Auth) -> ApiResult<impl IntoResponse> {
    let mut data: Vec<_> = BUILT_IN
        .iter()
        .filter_map(|(id, _, _)| built_in_view(&state, id))
        .collect();
    data.extend(
        state
            .list_custom_templates(&caller)
            .await?
            .iter()
            .map(custom_view),
    );
    Ok(axum::Json(
        json!({ "default_template_id": "default", "data": data }),
    ))
}

#[utoipa::path(
    get,
    path = "/sandbox-templates/{tid}",
    tag = TPL,
    summary = "Get a template",
    params(TemplateId),
    responses((status = 200, description = "OK", body = Data), E404),
)]
async fn get_one(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    if let Some(v) = built_in_view(&state, &id) {
        return Ok(data(v));
    }
    let info = state
        .find_template(&caller, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("template"))?;
    Ok(data(custom_view(&info)))
}

#[utoipa::path(
    post,
    path = "/sandbox-templates",
    tag = TPL,
    summary = "Create a template from a BuildSpec and queue its first build",
    request_body = CreateBody,
    responses((status = 202, description = "Accepted: the template, its `build`", body = Data), E422),
)]
async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<Response> {
    let mut bad: Vec<FieldError> = check_name(&body.name).into_iter().collect();
    let shape_given = body.build_spec.shape_given();
    let spec = match body.build_spec.check() {
        Ok(s) => Some(s),
        Err(e) => {
            bad.extend(e);
            None
        }
    };
    let Some(spec) = spec.filter(|_| bad.is_empty()) else {
        return Err(ApiError::validation(bad));
    };
    let (info, build) = state
        .create_template(&caller, &body.name, spec, shape_given)
        .await?;
    let mut view = custom_view(&info);
    view["build"] = build_view(&build);
    Ok((StatusCode::ACCEPTED, data(view)).into_response())
}

#[utoipa::path(
    post,
    path = "/sandbox-templates/validate",
    tag = TPL,
    summary = "Check a BuildSpec without building it",
    request_body = SpecOnly,
    responses(
        (status = 200, description = "OK: `{valid, errors, build_spec}`; a bad spec is `valid: false`, not a 422", body = Data),
        E422,
    ),
)]
async fn validate(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<SpecOnly>,
) -> ApiResult<impl IntoResponse> {
    let mut errors: Vec<FieldError> = body
        .name
        .as_deref()
        .and_then(check_name)
        .into_iter()
        .collect();
    let spec_body = body.build_spec.unwrap_or_default();
    let shape_given = spec_body.shape_given();
    let spec = match spec_body.check() {
        Ok(s) => match state.check_from(&caller, s, shape_given).await {
            Ok(s) => Some(s),
            Err(e) if e.kind == Kind::Invalid => {
                errors.extend(e.details);
                None
            }
            Err(e) => return Err(e.into()),
        },
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    let valid = errors.is_empty();
    Ok(data(json!({
        "valid": valid,
        "errors": errors,
        "build_spec": spec.filter(|_| valid),
    })))
}

#[utoipa::path(
    post,
    path = "/sandbox-templates/{tid}/builds",
    tag = TPL,
    summary = "Build the next version of a template (body: optional build_spec)",
    params(TemplateId),
    request_body = super::openapi::RebuildBody,
    responses((status = 202, description = "Accepted: the build", body = Data), E404And422),
)]
async fn rebuild(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    let bytes = read_limited(req.into_body(), state.config.max_json_body_bytes).await?;
    let body: SpecOnly = if bytes.iter().all(u8::is_ascii_whitespace) {
        SpecOnly::default()
    } else {
        parse_json(&bytes)?
    };
    let spec = match body.build_spec {
        Some(b) => {
            let given = b.shape_given();
            Some((b.check().map_err(ApiError::validation)?, given))
        }
        None => None,
    };
    let build = state.rebuild_template(&caller, &id, spec).await?;
    Ok((StatusCode::ACCEPTED, data(build_view(&build))).into_response())
}

#[utoipa::path(
    get,
    path = "/sandbox-template-builds/{bid}",
    tag = TPL,
    summary = "Get a template build",
    params(BuildId),
    responses((status = 200, description = "OK", body = Data), E404),
)]
async fn get_build(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let b = state.get_build(&caller, &id).await?;
    Ok(data(build_view(&b)))
}

/// The build log as SSE: `log` frames (`id` = line number), then one
/// `done` frame with the build's final state. Resumes after
/// `Last-Event-ID`.
#[utoipa::path(
    get,
    path = "/sandbox-template-builds/{bid}/logs/stream",
    tag = TPL,
    summary = "Stream a build's log: `log` frames, then `done`",
    params(BuildId, LastEventId),
    responses(
        (status = 200, description = "Server-sent events", body = EventStream, content_type = "text/event-stream"),
        E404,
    ),
)]
async fn build_logs(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let b = state.get_build(&caller, &id).await?;
    let log = state.build_log(&b);
    let from = sse::last_event_id(&headers).map_or(0, |n| n.max(-1).saturating_add(1)) as u64;
    let (core, holder) = (state.clone(), caller.clone());
    let frames = super::exec::async_stream(&state, &holder, "build_log", move |tx| async move {
        let mut next = from;
        let mut changed = log.subscribe();
        loop {
            let page = log.since(next);
            for l in &page.lines {
                next = l.seq + 1;
                let frame = sse::frame("log", Some(l.seq as i64), json!(l));
                if tx.send(Ok(frame)).await.is_err() {
                    return;
                }
            }
            if page.done {
                break;
            }
            if !page.lines.is_empty() {
                continue;
            }
            // A queued or quiet build prints nothing for a long time: a
            // client that left is noticed at once, not at its next line.
            tokio::select! {
                r = changed.changed() => if r.is_err() { break },
                () = tx.closed() => return,
            }
        }
        let end = match core.get_build(&caller, &b.id).await {
            Ok(b) => json!({ "build_id": b.id, "state": b.state, "error": b.error }),
            _ => json!({ "build_id": b.id }),
        };
        let _ = tx.send(Ok(sse::frame("done", None, end))).await;
    });
    Ok(sse::response(frames, sse::heartbeat_of(&state)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> Result<BuildSpec, Vec<FieldError>> {
        serde_json::from_value::<BuildSpecBody>(v)
            .expect("body parses")
            .check()
    }

    fn fields(e: Vec<FieldError>) -> Vec<String> {
        e.into_iter().map(|f| f.field).collect()
    }

    #[test]
    fn defaults_fill_in() {
        let s = spec(json!({"steps": [{"run": "echo hi"}], "ready_cmd": "true"})).expect("valid");
        assert_eq!(s.from, "debian");
        assert_eq!(s.workdir, "/workspace");
        assert_eq!((s.cpu_count, s.memory_mb, s.disk_size_mb), (1, 1024, 3072));
        assert_eq!(s.ready_timeout_sec, 120);
        assert_eq!(s.steps, vec![BuildStep::Run("echo hi".into())]);
    }

    #[test]
    fn copy_steps_and_sizes_parse() {
        let s = spec(json!({
            "from": "minimal",
            "steps": [{"copy": {"path": "app/x.txt", "content_base64": "aGk=", "mode": 493}}],
            "cpu_count": 2, "memory_mb": 256, "disk_size_mb": 512,
        }))
        .expect("valid");
        match &s.steps[0] {
            BuildStep::Copy(c) => assert_eq!((c.path.as_str(), c.mode), ("app/x.txt", Some(493))),
            other => panic!("expected a copy step, got {other:?}"),
        }
        assert_eq!((s.cpu_count, s.memory_mb, s.disk_size_mb), (2, 256, 512));
    }

    #[test]
    fn every_bad_field_is_reported() {
        let e = spec(json!({
            "packages": ["curl", "rm -rf /"],
            "steps": [{"run": ""}, {"shell": "x"}, {"copy": {"path": "../x", "content_base64": "!!"}}],
            "env": {"1X": "y"},
            "workdir": "relative",
            "user": "Root;",
            "ready_timeout_sec": 0,
            "cpu_count": 99,
            "memory_mb": 1,
            "disk_size_mb": 1,
        }))
        .expect_err("invalid");
        assert_eq!(
            fields(e),
            vec![
                "build_spec.packages[1]",
                "build_spec.steps[0].run",
                "build_spec.steps[1]",
                "build_spec.steps[2].copy.path",
                "build_spec.steps[2].copy.content_base64",
                "build_spec.env.1X",
                "build_spec.workdir",
                "build_spec.user",
                "build_spec.ready_timeout_sec",
                "build_spec.cpu_count",
                "build_spec.memory_mb",
                "build_spec.disk_size_mb",
            ]
        );
    }

    #[test]
    fn unknown_spec_fields_are_refused() {
        assert!(serde_json::from_value::<BuildSpecBody>(json!({"form": "debian"})).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("web-app_1.0").is_none());
        for bad in ["", "-x", "a b", "x/y", &"n".repeat(65)] {
            assert!(check_name(bad).is_some(), "{bad:?} accepted");
        }
    }
}
