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

// ---------------------------------------------------------------- errors

/// An answer carrying the error envelope (`#/components/schemas/Error`)
/// and the `X-Request-Id` header.
fn error_answer(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .header(
            "X-Request-Id",
            HeaderBuilder::new()
                .schema(String::schema())
                .description(Some("The request's id, also in the error body."))
                .build(),
        )
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build(),
        )
        .build()
        .into()
}

macro_rules! error_answers {
    ($($name:ident => $description:literal;)*) => {$(
        #[doc = $description]
        #[derive(Debug)]
        pub struct $name;

        impl<'s> ToResponse<'s> for $name {
            fn response() -> (&'s str, RefOr<Response>) {
                (stringify!($name), error_answer($description))
            }
        }
    )*};
}

error_answers! {
    Unauthorized => "Missing or invalid API key (`unauthorized`)";
    NotFound => "Not found (`not_found`, `sandbox_not_found`, `file_not_found`, ...)";
    ValidationError => "A field is invalid (`validation_error`; `details` names each field)";
}

/// The catch-all answer, named `Error` in the document.
#[derive(Debug)]
pub struct ErrorAnswer;

impl<'s> ToResponse<'s> for ErrorAnswer {
    fn response() -> (&'s str, RefOr<Response>) {
        ("Error", error_answer("An error; `code` says which"))
    }
}

/// `404` with the error envelope: the route looks something up by id.
#[derive(Debug)]
pub struct E404;

impl IntoResponses for E404 {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [("404".into(), Ref::from_response_name("NotFound").into())].into()
    }
}

/// `422` with the error envelope: the route validates its input.
#[derive(Debug)]
pub struct E422;

impl IntoResponses for E422 {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [(
            "422".into(),
            Ref::from_response_name("ValidationError").into(),
        )]
        .into()
    }
}

/// `409` with the error envelope: the route's target is in a state that
/// refuses it (the route has no success answer today).
#[derive(Debug)]
pub struct E409;

impl IntoResponses for E409 {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [("409".into(), Ref::from_response_name("Error").into())].into()
    }
}

/// `404` and `422`: the usual pair of a route on one sandbox with input.
#[derive(Debug)]
pub struct E404And422;

impl IntoResponses for E404And422 {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut r = E404::responses();
        r.extend(E422::responses());
        r
    }
}

// ---------------------------------------------------------------- answers

/// `{"data": {...}}`: one object.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct Data {
    #[schema(value_type = Object)]
    data: Value,
}

/// `{"data": [...]}`: a list, not paginated.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct DataList {
    #[schema(value_type = Vec<Object>)]
    data: Vec<Value>,
}

/// `{"data": [...], "page": {...}}`: one page of a list.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct DataPage {
    #[schema(value_type = Vec<Object>)]
    data: Vec<Value>,
    page: PageInfo,
}

/// Where a page lies in its list.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct PageInfo {
    #[schema(minimum = 1)]
    page: u32,
    #[schema(minimum = 1, maximum = 100)]
    page_size: u32,
    total: u64,
}

/// `{"data": Sandbox}`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct SandboxData {
    data: super::sandboxes::SandboxView,
}

/// A page of sandboxes.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct SandboxPage {
    data: Vec<super::sandboxes::SandboxView>,
    page: PageInfo,
}

/// `{"data": NetworkPolicy}`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct NetworkPolicyData {
    data: super::network::PolicyView,
}

/// Server-sent events (API.md): frames of `event: <type>`, `id: <monotonic
/// id>` and `data: <JSON object carrying "type">`; a `: heartbeat` comment
/// every 15 s.
#[derive(Debug)]
pub struct EventStream;

impl PartialSchema for EventStream {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "Frames of `event: <type>`, `id: <monotonic id>` and `data: <JSON object \
                 carrying \"type\">`; a `: heartbeat` comment every 15 s.",
            ))
            .into()
    }
}

impl ToSchema for EventStream {
    fn name() -> Cow<'static, str> {
        "EventStream".into()
    }
}

/// A body of raw bytes, streamed.
#[derive(Debug)]
pub struct RawBytes;

impl PartialSchema for RawBytes {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/octet-stream")
            .into()
    }
}

impl ToSchema for RawBytes {
    fn name() -> Cow<'static, str> {
        "RawBytes".into()
    }
}

/// A shell command (`templates::command_ok`): not blank, without NUL, at
/// most 64 KiB.
#[derive(Debug)]
pub struct ShellCommand;

impl PartialSchema for ShellCommand {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(65536))
            .pattern(Some(NOT_BLANK))
            .examples([json!("pip install -r requirements.txt")])
            .into()
    }
}

impl ToSchema for ShellCommand {
    fn name() -> Cow<'static, str> {
        "ShellCommand".into()
    }
}

