//! The OpenAPI 3.1 document of the REST API, generated from the code that
//! serves it.
//!
//! - Each handler carries `#[utoipa::path]`: method, path, tag, summary,
//!   parameters, request body, and its answers (the success status and
//!   body, and the error envelope where it looks something up (404) or
//!   validates input (422)).
//! - Request bodies, query strings and response views derive their schemas
//!   (`ToSchema`, `IntoParams`) from the structs the handlers deserialize
//!   and serialize, with the bounds the handlers check (`#[schema(...)]`).
//! - Every route file's `routes()` registers its handlers with
//!   utoipa-axum's `routes!`, which builds the axum route and the document
//!   entry from the same attribute: a handler cannot be routed without
//!   being documented, nor documented at a path it is not routed at.
//!   `super::router` and [`document`] assemble the same [`super::routes`].
//! - [`finish`] adds what the layers around the handlers decide for every
//!   route alike (API key, `Idempotency-Key`, the catch-all error answers),
//!   and the few cross-field rules serde cannot carry ([`refine`]).
//!
//! `crates/server/openapi.json` is the document checked in; the server
//! serves that file as is (`system::OPENAPI`). Tests keep it honest:
//! - `checked_in_openapi_json_matches_document` below fails when the file
//!   is stale; `UPDATE_OPENAPI=1 cargo test -p hearth-server --lib openapi`
//!   rewrites it;
//! - `tests/openapi.rs` sends one request per documented operation and
//!   fails on the router's fallback or a 405, and checks the served sandbox
//!   against the `Sandbox` schema;
//! - `tests/openapi_bounds.rs` derives bodies from every request schema and
//!   checks the server accepts what the document allows and refuses what it
//!   rules out.
//!
//! Adding a route: write the handler with its `#[utoipa::path(...)]`, add
//! it to its file's `routes()` with `routes!`, derive `ToSchema` on its body
//! with the bounds it checks, rerun with `UPDATE_OPENAPI=1`.
//!
//! Paths are full paths (`/api/v1/...`, and `/healthz`, `/openapi.json` at
//! the root), so the document has no `servers` entry: it applies to the
//! server's origin.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, Operation, PathItem};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder, Schema};
use utoipa::{IntoResponses, Modify, OpenApi, PartialSchema, ToResponse, ToSchema};
use utoipa_axum::router::UtoipaMethodRouter;

mod answers;
mod fields;
#[cfg(test)]
mod tests;

pub use answers::*;
pub use fields::*;

use super::AppState;

// ---------------------------------------------------------------- tags

pub const SBX: &str = "Sandboxes";
pub const NET: &str = "Network";
pub const EXEC: &str = "Exec";
pub const PROC: &str = "Processes";
pub const TERM: &str = "Terminals";
pub const FILES: &str = "Files";
pub const ENV: &str = "Env";
pub const SNAP: &str = "Snapshots";
pub const PREVIEW: &str = "Previews";
pub const TPL: &str = "Templates";
pub const EVENTS: &str = "Events";
pub const USAGE: &str = "Usage";
pub const KEYS: &str = "API keys";
pub const QUOTAS: &str = "Quotas";
pub const SECRETS: &str = "Secrets";
pub const TOKENS: &str = "Scoped tokens";
pub const AUDIT: &str = "Audit log";
pub const DEPLOY: &str = "Deployments";
pub const NODES: &str = "Nodes";
pub const SYSTEM: &str = "System";

/// What the document says besides the operations: info, tags in order,
/// the shared answers and the security schemes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hearth",
        version = env!("CARGO_PKG_VERSION"),
        description = "The Hearth sandbox API. Paths are absolute: the API lives under \
            `/api/v1`; `/healthz` and `/openapi.json` are at the root (and under `/api/v1` \
            too). Every other route wants an API key.",
    ),
    security(("bearerAuth" = []), ("apiKeyHeader" = [])),
    tags(
        (name = SBX, description = "Sandbox lifecycle."),
        (name = NET, description = "A sandbox's egress policy. Whatever it says, a sandbox \
            never reaches the host, other sandboxes, private, link-local or multicast addresses."),
        (name = EXEC, description = "Run a command and wait for it."),
        (name = PROC, description = "Background processes."),
        (name = TERM, description = "Interactive terminals over WebSocket."),
        (name = FILES, description = "The guest file system. Paths are absolute guest paths."),
        (name = ENV, description = "Sandbox environment variables."),
        (name = SNAP, description = "Snapshots of a sandbox's memory and disk; restore and fork."),
        (name = PREVIEW, description = "Sandbox ports served by the preview proxy, and their \
            share tokens."),
        (name = TPL, description = "Templates sandboxes start from: built-in ones, and ones \
            built from a BuildSpec."),
        (name = EVENTS, description = "Lifecycle and activity events."),
        (name = USAGE, description = "Metered usage."),
        (name = KEYS, description = "API keys."),
        (name = QUOTAS, description = "Per-tenant limits and their use; admins set them."),
        (name = NODES, description = "The `hearth serve` processes sharing the store, their \
            capacity, load and heartbeats; draining (admin keys)."),
        (name = DEPLOY, description = "Sandboxes published as long-lived services: versions \
            (snapshots), runtime instances, health-checked promotion and rollback."),
        (name = AUDIT, description = "Every mutating action and denied attempt of the tenant: \
            who, what, on which resource, when, from where, and how it ended."),
        (name = TOKENS, description = "Delegates of a key with fewer scopes, for at most a \
            day, on fewer sandboxes: for a browser or an end user."),
        (name = SECRETS, description = "The secrets vault: values sealed at rest and never \
            answered, exposed to a sandbox's commands as env variables (bound, or named per \
            call) and masked in their output."),
        (name = SYSTEM, description = "Health, this document and metrics."),
    ),
    components(
        schemas(crate::error::Envelope<'static>, crate::model::BuildStep),
        responses(ErrorAnswer, Unauthorized, NotFound, ValidationError),
    ),
    modifiers(&SecuritySchemes),
)]
struct Base;

