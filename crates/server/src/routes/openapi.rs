//! The OpenAPI 3.1 document of the REST API, built from one table.
//!
//! [`ROUTES`] holds one row per route the server answers: method, full
//! path template, summary, tag, and the little the document says beyond
//! that (query parameters, body, kind of answer). [`document`] builds the
//! document from it. `crates/server/openapi.json` is that document checked
//! in; the server serves the file as is (`system::OPENAPI`), so an answer
//! of `/openapi.json` equals the file.
//!
//! Two tests keep table, file and router in step:
//! - the unit test below fails when the file differs from [`document`];
//!   `UPDATE_OPENAPI=1 cargo test -p hearth-server --lib openapi` rewrites
//!   the file instead;
//! - `tests/openapi.rs` sends one request per documented route and fails
//!   when the router answers with its fallback (404 "route not found") or
//!   405, and when the served sandbox object and the `Sandbox` schema name
//!   different fields.
//!
//! Adding a route: add its handler, add its row here, rerun with
//! `UPDATE_OPENAPI=1`.
//!
//! Paths are full paths (`/api/v1/...`, and `/healthz`, `/openapi.json` at
//! the root), so the document has no `servers` entry: it applies to the
//! server's origin.

use serde_json::{json, Map, Value};

/// What a route reads from the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Nothing.
    None,
    /// A JSON object; an empty body reads as `{}`.
    Json,
    /// Raw bytes, streamed.
    Bytes,
}

/// What a route answers on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `{"data": {...}}`.
    Data,
    /// `{"data": [...]}`, not paginated.
    List,
    /// `{"data": [...], "page": {...}}`.
    Page,
    /// `{"data": Sandbox}`.
    Sandbox,
    /// A page of sandboxes.
    Sandboxes,
    /// `text/event-stream`.
    Sse,
    /// `text/event-stream`, or `{"data": [...]}` (events so far) when the
    /// `Accept` header asks only for `application/json`.
    Events,
    /// `application/octet-stream` bytes.
    Bytes,
    /// Prometheus text exposition.
    Metrics,
    /// A WebSocket upgrade.
    WebSocket,
    /// A JSON object without the `data` envelope.
    Bare,
}

/// One query parameter of a route.
#[derive(Debug, Clone, Copy)]
pub struct QueryDoc {
    pub name: &'static str,
    pub description: &'static str,
    pub required: bool,
}

/// One route of the API.
#[derive(Debug, Clone, Copy)]
pub struct RouteDoc {
    /// Upper case: `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: &'static str,
    /// The full path template as routed, with `{param}` segments; `{path}`
    /// may span several segments.
    pub path: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
    pub query: &'static [QueryDoc],
    pub body: Body,
    pub reply: Reply,
    /// The success status.
    pub status: u16,
    /// Whether the route wants an API key.
    pub auth: bool,
}

const fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    tag: &'static str,
) -> RouteDoc {
    RouteDoc {
        method,
        path,
        summary,
        tag,
        query: &[],
        body: Body::None,
        reply: Reply::Data,
        status: 200,
        auth: true,
    }
}

const fn get(path: &'static str, summary: &'static str, tag: &'static str) -> RouteDoc {
    route("GET", path, summary, tag)
}

const fn post(path: &'static str, summary: &'static str, tag: &'static str) -> RouteDoc {
    route("POST", path, summary, tag).json()
}

const fn put(path: &'static str, summary: &'static str, tag: &'static str) -> RouteDoc {
    route("PUT", path, summary, tag)
}

const fn patch(path: &'static str, summary: &'static str, tag: &'static str) -> RouteDoc {
    route("PATCH", path, summary, tag).json()
}

const fn delete(path: &'static str, summary: &'static str, tag: &'static str) -> RouteDoc {
    route("DELETE", path, summary, tag)
}

impl RouteDoc {
    const fn query(self, query: &'static [QueryDoc]) -> RouteDoc {
        RouteDoc { query, ..self }
    }
    const fn json(self) -> RouteDoc {
        RouteDoc {
            body: Body::Json,
            ..self
        }
    }
    const fn raw_body(self) -> RouteDoc {
        RouteDoc {
            body: Body::Bytes,
            ..self
        }
    }
    const fn reply(self, reply: Reply) -> RouteDoc {
        RouteDoc { reply, ..self }
    }
    const fn status(self, status: u16) -> RouteDoc {
        RouteDoc { status, ..self }
    }
    const fn public(self) -> RouteDoc {
        RouteDoc {
            auth: false,
            ..self
        }
    }
}