/// Not blank, without NUL.
const NOT_BLANK: &str = r"^[^\u0000]*[^\s\u0000][^\u0000]*$";

/// The `size` shorthand of a sandbox: `cpu_count`, `memory_mb` and
/// `disk_size_mb` at once.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum SandboxSize {
    Xs,
    S,
    Sm,
    Small,
    M,
    Md,
    Medium,
    L,
    Lg,
    Large,
    Xl,
}

/// The body of `POST /sandbox-templates/{tid}/builds`: `SpecOnly` as
/// `validate` takes it, except that a build ignores `name` (so it is not
/// checked there). Described apart so each route's schema says what that
/// route checks; `tests/openapi_bounds.rs` holds it to the handler.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[schema(
    description = "An empty body builds the latest spec again. Unknown fields are refused (422)."
)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RebuildBody {
    /// Ignored.
    #[serde(default)]
    name: Option<String>,
    /// The next version's spec; absent: the latest build's spec.
    #[serde(default)]
    build_spec: Option<super::templates::BuildSpecBody>,
}

// ---------------------------------------------------------------- parameters

/// Path and header parameters shared by many routes. Never built: they
/// exist for their `IntoParams`.
#[allow(dead_code)]
mod params {
    use utoipa::IntoParams;

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct SandboxId {
        /// Sandbox id (`sbx_...`).
        pub id: String,
    }

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct SandboxName {
        /// Sandbox name.
        pub name: String,
    }

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct ProcessId {
        /// Process id (`123` or `proc_123`).
        pub pid: String,
    }

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct TerminalId {
        /// Terminal id.
        pub tid: String,
    }

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct PreviewId {
        /// Preview id (`prv_...`).
        pub prv: String,
    }

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct SnapshotId {
        /// Snapshot id (`snap_...`).
        pub sid: String,
    }

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct TemplateId {
        /// Template id or name (`default`, `minimal`, `tpl_...`).
        pub tid: String,
    }

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct BuildId {
        /// Template build id (`bld_...`).
        pub bid: String,
    }

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct ApiKeyId {
        /// API key id.
        pub id: String,
    }

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct GuestPath {
        /// Guest path without its leading `/`; may span several segments.
        pub path: String,
    }

    #[derive(Debug, IntoParams)]
    #[into_params(parameter_in = Header)]
    pub struct LastEventId {
        /// Resume the stream after this event id.
        #[param(rename = "Last-Event-ID", value_type = String, required = false)]
        pub last_event_id: Option<String>,
    }
}

pub use params::*;

// ---------------------------------------------------------------- field schemas

/// An integer in `LO..=HI`, for bounds a handler checks against a named
/// constant (`#[schema(schema_with = int_range::<1, { MAX }>)]`), so the
/// document follows the constant.
pub fn int_range<const LO: i64, const HI: i64>() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(LO as f64))
        .maximum(Some(HI as f64))
}

/// [`int_range`], or `null` (the field's default).
pub fn int_range_or_null<const LO: i64, const HI: i64>() -> ObjectBuilder {
    int_range::<LO, HI>().schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
}

/// A string of `MIN..=MAX` characters, or `null`, for lengths a handler
/// checks against a named constant.
pub fn string_or_null<const MIN: usize, const MAX: usize>() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .min_length(Some(MIN))
        .max_length(Some(MAX))
}

/// A field that may not be changed: only `null` (as if absent) passes.
pub fn immutable() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Null)
        .description(Some("Immutable: any value but `null` is 422."))
}

/// A string without NUL.
const NO_NUL: &str = r"^[^\u0000]*$";

/// An env map of shell-safe names (`validate::check_env`): letters,
/// digits and `_`, not starting with a digit, at most 256; values without
/// NUL.
pub fn shell_env() -> ObjectBuilder {
    env_map(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[A-Za-z_][A-Za-z0-9_]*$"))
            .max_length(Some(256)),
        true,
    )
}

/// An env map for a command: non-empty names without `=` or NUL, values
/// without NUL.
pub fn command_env() -> ObjectBuilder {
    env_map(command_env_name(), true)
}

/// [`command_env`] for `exec`, which leaves values unchecked.
pub fn exec_env() -> ObjectBuilder {
    env_map(command_env_name(), false)
}

fn command_env_name() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(r"^[^=\u0000]+$"))
}

fn env_map(names: ObjectBuilder, values_without_nul: bool) -> ObjectBuilder {
    let value = ObjectBuilder::new().schema_type(Type::String);
    let value = if values_without_nul {
        value.pattern(Some(NO_NUL))
    } else {
        value
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(names))
        .additional_properties(Some(value))
}

/// [`shell_env`], or `null`.
pub fn shell_env_or_null() -> ObjectBuilder {
    shell_env().schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
}