/// The document's root, before any operation is added.
pub fn base() -> utoipa::openapi::OpenApi {
    let mut doc = Base::openapi();
    // Left empty on purpose: the crate's authors and license describe the
    // code, not the API.
    doc.info.license = None;
    doc.info.contact = None;
    doc
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `Authorization: Bearer <key>`."))
                    .build(),
            ),
        );
        c.add_security_scheme(
            "apiKeyHeader",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "The same API key in `X-API-Key`.",
            ))),
        );
    }
}

// ---------------------------------------------------------------- aliases

/// `routes!(handler)` served at `path` as well: one handler, routed and
/// documented at both paths, the second with its own summary (the legacy
/// `files/stat` beside `fs/stat`).
pub fn also_at(
    (schemas, paths, router): UtoipaMethodRouter<AppState>,
    path: &str,
    summary: &str,
) -> UtoipaMethodRouter<AppState> {
    let mut out = utoipa::openapi::path::Paths::new();
    for (_, mut item) in paths.paths {
        for op in operations_mut(&mut item) {
            op.summary = Some(summary.to_string());
        }
        out.paths.insert(path.to_string(), item);
    }
    (schemas, out, router)
}

/// `routes!(handler)` of a handler that serves several methods, with its
/// own summary for `method`.
pub fn summary_of(
    (schemas, mut paths, router): UtoipaMethodRouter<AppState>,
    method: HttpMethod,
    summary: &str,
) -> UtoipaMethodRouter<AppState> {
    for item in paths.paths.values_mut() {
        let op = match method {
            HttpMethod::Get => item.get.as_mut(),
            HttpMethod::Put => item.put.as_mut(),
            HttpMethod::Post => item.post.as_mut(),
            HttpMethod::Delete => item.delete.as_mut(),
            HttpMethod::Patch => item.patch.as_mut(),
            _ => None,
        };
        op.expect("summary_of: the handler serves that method")
            .summary = Some(summary.to_string());
    }
    (schemas, paths, router)
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

// ---------------------------------------------------------------- document

/// The document, as JSON (what `openapi.json` holds).
pub fn document() -> Value {
    finish(super::document())
}

/// What the layers decide for every route alike, and what serde cannot
/// say about a body:
/// - a `{*wildcard}` segment is written `{wildcard}`, as OpenAPI has it;
/// - operation ids are `method_path` (`post_sandboxes_id_fs_write`),
///   unique by construction;
/// - routes under `/api/v1` sit behind `authenticate` (401, and the
///   document's API key schemes); root routes need no key (`security: []`);
/// - POST, PATCH and DELETE under `/api/v1` sit behind the idempotency
///   layer (`Idempotency-Key`);
/// - every handler answers failures with the error envelope (`4XX`,
///   `5XX`);
/// - an empty JSON body reads as `{}` (`ApiJson`), so a body is required
///   only when its schema requires a field;
/// - `default: null` (serde's default of an `Option`) says nothing and is
///   dropped;
/// - [`refine`]s.
pub fn finish(doc: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(doc).expect("the OpenAPI document serializes");
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("component schemas");
    for schema in schemas.values_mut() {
        drop_null_defaults(schema);
    }
    refine(schemas);
    let schemas = schemas.clone();
    let paths = doc["paths"].as_object_mut().expect("paths");
    let renamed: Map<String, Value> = std::mem::take(paths)
        .into_iter()
        .map(|(path, item)| (unwildcard(&path), item))
        .collect();
    *paths = renamed;
    for (path, item) in paths.iter_mut() {
        for (method, op) in item.as_object_mut().expect("path item") {
            finish_operation(path, method, op, &schemas);
        }
    }
    doc
}

fn unwildcard(path: &str) -> String {
    path.split('/')
        .map(|seg| seg.replace("{*", "{"))
        .collect::<Vec<_>>()
        .join("/")
}

fn finish_operation(path: &str, method: &str, op: &mut Value, schemas: &Map<String, Value>) {
    op["operationId"] = Value::String(operation_id(method, path));
    let authed = path.starts_with("/api/v1/");
    let answers = op["responses"].as_object_mut().expect("responses");
    if authed {
        answers.insert(
            "401".into(),
            json!({ "$ref": "#/components/responses/Unauthorized" }),
        );
    }
    for range in ["4XX", "5XX"] {
        answers.insert(
            range.into(),
            json!({ "$ref": "#/components/responses/Error" }),
        );
    }
    if authed && matches!(method, "post" | "patch" | "delete") {
        let params = op
            .as_object_mut()
            .expect("operation")
            .entry("parameters")
            .or_insert_with(|| json!([]));
        params.as_array_mut().expect("parameters").push(json!({
            "name": "Idempotency-Key",
            "in": "header",
            "required": false,
            "description": "The same key from the same tenant within 24 h replays the first \
                response; with a different body it is 409 `idempotency_key_reused`.",
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": crate::core::keys::idempotency::MAX_KEY_LEN,
            },
        }));
    }
    if !authed {
        op["security"] = json!([]);
    }
    if let Some(body) = op.get_mut("requestBody") {
        if let Some(json_body) = body["content"].get("application/json") {
            let schema = json_body["schema"]["$ref"]
                .as_str()
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
                .and_then(|name| schemas.get(name));
            let requires_a_field = schema.is_some_and(|s| {
                s["required"].as_array().is_some_and(|r| !r.is_empty()) || s.get("anyOf").is_some()
            });
            body["required"] = Value::Bool(requires_a_field);
        }
    }
}