const fn opt(name: &'static str, description: &'static str) -> QueryDoc {
    QueryDoc {
        name,
        description,
        required: false,
    }
}

const fn req(name: &'static str, description: &'static str) -> QueryDoc {
    QueryDoc {
        name,
        description,
        required: true,
    }
}

const PAGE: QueryDoc = opt("page", "Page number, from 1 (default 1).");
const PAGE_SIZE: QueryDoc = opt("page_size", "Items per page, 1-100 (default 20).");
const GUEST_PATH: QueryDoc = req("path", "Absolute guest path.");
const USAGE_PERIOD: [QueryDoc; 2] = [
    opt("period_start", "Start of the period (RFC 3339)."),
    opt("period_end", "End of the period (RFC 3339; default now)."),
];
const EVENT_QUERY: [QueryDoc; 2] = [
    opt(
        "types",
        "Comma-separated event type globs, such as `sandbox.*`.",
    ),
    opt(
        "after",
        "Send only events after this id (`Last-Event-ID` wins).",
    ),
];
const LIST_QUERY: [QueryDoc; 2] = [
    opt("path", "Absolute guest directory (default `/`)."),
    opt("depth", "Levels to list, 1-10 (default 1)."),
];

const SBX: &str = "Sandboxes";
const NET: &str = "Network";
const EXEC: &str = "Exec";
const PROC: &str = "Processes";
const TERM: &str = "Terminals";
const FILES: &str = "Files";
const ENV: &str = "Env";
const EVENTS: &str = "Events";
const USAGE: &str = "Usage";
const KEYS: &str = "API keys";
const SYSTEM: &str = "System";
const SNAP: &str = "Snapshots";
const TPL: &str = "Templates";
const PREVIEW: &str = "Previews";

/// The tags in document order, with their descriptions.
pub const TAGS: &[(&str, &str)] = &[
    (SBX, "Sandbox lifecycle."),
    (
        NET,
        "A sandbox's egress policy. Whatever it says, a sandbox never reaches the host, other sandboxes, private, link-local or multicast addresses.",
    ),
    (EXEC, "Run a command and wait for it."),
    (PROC, "Background processes."),
    (TERM, "Interactive terminals over WebSocket."),
    (
        FILES,
        "The guest file system. Paths are absolute guest paths.",
    ),
    (ENV, "Sandbox environment variables."),
    (
        SNAP,
        "Snapshots of a sandbox's memory and disk; restore and fork.",
    ),
    (
        PREVIEW,
        "Sandbox ports served by the preview proxy, and their share tokens.",
    ),
    (
        TPL,
        "Templates sandboxes start from: built-in ones, and ones built from a BuildSpec.",
    ),
    (EVENTS, "Lifecycle and activity events."),
    (USAGE, "Metered usage."),
    (KEYS, "API keys."),
    (SYSTEM, "Health, this document and metrics."),
];