/// Sandbox tags (`sandboxes::check_tags`): at most 50, each 1-64 bytes
/// without commas or control characters; `null` for none.
pub fn tags() -> ArrayBuilder {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(64))
                .pattern(Some(r"^[^,\u0000-\u001f\u007f-\u009f]*$"))
                .examples([json!("web")]),
        )
        .max_items(Some(50))
        .description(Some(
            "At most 50 tags of 1-64 bytes, without commas or control characters.",
        ))
}

/// Permission bits: a number up to `MAX` (`420` for `0644`) or an octal
/// string (`"0644"`, `"755"`, `"0o755"`) up to four digits; `null` for
/// the default.
pub fn file_mode<const MAX: i64>() -> OneOfBuilder {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(int_range::<0, MAX>())
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^\s*(0o)?0*[0-7]{1,4}\s*$"))
                .examples([json!("0644")]),
        )
        .description(Some(
            "Permission bits: a number (`420`) or an octal string (`\"0644\"`).",
        ))
}

/// A signal: a number 1-31, as a number or a string, or a name with or
/// without `SIG` in any case (`"SIGTERM"`, `"term"`).
pub fn signal() -> OneOfBuilder {
    let names: Vec<Value> = super::processes::SIGNALS
        .iter()
        .map(|s| Value::String(format!("SIG{s}")))
        .collect();
    OneOfBuilder::new()
        .item(int_range::<1, 31>())
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(names))
                .description(Some(
                    "Also without `SIG`, in any case, or the number as a string.",
                )),
        )
        .description(Some("A signal name such as `SIGTERM`, or its number 1-31."))
}

/// The array of BuildSpec steps: at most `MAX`, each a `BuildStep`.
pub fn build_steps<const MAX: usize>() -> ArrayBuilder {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(Ref::from_schema_name("BuildStep"))
        .max_items(Some(MAX))
}