/// `post_sandboxes_id_fs_write` for `POST /api/v1/sandboxes/{id}/fs/write`.
pub fn operation_id(method: &str, path: &str) -> String {
    let rest = path.strip_prefix("/api/v1").unwrap_or(path);
    let mut id = method.to_ascii_lowercase();
    for seg in rest.split('/').filter(|s| !s.is_empty()) {
        id.push('_');
        id.extend(seg.chars().filter_map(|c| match c {
            '{' | '}' | '*' => None,
            '-' | '.' => Some('_'),
            c => Some(c),
        }));
    }
    id
}

fn drop_null_defaults(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if o.get("default") == Some(&Value::Null) {
                o.remove("default");
            }
            o.values_mut().for_each(drop_null_defaults);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_null_defaults),
        _ => {}
    }
}

/// Rules across fields, which serde states in code rather than in types:
/// one of several fields is required, two may not come together. Each
/// names its type, so renaming the type breaks the build, and its fields,
/// which the document test checks exist.
fn refine(schemas: &mut Map<String, Value>) {
    use super::{deployments, files, processes};
    let one_of = |alternatives: &[Value], exclusive: &[&str]| {
        let mut rule = json!({ "anyOf": alternatives });
        if !exclusive.is_empty() {
            rule["not"] = json!({ "required": exclusive });
        }
        rule
    };
    let rules = [
        (
            <deployments::DeployBody as ToSchema>::name(),
            one_of(
                &[
                    json!({ "required": ["name"] }),
                    json!({ "required": ["deployment_id"] }),
                ],
                &[],
            ),
        ),
        (
            <files::WriteBody as ToSchema>::name(),
            one_of(
                &[
                    json!({ "required": ["content"] }),
                    json!({ "required": ["content_base64"] }),
                ],
                &["content", "content_base64"],
            ),
        ),
        (
            <processes::StdinBody as ToSchema>::name(),
            one_of(
                &[
                    json!({ "required": ["data"] }),
                    json!({ "required": ["data_base64"] }),
                    json!({ "required": ["eof"], "properties": { "eof": { "const": true } } }),
                ],
                &["data", "data_base64"],
            ),
        ),
    ];
    for (name, rule) in rules {
        let schema = schemas
            .get_mut(name.as_ref())
            .unwrap_or_else(|| panic!("refine: no schema {name}"));
        for (k, v) in rule.as_object().expect("rule") {
            schema[k] = v.clone();
        }
    }
    // serde reads an externally tagged enum from an object of exactly one
    // key: `{"run": ..., "x": 1}` is not a step.
    let step = <crate::model::BuildStep as ToSchema>::name();
    let branches = schemas
        .get_mut(step.as_ref())
        .and_then(|s| s["oneOf"].as_array_mut())
        .unwrap_or_else(|| panic!("refine: {step} is not a oneOf"));
    for branch in branches {
        branch["additionalProperties"] = Value::Bool(false);
    }
}