/// Every route the server answers.
pub const ROUTES: &[RouteDoc] = &[
    // Sandboxes
    post("/api/v1/sandboxes", "Create a sandbox", SBX)
        .query(&[opt(
            "wait",
            "`false` answers 202 at once, in state `provisioning` (default: 201 once running).",
        )])
        .reply(Reply::Sandbox)
        .status(201),
    get("/api/v1/sandboxes", "List sandboxes", SBX)
        .query(&[
            opt("state", "Only sandboxes in this state."),
            opt("tags", "Comma-separated tags; all must match."),
            opt("external_workspace_id", "Only this external workspace."),
            opt("external_user_id", "Only this external user."),
            opt("external_project_id", "Only this external project."),
            opt("template_id", "Only this template."),
            PAGE,
            PAGE_SIZE,
        ])
        .reply(Reply::Sandboxes),
    get("/api/v1/sandboxes/{id}", "Get a sandbox", SBX).reply(Reply::Sandbox),
    get(
        "/api/v1/sandboxes/by-name/{name}",
        "Get a sandbox by name",
        SBX,
    )
    .reply(Reply::Sandbox),
    patch("/api/v1/sandboxes/{id}", "Update a sandbox", SBX).reply(Reply::Sandbox),
    delete(
        "/api/v1/sandboxes/{id}",
        "Destroy a sandbox (idempotent)",
        SBX,
    )
    .reply(Reply::Sandbox),
    post(
        "/api/v1/sandboxes/{id}/pause",
        "Pause a sandbox: snapshot to disk and stop the VM",
        SBX,
    )
    .reply(Reply::Sandbox),
    post(
        "/api/v1/sandboxes/{id}/resume",
        "Resume a paused sandbox",
        SBX,
    )
    .reply(Reply::Sandbox),
    post(
        "/api/v1/sandboxes/{id}/extend",
        "Reset the sandbox's deadline",
        SBX,
    )
    .reply(Reply::Sandbox),
    get(
        "/api/v1/sandboxes/{id}/readiness",
        "Whether the sandbox is ready",
        SBX,
    ),
    get(
        "/api/v1/sandboxes/{id}/usage",
        "Usage of one sandbox",
        USAGE,
    )
    .query(&USAGE_PERIOD),
    // Network
    get(
        "/api/v1/sandboxes/{id}/network-policy",
        "The sandbox's egress policy",
        NET,
    ),
    put(
        "/api/v1/sandboxes/{id}/network-policy",
        "Replace the egress policy (applies to a running VM at once)",
        NET,
    )
    .json(),
    delete(
        "/api/v1/sandboxes/{id}/network-policy",
        "Remove the egress policy (allow what the fixed rules leave)",
        NET,
    ),
    // Previews
    post(
        "/api/v1/sandboxes/{id}/previews",
        "Serve a sandbox port at a preview URL (public or private)",
        PREVIEW,
    )
    .status(201),
    get("/api/v1/sandboxes/{id}/previews", "List a sandbox's previews", PREVIEW).reply(Reply::List),
    get("/api/v1/sandboxes/{id}/previews/{prv}", "Get a preview", PREVIEW),
    delete("/api/v1/sandboxes/{id}/previews/{prv}", "Delete a preview", PREVIEW),
    post(
        "/api/v1/sandboxes/{id}/previews/{prv}/share",
        "Mint a share token (shown once) and its share URL",
        PREVIEW,
    )
    .status(201),
    delete(
        "/api/v1/sandboxes/{id}/previews/{prv}/share",
        "Revoke every share token of a preview",
        PREVIEW,
    ),
    post(
        "/api/v1/sandboxes/{id}/expose",
        "The preview URL of a port (a private preview is made when missing)",
        PREVIEW,
    ),
    post(
        "/api/v1/sandboxes/{id}/preview-token",
        "A token for one port's preview, or every preview of the sandbox",
        PREVIEW,
    )
    .status(201),
    // Snapshots
    post(
        "/api/v1/sandboxes/{id}/snapshots",
        "Snapshot a running sandbox (it keeps running)",
        SNAP,
    )
    .status(201),
    get("/api/v1/sandboxes/{id}/snapshots", "List a sandbox's snapshots", SNAP).reply(Reply::List),
    get("/api/v1/sandboxes/{id}/snapshots/{sid}", "Get a snapshot", SNAP),
    delete("/api/v1/sandboxes/{id}/snapshots/{sid}", "Delete a snapshot", SNAP),
    post(
        "/api/v1/sandboxes/{id}/restore/{sid}",
        "Roll the sandbox back to a snapshot (or, with as_new, make a new sandbox)",
        SNAP,
    )
    .reply(Reply::Sandbox),
    post(
        "/api/v1/sandboxes/{id}/fork",
        "A new sandbox from a snapshot of this one",
        SNAP,
    )
    .reply(Reply::Sandbox)
    .status(201),
    // Templates
    get("/api/v1/sandbox-templates", "List templates", TPL).reply(Reply::List),
    get("/api/v1/sandbox-templates/{tid}", "Get a template", TPL),
    post(
        "/api/v1/sandbox-templates",
        "Create a template from a BuildSpec and queue its first build",
        TPL,
    )
    .status(202),
    post(
        "/api/v1/sandbox-templates/validate",
        "Check a BuildSpec without building it",
        TPL,
    ),
    post(
        "/api/v1/sandbox-templates/{tid}/builds",
        "Build the next version of a template (body: optional build_spec)",
        TPL,
    )
    .status(202),
    get(
        "/api/v1/sandbox-template-builds/{bid}",
        "Get a template build",
        TPL,
    ),
    get(
        "/api/v1/sandbox-template-builds/{bid}/logs/stream",
        "Stream a build's log: `log` frames, then `done`",
        TPL,
    )
    .reply(Reply::Sse),
    // Exec
    post("/api/v1/sandboxes/{id}/exec", "Run a command", EXEC),
    post(
        "/api/v1/sandboxes/{id}/exec/stream",
        "Run a command, streaming its output",
        EXEC,
    )
    .reply(Reply::Sse),
    // Processes
    post(
        "/api/v1/sandboxes/{id}/processes",
        "Start a background process",
        PROC,
    )
    .status(201),
    get("/api/v1/sandboxes/{id}/processes", "List processes", PROC)
        .query(&[PAGE, PAGE_SIZE])
        .reply(Reply::Page),
    get(
        "/api/v1/sandboxes/{id}/processes/{pid}",
        "Get a process",
        PROC,
    ),
    delete(
        "/api/v1/sandboxes/{id}/processes/{pid}",
        "Kill a process (SIGTERM, then SIGKILL after 5 s)",
        PROC,
    ),
    post(
        "/api/v1/sandboxes/{id}/processes/{pid}/signal",
        "Send a signal to a process",
        PROC,
    ),
    post(
        "/api/v1/sandboxes/{id}/processes/{pid}/stdin",
        "Write to a process's stdin",
        PROC,
    ),
    get(
        "/api/v1/sandboxes/{id}/processes/{pid}/logs",
        "Buffered output of a process",
        PROC,
    )
    .query(&[opt(
        "tail",
        "Lines per stream (default 200; 0 = everything buffered).",
    )]),
    get(
        "/api/v1/sandboxes/{id}/processes/{pid}/stream",
        "Stream a process's output, buffered output first",
        PROC,
    )
    .query(&[opt(
        "from_seq",
        "First output sequence number to send (`Last-Event-ID` wins).",
    )])
    .reply(Reply::Sse),
    // Terminals
    post(
        "/api/v1/sandboxes/{id}/terminals",
        "Open a terminal",
        TERM,
    )
    .status(201),
    get(
        "/api/v1/sandboxes/{id}/terminals/{tid}/ws",
        "Attach to a terminal (WebSocket)",
        TERM,
    )
    .reply(Reply::WebSocket)
    .status(101),
    delete(
        "/api/v1/sandboxes/{id}/terminals/{tid}",
        "Close a terminal",
        TERM,
    ),
    // Files
    post("/api/v1/sandboxes/{id}/fs/write", "Write a file", FILES),
    post(
        "/api/v1/sandboxes/{id}/files",
        "Write a file (legacy; `content` is base64)",
        FILES,
    ),
    put(
        "/api/v1/sandboxes/{id}/fs/raw",
        "Upload a file as raw bytes",
        FILES,
    )
    .query(&[GUEST_PATH, opt("mode", "Octal permission bits.")])
    .raw_body(),
    get(
        "/api/v1/sandboxes/{id}/fs/download",
        "Download a file as raw bytes",
        FILES,
    )
    .query(&[GUEST_PATH])
    .reply(Reply::Bytes),
    get(
        "/api/v1/sandboxes/{id}/files/{path}",
        "Read a file as raw bytes (legacy)",
        FILES,
    )
    .reply(Reply::Bytes),
    get(
        "/api/v1/sandboxes/{id}/files/read",
        "Read a file as base64",
        FILES,
    )
    .query(&[GUEST_PATH]),
    get("/api/v1/sandboxes/{id}/files", "List a directory", FILES).query(&LIST_QUERY),
    get(
        "/api/v1/sandboxes/{id}/files/list",
        "List a directory",
        FILES,
    )
    .query(&LIST_QUERY),
    post("/api/v1/sandboxes/{id}/fs/stat", "Stat a path", FILES),
    post(
        "/api/v1/sandboxes/{id}/files/stat",
        "Stat a path (legacy)",
        FILES,
    ),
    get(
        "/api/v1/sandboxes/{id}/files/tree",
        "A directory tree",
        FILES,
    )
    .query(&[
        opt("path", "Absolute guest directory (default `/`)."),
        opt("depth", "Levels, 1-10 (default 3)."),
    ]),
    post(
        "/api/v1/sandboxes/{id}/files/write-many",
        "Write several files",
        FILES,
    ),
    post(
        "/api/v1/sandboxes/{id}/fs/mkdir",
        "Create a directory and its parents",
        FILES,
    ),
    post(
        "/api/v1/sandboxes/{id}/fs/remove",
        "Remove a file or directory",
        FILES,
    ),
    post(
        "/api/v1/sandboxes/{id}/fs/rename",
        "Rename a file or directory",
        FILES,
    ),
    get(
        "/api/v1/sandboxes/{id}/files/watch",
        "Watch a path for changes",
        FILES,
    )
    .query(&[GUEST_PATH, opt("recursive", "Watch subdirectories too.")])
    .reply(Reply::Sse),
    get(
        "/api/v1/sandboxes/{id}/exports/download",
        "Download one file raw, or several as tar.gz",
        FILES,
    )
    .query(&[
        opt("path", "One absolute guest path."),
        opt("paths[]", "Several absolute guest paths (repeat the parameter)."),
    ])
    .reply(Reply::Bytes),
    // Env
    get("/api/v1/sandboxes/{id}/env", "List env vars", ENV),
    put(
        "/api/v1/sandboxes/{id}/env",
        "Change env vars (409 while running)",
        ENV,
    )
    .json(),
    delete(
        "/api/v1/sandboxes/{id}/env",
        "Remove env vars (409 while running)",
        ENV,
    ),
    // Events
    get(
        "/api/v1/sandboxes/{id}/events",
        "Events of one sandbox",
        EVENTS,
    )
    .query(&EVENT_QUERY)
    .reply(Reply::Events),
    get("/api/v1/events/stream", "Events of the tenant", EVENTS)
        .query(&EVENT_QUERY)
        .reply(Reply::Events),
    get("/api/v1/events", "Events of the tenant", EVENTS)
        .query(&EVENT_QUERY)
        .reply(Reply::Events),
    // API keys
    get("/api/v1/api-keys", "List API keys", KEYS).reply(Reply::List),
    post(
        "/api/v1/api-keys",
        "Create an API key (the plain key is shown once)",
        KEYS,
    )
    .status(201),
    delete("/api/v1/api-keys/{id}", "Revoke an API key", KEYS),
    // Usage and system
    get("/api/v1/usage", "Usage of the tenant", USAGE).query(&[
        USAGE_PERIOD[0],
        USAGE_PERIOD[1],
        opt(
            "group_by",
            "sandbox_id, external_workspace_id, external_user_id, external_project_id or template_id.",
        ),
    ]),
    get("/api/v1/metrics", "Prometheus metrics", SYSTEM).reply(Reply::Metrics),
    get("/healthz", "Health and version", SYSTEM)
        .reply(Reply::Bare)
        .public(),
    get("/openapi.json", "This document", SYSTEM)
        .reply(Reply::Bare)
        .public(),
];

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let item = paths
            .entry(r.path)
            .or_insert_with(|| Value::Object(Map::new()));
        item[r.method.to_ascii_lowercase()] = operation(r);
    }
    let tags: Vec<Value> = TAGS
        .iter()
        .map(|(name, description)| json!({ "name": name, "description": description }))
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Hearth",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The Hearth sandbox API. Paths are absolute: the API lives \
                under `/api/v1`; `/healthz` and `/openapi.json` are at the root (and \
                under `/api/v1` too). Every other route wants an API key.",
        },
        "security": [{ "bearerAuth": [] }, { "apiKeyHeader": [] }],
        "tags": tags,
        "paths": paths,
        "components": components(),
    })
}