/// The array of Debian packages of a BuildSpec: at most `MAX`.
pub fn build_packages<const MAX: usize>() -> ArrayBuilder {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^[a-z0-9][A-Za-z0-9+.:=~-]*$"))
                .max_length(Some(128))
                .examples([json!("curl")]),
        )
        .max_items(Some(MAX))
        .description(Some("Debian package names, optionally `=version`."))
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
    use super::{files, processes};
    let one_of = |alternatives: &[Value], exclusive: &[&str]| {
        let mut rule = json!({ "anyOf": alternatives });
        if !exclusive.is_empty() {
            rule["not"] = json!({ "required": exclusive });
        }
        rule
    };
    let rules = [
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

    fn rendered() -> String {
        let mut s = serde_json::to_string_pretty(&document()).expect("document serializes");
        s.push('\n');
        s
    }

    /// Fails when `openapi.json` is not what [`document`] builds;
    /// `UPDATE_OPENAPI=1 cargo test -p hearth-server --lib openapi`
    /// rewrites it.
    #[test]
    fn checked_in_openapi_json_matches_document() {
        let current = rendered();
        let stored = std::fs::read_to_string(FILE).unwrap_or_default();
        if current == stored {
            return;
        }
        if std::env::var("UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
            std::fs::write(FILE, &current).expect("write openapi.json");
            return;
        }
        panic!(
            "crates/server/openapi.json differs from routes::openapi::document(): \
             rerun with UPDATE_OPENAPI=1 cargo test -p hearth-server --lib openapi"
        );
    }

    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                ops.push((method.clone(), path.clone(), op.clone()));
            }
        }
        ops
    }

    #[test]
    fn operations_are_well_formed() {
        let doc = document();
        let tags: BTreeSet<&str> = doc["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .map(|t| t["name"].as_str().expect("tag name"))
            .collect();
        let mut used = BTreeSet::new();
        let mut ids = BTreeSet::new();
        let ops = operations(&doc);
        assert!(ops.len() > 70, "only {} operations", ops.len());
        for (method, path, op) in &ops {
            let what = format!("{method} {path}");
            assert!(
                matches!(method.as_str(), "get" | "put" | "post" | "patch" | "delete"),
                "{what}: method"
            );
            assert!(
                ids.insert(op["operationId"].to_string()),
                "{what}: operationId clash"
            );
            let op_tags = op["tags"].as_array().expect("tags");
            assert_eq!(op_tags.len(), 1, "{what}: one tag");
            let tag = op_tags[0].as_str().expect("tag");
            assert!(tags.contains(tag), "{what}: tag {tag} is not declared");
            used.insert(tag.to_string());
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{what}: no summary"
            );
            // Every `{name}` segment is a described path parameter, and
            // every path parameter is a segment.
            let segments: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let in_path: BTreeSet<String> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert!(
                        p["description"].as_str().is_some_and(|d| !d.is_empty()),
                        "{what}: describe path parameter {}",
                        p["name"]
                    );
                    p["name"].as_str().expect("name").to_string()
                })
                .collect();
            let segments: BTreeSet<String> = segments.into_iter().map(String::from).collect();
            assert_eq!(segments, in_path, "{what}: path parameters");
            let mut names = BTreeSet::new();
            for p in &params {
                assert!(
                    names.insert((p["in"].to_string(), p["name"].to_string())),
                    "{what}: parameter {} twice",
                    p["name"]
                );
            }
            let answers = op["responses"].as_object().expect("responses");
            // Changing env is refused whatever the state (409): it has no
            // success answer to document yet.
            assert!(
                answers
                    .keys()
                    .any(|k| k.starts_with('1') || k.starts_with('2') || k == "409"),
                "{what}: no success answer"
            );
            for code in ["4XX", "5XX"] {
                assert_eq!(
                    answers[code]["$ref"], "#/components/responses/Error",
                    "{what}"
                );
            }
            let authed = path.starts_with("/api/v1/");
            assert_eq!(answers.contains_key("401"), authed, "{what}: 401");
            assert_eq!(
                op.get("security") == Some(&json!([])),
                !authed,
                "{what}: security"
            );
            if !segments.is_empty() {
                assert!(answers.contains_key("404"), "{what}: has ids but no 404");
            }
            let has_input =
                op.get("requestBody").is_some() || params.iter().any(|p| p["in"] == "query");
            if has_input
                && op["requestBody"]["content"]
                    .get("application/json")
                    .is_some()
            {
                assert!(answers.contains_key("422"), "{what}: validates but no 422");
            }
        }
        for t in &tags {
            assert!(used.contains(*t), "tag {t} is unused");
        }
    }

    #[test]
    fn document_has_the_shared_parts() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "Hearth");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert!(doc.get("servers").is_none());
        assert_eq!(
            doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
            "bearer"
        );
        let err = &doc["components"]["schemas"]["Error"];
        assert_eq!(err["required"], json!(["error"]));
        let detail = &doc["components"]["schemas"]["ErrorDetail"]["properties"];
        for field in ["code", "message", "request_id", "details"] {
            assert!(detail.get(field).is_some(), "error envelope lacks {field}");
        }
        for answer in ["Error", "Unauthorized", "NotFound", "ValidationError"] {
            let a = &doc["components"]["responses"][answer];
            assert_eq!(
                a["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error",
                "{answer}"
            );
            assert!(a["headers"].get("X-Request-Id").is_some(), "{answer}");
        }
        // Every reference resolves.
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(o) => {
                    if let Some(Value::String(r)) = o.get("$ref") {
                        out.push(r.clone());
                    }
                    o.values().for_each(|v| refs(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        for r in all {
            let pointer = r.strip_prefix('#').expect("local reference");
            assert!(doc.pointer(pointer).is_some(), "dangling {r}");
        }
    }

    /// The fields API.md lists for the sandbox object, each always sent.
    #[test]
    fn sandbox_schema_has_the_api_md_fields() {
        let doc = document();
        let sandbox = &doc["components"]["schemas"]["Sandbox"];
        let props = sandbox["properties"]
            .as_object()
            .expect("Sandbox properties");
        let required: BTreeSet<&str> = sandbox["required"]
            .as_array()
            .expect("required")
            .iter()
            .map(|v| v.as_str().expect("name"))
            .collect();
        for field in [
            "id",
            "state",
            "status",
            "template_id",
            "template_version",
            "cpu_count",
            "memory_mb",
            "disk_size_mb",
            "timeout_sec",
            "idle_timeout_sec",
            "always_on",
            "persistent",
            "env_keys",
            "metadata",
            "tags",
            "name",
            "external_workspace_id",
            "external_user_id",
            "external_project_id",
            "boot_ms",
            "boot_path",
            "created_at",
            "started_at",
            "paused_at",
            "destroyed_at",
            "timeout_remaining_ms",
        ] {
            assert!(props.contains_key(field), "Sandbox lacks {field}");
            assert!(required.contains(field), "Sandbox.{field} is always sent");
        }
    }

    /// The fields a cross-field rule names exist in its schema.
    #[test]
    fn refinements_name_real_fields() {
        let doc = document();
        for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
            let props = schema["properties"].as_object();
            let mut named: Vec<&str> = Vec::new();
            for alt in schema["anyOf"].as_array().into_iter().flatten() {
                named.extend(
                    alt["required"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str),
                );
            }
            named.extend(
                schema["not"]["required"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str),
            );
            for field in named {
                assert!(
                    props.is_some_and(|p| p.contains_key(field)),
                    "{name}: a rule names {field}, which it does not have"
                );
            }
        }
    }
}