/// `{name}` segments of a path template, in order.
fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn path_param_description(path: &str, name: &str) -> &'static str {
    match name {
        "id" if path.starts_with("/api/v1/api-keys/") => "API key id.",
        "id" => "Sandbox id (`sbx_...`).",
        "name" => "Sandbox name.",
        "pid" => "Process id.",
        "prv" => "Preview id (`prv_...`).",
        "tid" if path.starts_with("/api/v1/sandbox-templates/") => {
            "Template id or name (`default`, `minimal`, `tpl_...`)."
        }
        "bid" => "Template build id (`bld_...`).",
        "tid" => "Terminal id.",
        "sid" => "Snapshot id (`snap_...`).",
        "path" => "Guest path without its leading `/`; may span several segments.",
        _ => "",
    }
}

fn query_schema(name: &str) -> Value {
    match name {
        "page" => json!({ "type": "integer", "minimum": 1 }),
        "page_size" => json!({ "type": "integer", "minimum": 1, "maximum": 100 }),
        "depth" => json!({ "type": "integer", "minimum": 1, "maximum": 10 }),
        "tail" | "from_seq" | "after" => json!({ "type": "integer", "minimum": 0 }),
        "wait" | "recursive" => json!({ "type": "boolean" }),
        "paths[]" => json!({ "type": "array", "items": { "type": "string" } }),
        _ => json!({ "type": "string" }),
    }
}

/// `post_sandboxes_id_fs_write` for `POST /api/v1/sandboxes/{id}/fs/write`.
fn operation_id(r: &RouteDoc) -> String {
    let rest = r.path.strip_prefix("/api/v1").unwrap_or(r.path);
    let mut id = r.method.to_ascii_lowercase();
    for seg in rest.split('/').filter(|s| !s.is_empty()) {
        id.push('_');
        id.extend(seg.chars().filter_map(|c| match c {
            '{' | '}' => None,
            '-' | '.' => Some('_'),
            c => Some(c),
        }));
    }
    id
}

fn operation(r: &RouteDoc) -> Value {
    let path_params = path_params(r.path);
    let mut params: Vec<Value> = path_params
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "description": path_param_description(r.path, name),
                "schema": { "type": "string" },
            })
        })
        .collect();
    params.extend(r.query.iter().map(|q| {
        json!({
            "name": q.name,
            "in": "query",
            "required": q.required,
            "description": q.description,
            "schema": query_schema(q.name),
        })
    }));
    if r.auth && matches!(r.method, "POST" | "PATCH" | "DELETE") {
        params.push(json!({ "$ref": "#/components/parameters/IdempotencyKey" }));
    }
    if r.method == "GET" && matches!(r.reply, Reply::Sse | Reply::Events) {
        params.push(json!({ "$ref": "#/components/parameters/LastEventId" }));
    }

    let mut op = json!({
        "operationId": operation_id(r),
        "summary": r.summary,
        "tags": [r.tag],
    });
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    match r.body {
        Body::None => {}
        Body::Json => {
            op["requestBody"] = json!({
                "required": false,
                "content": { "application/json": { "schema": { "type": "object" } } },
            });
        }
        Body::Bytes => {
            op["requestBody"] = json!({
                "required": true,
                "content": { "application/octet-stream": { "schema": bytes_schema() } },
            });
        }
    }

    let mut responses = Map::new();
    responses.insert(r.status.to_string(), success(r));
    if r.query.iter().any(|q| q.name == "wait") {
        responses.insert(
            "202".into(),
            json!({
                "description": "Accepted (`wait=false`): the sandbox is provisioning.",
                "content": { "application/json": { "schema": schema_ref("SandboxData") } },
            }),
        );
    }
    if r.auth {
        responses.insert("401".into(), response_ref("Unauthorized"));
    }
    if !path_params.is_empty() {
        responses.insert("404".into(), response_ref("NotFound"));
    }
    if r.body == Body::Json || !r.query.is_empty() {
        responses.insert("422".into(), response_ref("ValidationError"));
    }
    responses.insert("4XX".into(), response_ref("Error"));
    responses.insert("5XX".into(), response_ref("Error"));
    op["responses"] = Value::Object(responses);

    if !r.auth {
        op["security"] = json!([]);
    }
    op
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn response_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/responses/{name}") })
}

fn bytes_schema() -> Value {
    json!({ "type": "string", "contentMediaType": "application/octet-stream" })
}

fn sse_content() -> Value {
    json!({ "schema": {
        "type": "string",
        "description": "Frames of `event: <type>`, `id: <monotonic id>` and \
            `data: <JSON object carrying \"type\">`; a `: heartbeat` comment every 15 s.",
    } })
}

fn success(r: &RouteDoc) -> Value {
    let description = match r.status {
        101 => "Switching Protocols",
        201 => "Created",
        _ => "OK",
    };
    let json_body = |schema: Value| {
        json!({
            "description": description,
            "content": { "application/json": { "schema": schema } },
        })
    };
    match r.reply {
        Reply::Data => json_body(schema_ref("Data")),
        Reply::List => json_body(schema_ref("DataList")),
        Reply::Page => json_body(schema_ref("DataPage")),
        Reply::Sandbox => json_body(schema_ref("SandboxData")),
        Reply::Sandboxes => json_body(schema_ref("SandboxPage")),
        Reply::Bare => json_body(json!({ "type": "object" })),
        Reply::Sse => json!({
            "description": "Server-sent events",
            "content": { "text/event-stream": sse_content() },
        }),
        Reply::Events => json!({
            "description": "Server-sent events; with `Accept: application/json` \
                alone, the events so far as a list",
            "content": {
                "text/event-stream": sse_content(),
                "application/json": { "schema": schema_ref("DataList") },
            },
        }),
        Reply::Bytes => json!({
            "description": description,
            "content": { "application/octet-stream": { "schema": bytes_schema() } },
        }),
        Reply::Metrics => json!({
            "description": description,
            "content": { "text/plain": { "schema": { "type": "string" } } },
        }),
        Reply::WebSocket => json!({
            "description": "Switching Protocols: binary frames carry PTY bytes both \
                ways; a text frame `{\"type\":\"resize\",\"cols\":N,\"rows\":N}` resizes.",
        }),
    }
}

fn nullable(ty: &str) -> Value {
    json!({ "type": [ty, "null"] })
}

fn timestamp(nullable: bool) -> Value {
    if nullable {
        json!({ "type": ["string", "null"], "format": "date-time" })
    } else {
        json!({ "type": "string", "format": "date-time" })
    }
}

fn sandbox_schema() -> Value {
    let string = json!({ "type": "string" });
    let int = json!({ "type": "integer", "minimum": 0 });
    let fields: Vec<(&str, Value)> = vec![
        (
            "id",
            json!({ "type": "string", "description": "`sbx_...`" }),
        ),
        ("state", schema_ref("SandboxState")),
        ("status", schema_ref("SandboxState")),
        ("template_id", string.clone()),
        ("template_version", string.clone()),
        ("cpu_count", int.clone()),
        ("memory_mb", int.clone()),
        ("disk_size_mb", int.clone()),
        ("timeout_sec", int.clone()),
        ("idle_timeout_sec", int.clone()),
        ("always_on", json!({ "type": "boolean" })),
        ("persistent", json!({ "type": "boolean" })),
        (
            "network",
            json!({
                "type": "object",
                "properties": { "egress": { "type": "boolean" } },
                "description": "The egress policy is read and changed at `/sandboxes/{id}/network-policy`.",
            }),
        ),
        (
            "env_keys",
            json!({ "type": "array", "items": { "type": "string" } }),
        ),
        (
            "metadata",
            json!({
                "type": "object",
                "description": "Holds `last_error` in state `error`.",
            }),
        ),
        (
            "tags",
            json!({ "type": "array", "items": { "type": "string" } }),
        ),
        ("name", nullable("string")),
        ("external_workspace_id", nullable("string")),
        ("external_user_id", nullable("string")),
        ("external_project_id", nullable("string")),
        (
            "boot_ms",
            json!({ "type": ["integer", "null"], "minimum": 0 }),
        ),
        (
            "boot_path",
            json!({ "type": ["string", "null"], "enum": ["snapshot", "cold", null] }),
        ),
        ("created_at", timestamp(false)),
        ("started_at", timestamp(true)),
        ("paused_at", timestamp(true)),
        ("destroyed_at", timestamp(true)),
        ("timeout_remaining_ms", nullable("integer")),
    ];
    let required: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
    let properties: Map<String, Value> = fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    json!({
        "type": "object",
        "required": required,
        "properties": properties,
    })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "headers": { "X-Request-Id": { "$ref": "#/components/headers/RequestId" } },
        "content": { "application/json": { "schema": schema_ref("Error") } },
    })
}

fn components() -> Value {
    json!({
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key: `Authorization: Bearer <key>`.",
            },
            "apiKeyHeader": {
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": "The same API key in `X-API-Key`.",
            },
        },
        "parameters": {
            "IdempotencyKey": {
                "name": "Idempotency-Key",
                "in": "header",
                "required": false,
                "description": "The same key from the same tenant within 24 h replays the \
                    first response; with a different body it is 409 `idempotency_key_reused`.",
                "schema": { "type": "string" },
            },
            "LastEventId": {
                "name": "Last-Event-ID",
                "in": "header",
                "required": false,
                "description": "Resume the stream after this event id.",
                "schema": { "type": "string" },
            },
        },
        "headers": {
            "RequestId": {
                "description": "The request's id, also in the error body.",
                "schema": { "type": "string" },
            },
        },
        "responses": {
            "Unauthorized": error_response("Missing or invalid API key (`unauthorized`)"),
            "NotFound": error_response(
                "Not found (`not_found`, `sandbox_not_found`, `file_not_found`, ...)",
            ),
            "ValidationError": error_response(
                "A field is invalid (`validation_error`; `details` names each field)",
            ),
            "Error": error_response("An error; `code` says which"),
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message", "request_id"],
                        "properties": {
                            "code": {
                                "type": "string",
                                "description": "Lower snake case: `unauthorized`, `forbidden`, \
                                    `not_found`, `sandbox_not_found`, `conflict`, \
                                    `sandbox_not_running`, `invalid_state`, \
                                    `validation_error`, `payload_too_large`, \
                                    `rate_limited`, `internal`, ...",
                            },
                            "message": { "type": "string" },
                            "request_id": { "type": "string", "description": "`req_...`" },
                            "details": {
                                "type": "array",
                                "items": schema_ref("FieldError"),
                            },
                        },
                    },
                },
            },
            "FieldError": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {
                    "field": { "type": "string" },
                    "message": { "type": "string" },
                },
            },
            "PageInfo": {
                "type": "object",
                "required": ["page", "page_size", "total"],
                "properties": {
                    "page": { "type": "integer", "minimum": 1 },
                    "page_size": { "type": "integer", "minimum": 1, "maximum": 100 },
                    "total": { "type": "integer", "minimum": 0 },
                },
            },
            "Data": {
                "type": "object",
                "required": ["data"],
                "properties": { "data": { "type": "object" } },
            },
            "DataList": {
                "type": "object",
                "required": ["data"],
                "properties": { "data": { "type": "array" } },
            },
            "DataPage": {
                "type": "object",
                "required": ["data", "page"],
                "properties": {
                    "data": { "type": "array" },
                    "page": schema_ref("PageInfo"),
                },
            },
            "SandboxState": {
                "type": "string",
                "enum": ["provisioning", "running", "paused", "snapshotting", "destroyed", "error"],
            },
            "Sandbox": sandbox_schema(),
            "SandboxData": {
                "type": "object",
                "required": ["data"],
                "properties": { "data": schema_ref("Sandbox") },
            },
            "SandboxPage": {
                "type": "object",
                "required": ["data", "page"],
                "properties": {
                    "data": { "type": "array", "items": schema_ref("Sandbox") },
                    "page": schema_ref("PageInfo"),
                },
            },
        },
    })
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
        let same = current == stored
            || serde_json::from_str::<Value>(&stored).is_ok_and(|v| v == document());
        if same {
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

    #[test]
    fn routes_are_unique_and_well_formed() {
        let tags: BTreeSet<&str> = TAGS.iter().map(|(t, _)| *t).collect();
        let mut seen = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for r in ROUTES {
            let what = format!("{} {}", r.method, r.path);
            assert!(
                matches!(r.method, "GET" | "POST" | "PUT" | "PATCH" | "DELETE"),
                "{what}: method"
            );
            assert!(seen.insert((r.method, r.path)), "{what} is listed twice");
            assert!(ids.insert(operation_id(r)), "{what}: operationId clash");
            assert!(tags.contains(r.tag), "{what}: tag {} not in TAGS", r.tag);
            assert!(!r.summary.is_empty(), "{what}: no summary");
            assert_eq!(
                r.auth,
                r.path.starts_with("/api/v1/"),
                "{what}: routes under /api/v1 want a key, root routes do not"
            );
            for p in path_params(r.path) {
                assert!(
                    !path_param_description(r.path, p).is_empty(),
                    "{what}: describe path parameter {p}"
                );
            }
            let names: BTreeSet<&str> = r.query.iter().map(|q| q.name).collect();
            assert_eq!(names.len(), r.query.len(), "{what}: query listed twice");
        }
        for (t, _) in TAGS {
            assert!(ROUTES.iter().any(|r| r.tag == *t), "tag {t} is unused");
        }
    }

    #[test]
    fn document_has_the_shared_parts() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "Hearth");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(
            doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
            "bearer"
        );
        let err = &doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"];
        for field in ["code", "message", "request_id", "details"] {
            assert!(err.get(field).is_some(), "error envelope lacks {field}");
        }
        let n: usize = doc["paths"]
            .as_object()
            .expect("paths")
            .values()
            .map(|item| item.as_object().expect("path item").len())
            .sum();
        assert_eq!(n, ROUTES.len());
        for r in ROUTES {
            let op = &doc["paths"][r.path][r.method.to_ascii_lowercase()];
            for code in ["4XX", "5XX"] {
                assert_eq!(
                    op["responses"][code]["$ref"], "#/components/responses/Error",
                    "{} {}",
                    r.method, r.path
                );
            }
        }
    }

    /// The fields API.md lists for the sandbox object.
    #[test]
    fn sandbox_schema_has_the_api_md_fields() {
        let doc = document();
        let props = doc["components"]["schemas"]["Sandbox"]["properties"]
            .as_object()
            .expect("Sandbox properties");
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
        }
    }
}
