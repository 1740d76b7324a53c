//! `/sandboxes/{id}/fs/*`, `/files*` and `/exports/download`: the guest's
//! file system through its agent. Raw uploads and downloads stream through
//! without being held whole; JSON routes are capped by `ApiJson`.
//!
//! Query strings are parsed here rather than by serde: a guest path may hold
//! bytes that are not UTF-8, and `exports/download` repeats `paths[]`.

use std::io;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use futures_util::StreamExt;
use hearth_agent_protocol::{
    Base64Bytes, FileEntry, FileType, TreeNode, WatchEvent, WatchEventKind, WriteFileRequest,
};
use http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use http::{HeaderValue, StatusCode, Uri};
use percent_encoding::percent_decode;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::exec::async_stream;
use super::openapi::{
    also_at, Data, E404And422, EventStream, GuestPath, RawBytes, SandboxId, FILES,
};
use super::query::Params;
use super::{data, sse, ApiJson, AppState};
use crate::core::clock::rfc3339;
use crate::core::guest::Guest;
use crate::core::keys::Caller;
use crate::error::{ApiError, ApiResult, FieldError};

/// Deepest `depth` a list or tree may ask for (the agent's limit too).
const MAX_DEPTH: u32 = 10;
const DEFAULT_LIST_DEPTH: u32 = 1;
const DEFAULT_TREE_DEPTH: u32 = 3;
/// Paths one export may name.
const MAX_EXPORT_PATHS: usize = 1024;
/// Highest permission bits a `mode` may carry (setuid, setgid, sticky, rwx).
const MAX_MODE: u32 = 0o7777;

const OCTET_STREAM: &str = "application/octet-stream";
/// Marks the agent's temp files of atomic writes (`.<name>.hearth-tmp-...`).
const AGENT_TEMP_MARKER: &str = ".hearth-tmp-";
/// Paths a watch stream remembers having seen, to tell a new file from a
/// replaced one.
const MAX_KNOWN_PATHS: usize = 100_000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(fs_write))
        .routes(routes!(fs_raw))
        .routes(routes!(download))
        .routes(routes!(stat))
        .routes(routes!(mkdir))
        .routes(routes!(remove))
        .routes(routes!(rename))
        .routes(routes!(legacy_write))
        .routes(also_at(
            routes!(list),
            "/sandboxes/{id}/files",
            "List a directory",
        ))
        .routes(routes!(read))
        .routes(routes!(list))
        .routes(routes!(tree))
        .routes(routes!(watch))
        .routes(also_at(
            routes!(stat),
            "/sandboxes/{id}/files/stat",
            "Stat a path (legacy)",
        ))
        .routes(routes!(write_many))
        // Only POST is taken by these two, so a legacy GET of a guest file
        // that happens to be called `/stat` or `/write-many` still works.
        .route("/sandboxes/{id}/files/stat", get(legacy_read))
        .route("/sandboxes/{id}/files/write-many", get(legacy_read))
        .routes(routes!(legacy_read))
        .routes(routes!(export))
}

// ---------------------------------------------------------------- input

/// Checks a guest path: present, absolute, without NUL.
fn check_path(field: &str, path: &[u8]) -> Result<(), FieldError> {
    if path.is_empty() {
        Err(FieldError::new(field, "is required"))
    } else if path[0] != b'/' {
        Err(FieldError::new(field, "must be an absolute path"))
    } else if path.contains(&0) {
        Err(FieldError::new(field, "cannot hold NUL"))
    } else {
        Ok(())
    }
}

/// A required path from a JSON body.
fn body_path(field: &str, path: Option<String>, bad: &mut Vec<FieldError>) -> String {
    let path = path.unwrap_or_default();
    if let Err(e) = check_path(field, path.as_bytes()) {
        bad.push(e);
    }
    path
}

fn one_path(field: &str, path: Option<String>) -> ApiResult<String> {
    let mut bad = Vec::new();
    let path = body_path(field, path, &mut bad);
    if bad.is_empty() {
        Ok(path)
    } else {
        Err(ApiError::validation(bad))
    }
}

/// Permission bits from JSON: a number is the bits themselves (`420`, what
/// `0o644` serializes to), a string is octal (`"0644"`, `"755"`, `"0o755"`).
fn parse_mode(v: &Value) -> Result<Option<u32>, String> {
    let bits = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => parse_octal(s),
        _ => None,
    };
    match bits {
        Some(b) if b <= MAX_MODE => Ok(Some(b)),
        _ => Err("must be permission bits, e.g. \"0644\" or 420".into()),
    }
}

fn parse_octal(s: &str) -> Option<u32> {
    let s = s.trim();
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
}

/// `"0644"`: the permission bits in octal, at least four digits.
fn format_mode(mode: u32) -> String {
    format!("{:04o}", mode & MAX_MODE)
}

/// Standard base64, tolerating the line breaks `base64(1)` inserts.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let compact: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
}

fn parse_bool(field: &str, raw: Option<&[u8]>) -> Result<bool, FieldError> {
    match raw {
        None | Some(b"") => Ok(false),
        Some(b"true" | b"1" | b"yes") => Ok(true),
        Some(b"false" | b"0" | b"no") => Ok(false),
        Some(_) => Err(FieldError::new(field, "must be true or false")),
    }
}

fn parse_depth(raw: Option<&[u8]>, default: u32) -> Result<u32, FieldError> {
    let bad = || FieldError::new("depth", format!("must be an integer 1-{MAX_DEPTH}"));
    match raw {
        None | Some(b"") => Ok(default),
        Some(r) => match std::str::from_utf8(r)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
        {
            Some(d) if (1..=MAX_DEPTH).contains(&d) => Ok(d),
            _ => Err(bad()),
        },
    }
}

/// The checked guest path under `key`; `default` when absent.
fn query_path(q: &Params, key: &str, default: Option<&str>) -> Result<Vec<u8>, FieldError> {
    let path = match (q.get(key), default) {
        (Some(p), _) => p.to_vec(),
        (None, Some(d)) => d.as_bytes().to_vec(),
        (None, None) => Vec::new(),
    };
    check_path(key, &path)?;
    Ok(path)
}

/// A path that must be text because the agent call takes `&str`.
fn utf8_path(field: &str, path: Vec<u8>) -> Result<String, FieldError> {
    String::from_utf8(path).map_err(|_| FieldError::new(field, "must be UTF-8 for this call"))
}

/// Two field checks as one result: both values, or one 422 naming every
/// bad field.
fn both<A, B>(a: Result<A, FieldError>, b: Result<B, FieldError>) -> ApiResult<(A, B)> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => Err(ApiError::validation(
            [a.err(), b.err()].into_iter().flatten().collect(),
        )),
    }
}

/// The sandbox id and guest path of a legacy `/sandboxes/{id}/files/{path}`
/// request, from the raw URI so the path keeps its exact bytes.
fn legacy_target(uri_path: &str) -> Option<(String, Vec<u8>)> {
    let at = uri_path.find("/sandboxes/")? + "/sandboxes/".len();
    let rest = &uri_path[at..];
    let (id, rest) = rest.split_once('/')?;
    let file = rest.strip_prefix("files/")?;
    if file.is_empty() {
        return None;
    }
    let id = String::from_utf8(percent_decode(id.as_bytes()).collect()).ok()?;
    let mut path = vec![b'/'];
    path.extend(percent_decode(file.as_bytes()));
    Some((id, path))
}

/// The last component of a guest path, for a download's file name.
fn base_name(path: &[u8]) -> &[u8] {
    let trimmed = match path.iter().rposition(|&b| b != b'/') {
        Some(end) => &path[..=end],
        None => return b"",
    };
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    }
}

/// `attachment; filename="..."; filename*=UTF-8''...` (RFC 6266): an ASCII
/// fallback for old clients, the exact name for the rest.
fn attachment(name: &[u8]) -> HeaderValue {
    let name = if name.is_empty() {
        b"download".as_slice()
    } else {
        name
    };
    let ascii: String = name
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"._-+".contains(&b) {
                b as char
            } else {
                '_'
            }
        })
        .collect();
    let mut exact = String::new();
    for &b in name {
        if b.is_ascii_alphanumeric() || b"._-~".contains(&b) {
            exact.push(b as char);
        } else {
            exact.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{exact}"
    ))
    .expect("only visible ASCII is used")
}

// ---------------------------------------------------------------- output

fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::File => "file",
        FileType::Dir => "dir",
        FileType::Symlink => "symlink",
        FileType::Other => "other",
    }
}

/// A file entry as API.md shows it.
fn entry_json(e: &FileEntry) -> Value {
    let mut v = json!({
        "name": e.name,
        "path": e.path,
        "type": type_name(e.file_type),
        "is_dir": e.file_type == FileType::Dir,
        "size": e.size,
        "mode": format_mode(e.mode),
        "modified_at": rfc3339(e.modified_at_ms),
    });
    if let Some(target) = &e.symlink_target {
        v["symlink_target"] = json!(target);
    }
    v
}

/// A tree node; `children` is always a list, `truncated` marks a directory
/// past the depth limit.
fn tree_json(n: &TreeNode) -> Value {
    let is_dir = n.file_type == FileType::Dir;
    let children: Vec<Value> = n.children.iter().flatten().map(tree_json).collect();
    let mut v = json!({
        "path": n.path,
        "name": n.name,
        "type": type_name(n.file_type),
        "is_dir": is_dir,
        "size": n.size,
        "children": children,
    });
    if is_dir && n.children.is_none() {
        v["truncated"] = json!(true);
    }
    v
}

fn watch_kind(k: WatchEventKind) -> &'static str {
    match k {
        WatchEventKind::Created => "created",
        WatchEventKind::Modified => "modified",
        WatchEventKind::Deleted => "deleted",
        WatchEventKind::Renamed => "renamed",
    }
}

fn is_agent_temp(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with('.') && name.contains(AGENT_TEMP_MARKER)
}

/// Turns the agent's view of atomic writes into what a person would name.
/// The agent writes through a temp file renamed over the target, so a write
/// arrives as `created`/`modified` of the temp file and a `renamed` onto the
/// target: the temp file's events are dropped and the rename becomes
/// `modified` when the target was already seen on this stream (or is the
/// watched path itself), else `created`.
#[derive(Debug, Default)]
struct WatchView {
    known: std::collections::HashSet<String>,
}

impl WatchView {
    fn new(root: &str) -> WatchView {
        let mut v = WatchView::default();
        v.remember(root);
        v
    }

    fn remember(&mut self, path: &str) {
        if self.known.len() < MAX_KNOWN_PATHS {
            self.known.insert(path.to_string());
        }
    }

    fn translate(&mut self, mut ev: WatchEvent) -> Option<WatchEvent> {
        if is_agent_temp(&ev.path) {
            return None;
        }
        match ev.event {
            WatchEventKind::Renamed => match ev.old_path.take() {
                Some(old) if is_agent_temp(&old) => {
                    ev.event = if self.known.contains(&ev.path) {
                        WatchEventKind::Modified
                    } else {
                        WatchEventKind::Created
                    };
                }
                old => {
                    if let Some(o) = &old {
                        self.known.remove(o);
                    }
                    ev.old_path = old;
                }
            },
            WatchEventKind::Deleted => {
                self.known.remove(&ev.path);
                return Some(ev);
            }
            WatchEventKind::Created | WatchEventKind::Modified => {}
        }
        self.remember(&ev.path);
        Some(ev)
    }
}

/// One watch event as an SSE frame: `event:` and `data.type` are the kind.
fn watch_frame(seq: i64, ev: &WatchEvent) -> axum::response::sse::Event {
    let kind = watch_kind(ev.event);
    let mut d = json!({ "event": kind, "path": ev.path, "is_dir": ev.is_dir });
    if let Some(old) = &ev.old_path {
        d["old_path"] = json!(old);
    }
    sse::frame(kind, Some(seq), d)
}

fn stream_response(content_type: &'static str, name: HeaderValue, body: Body) -> Response {
    (
        StatusCode::OK,
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (CONTENT_DISPOSITION, name),
        ],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------- writes

/// `content` or `content_base64`, not both.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct WriteBody {
    /// An absolute guest path, without NUL; parents are made.
    #[schema(value_type = String, required = true, pattern = r"^/[^\u0000]*$", example = "/workspace/hello.txt")]
    pub path: Option<String>,
    /// UTF-8 text, written verbatim (base64 on the legacy `POST /files`).
    pub content: Option<String>,
    #[schema(content_encoding = "base64")]
    pub content_base64: Option<String>,
    #[schema(schema_with = super::openapi::file_mode::<{ MAX_MODE as i64 }>)]
    pub mode: Option<Value>,
}

impl WriteBody {
    /// `legacy`: `content` is base64 (the old `/files` route), not text.
    pub fn validate(self, legacy: bool) -> ApiResult<WriteFileRequest> {
        let mut bad = Vec::new();
        let path = body_path("path", self.path, &mut bad);
        let content = match (self.content, self.content_base64) {
            (Some(_), Some(_)) => {
                bad.push(FieldError::new(
                    "content",
                    "give content or content_base64, not both",
                ));
                Vec::new()
            }
            (None, Some(b)) => decode_base64(&b).unwrap_or_else(|| {
                bad.push(FieldError::new("content_base64", "is not valid base64"));
                Vec::new()
            }),
            (Some(c), None) if legacy => decode_base64(&c).unwrap_or_else(|| {
                bad.push(FieldError::new("content", "is not valid base64"));
                Vec::new()
            }),
            (Some(c), None) => c.into_bytes(),
            (None, None) => {
                bad.push(FieldError::new("content", "is required"));
                Vec::new()
            }
        };
        let mode = match self.mode.as_ref().map(parse_mode).transpose() {
            Ok(m) => m.flatten(),
            Err(msg) => {
                bad.push(FieldError::new("mode", msg));
                None
            }
        };
        if !bad.is_empty() {
            return Err(ApiError::validation(bad));
        }
        Ok(WriteFileRequest {
            path,
            content: Base64Bytes::from(content),
            mode,
        })
    }
}

async fn write_file(
    state: AppState,
    caller: Caller,
    id: String,
    req: WriteFileRequest,
) -> ApiResult<impl IntoResponse> {
    let r = state
        .guest(&caller, &id, true)
        .await?
        .write_file(&req)
        .await?;
    Ok(data(json!({ "path": r.path, "size_bytes": r.size_bytes })))
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/fs/write",
    tag = FILES,
    summary = "Write a file",
    params(SandboxId),
    request_body = WriteBody,
    responses((status = 200, description = "OK: `{path, size_bytes}`", body = Data), E404And422),
)]
async fn fs_write(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<WriteBody>,
) -> ApiResult<impl IntoResponse> {
    let req = body.validate(false)?;
    write_file(state, caller, id, req).await
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/files",
    tag = FILES,
    summary = "Write a file (legacy; `content` is base64)",
    params(SandboxId),
    request_body = WriteBody,
    responses((status = 200, description = "OK: `{path, size_bytes}`", body = Data), E404And422),
)]
async fn legacy_write(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<WriteBody>,
) -> ApiResult<impl IntoResponse> {
    let req = body.validate(true)?;
    write_file(state, caller, id, req).await
}

/// The request body goes to the agent chunk by chunk; the agent commits
/// the file only when the body ended cleanly.
#[utoipa::path(
    put,
    path = "/sandboxes/{id}/fs/raw",
    tag = FILES,
    summary = "Upload a file as raw bytes",
    params(
        SandboxId,
        ("path" = String, Query, description = "Absolute guest path.", pattern = r"^/"),
        ("mode" = Option<String>, Query, description = "Octal permission bits (`0644`).", pattern = r"^\s*(0o)?0*[0-7]{1,4}\s*$"),
    ),
    request_body(content = RawBytes, content_type = "application/octet-stream"),
    responses((status = 200, description = "OK: `{path, size_bytes}`", body = Data), E404And422),
)]
async fn fs_raw(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let q = Params::parse(query.as_deref());
    let path = query_path(&q, "path", None).and_then(|p| utf8_path("path", p));
    let mode = match q.get("mode") {
        None | Some(b"") => Ok(None),
        Some(m) => std::str::from_utf8(m)
            .ok()
            .and_then(parse_octal)
            .filter(|&m| m <= MAX_MODE)
            .map(Some)
            .ok_or_else(|| FieldError::new("mode", "must be octal permission bits, e.g. 0644")),
    };
    let (path, mode) = both(path, mode)?;
    let guest = state.guest(&caller, &id, true).await?;
    let chunks = body.into_data_stream().map(|r| r.map_err(io::Error::other));
    let r = guest.write_file_stream(&path, mode, chunks).await?;
    Ok(data(json!({ "path": r.path, "size_bytes": r.size_bytes })))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct WriteManyBody {
    pub files: Vec<WriteManyItem>,
}

/// One file, as `fs/write` takes it; a file that fails its checks is
/// reported in `failed` rather than failing the request.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct WriteManyItem {
    /// An absolute guest path.
    pub path: Option<String>,
    #[schema(content_encoding = "base64")]
    pub content_base64: Option<String>,
    /// UTF-8 text, written verbatim.
    pub content: Option<String>,
    /// Permission bits: a number (`420`) or an octal string (`"0644"`).
    pub mode: Option<Value>,
}

/// Splits a write-many body into what can go to the agent and what failed
/// its checks here, each reported per file as API.md asks.
fn split_write_many(files: Vec<WriteManyItem>) -> (Vec<WriteFileRequest>, Vec<Value>) {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for item in files {
        let path = item.path.clone().unwrap_or_default();
        let body = WriteBody {
            path: item.path,
            content: item.content,
            content_base64: item.content_base64,
            mode: item.mode,
        };
        match body.validate(false) {
            Ok(req) => ok.push(req),
            Err(e) => failed.push(json!({
                "path": path,
                "error": e.message,
                "code": e.code,
            })),
        }
    }
    (ok, failed)
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/files/write-many",
    tag = FILES,
    summary = "Write several files",
    params(SandboxId),
    request_body = WriteManyBody,
    responses((status = 200, description = "OK: `{written: [{path, size_bytes}], failed: [{path, error, code}]}`", body = Data), E404And422),
)]
async fn write_many(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<WriteManyBody>,
) -> ApiResult<impl IntoResponse> {
    let (files, mut failed) = split_write_many(body.files);
    let r = state
        .guest(&caller, &id, true)
        .await?
        .write_many(files)
        .await?;
    let written: Vec<Value> = r
        .written
        .iter()
        .map(|w| json!({ "path": w.path, "size_bytes": w.size_bytes }))
        .collect();
    for (path, e) in r.failed {
        failed.push(json!({ "path": path, "error": e.message, "code": e.code }));
    }
    Ok(data(json!({ "written": written, "failed": failed })))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct MkdirBody {
    /// An absolute guest path, without NUL; parents are made.
    #[schema(value_type = String, required = true, pattern = r"^/[^\u0000]*$", example = "/workspace/data")]
    pub path: Option<String>,
    #[schema(schema_with = super::openapi::file_mode::<{ MAX_MODE as i64 }>)]
    pub mode: Option<Value>,
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/fs/mkdir",
    tag = FILES,
    summary = "Create a directory and its parents",
    params(SandboxId),
    request_body = MkdirBody,
    responses((status = 200, description = "OK: the directory's entry", body = Data), E404And422),
)]
async fn mkdir(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<MkdirBody>,
) -> ApiResult<impl IntoResponse> {
    let mut bad = Vec::new();
    let path = body_path("path", body.path, &mut bad);
    let mode = body
        .mode
        .as_ref()
        .map(parse_mode)
        .transpose()
        .unwrap_or_else(|msg| {
            bad.push(FieldError::new("mode", msg));
            None
        })
        .flatten();
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let entry = state
        .guest(&caller, &id, true)
        .await?
        .mkdir(&path, mode)
        .await?;
    Ok(data(entry_json(&entry)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct RemoveBody {
    /// An absolute guest path, without NUL.
    #[schema(value_type = String, required = true, pattern = r"^/[^\u0000]*$", example = "/workspace/old")]
    pub path: Option<String>,
    /// Remove a directory and everything in it.
    pub recursive: bool,
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/fs/remove",
    tag = FILES,
    summary = "Remove a file or directory",
    params(SandboxId),
    request_body = RemoveBody,
    responses((status = 200, description = "OK: `{path, removed}`", body = Data), E404And422),
)]
async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RemoveBody>,
) -> ApiResult<impl IntoResponse> {
    let path = one_path("path", body.path)?;
    let guest = state.guest(&caller, &id, true).await?;
    guest.remove(&path, body.recursive).await?;
    Ok(data(json!({ "path": path, "removed": true })))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct RenameBody {
    /// An absolute guest path, without NUL.
    #[schema(value_type = String, required = true, pattern = r"^/[^\u0000]*$", example = "/workspace/a.txt")]
    pub from: Option<String>,
    /// An absolute guest path, without NUL.
    #[schema(value_type = String, required = true, pattern = r"^/[^\u0000]*$", example = "/workspace/b.txt")]
    pub to: Option<String>,
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/fs/rename",
    tag = FILES,
    summary = "Rename a file or directory",
    params(SandboxId),
    request_body = RenameBody,
    responses((status = 200, description = "OK: the entry, with `from` and `to`", body = Data), E404And422),
)]
async fn rename(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RenameBody>,
) -> ApiResult<impl IntoResponse> {
    let mut bad = Vec::new();
    let from = body_path("from", body.from, &mut bad);
    let to = body_path("to", body.to, &mut bad);
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let entry = state
        .guest(&caller, &id, true)
        .await?
        .rename(&from, &to)
        .await?;
    let mut v = entry_json(&entry);
    v["from"] = json!(from);
    v["to"] = json!(entry.path);
    Ok(data(v))
}

// ---------------------------------------------------------------- reads

/// Streams one guest file as the answer.
async fn send_file(guest: &Guest, path: &[u8]) -> ApiResult<Response> {
    let stream = guest.read_file(path).await?;
    Ok(stream_response(
        OCTET_STREAM,
        attachment(base_name(path)),
        Body::from_stream(stream),
    ))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/fs/download",
    tag = FILES,
    summary = "Download a file as raw bytes",
    params(SandboxId, ("path" = String, Query, description = "Absolute guest path.", pattern = r"^/")),
    responses(
        (status = 200, description = "OK", body = RawBytes, content_type = "application/octet-stream"),
        E404And422,
    ),
)]
async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let path = query_path(&Params::parse(query.as_deref()), "path", None)
        .map_err(|e| ApiError::validation(vec![e]))?;
    let guest = state.guest(&caller, &id, false).await?;
    send_file(&guest, &path).await
}

/// `GET /files/{path...}`: the guest path is the rest of the URI.
#[utoipa::path(
    get,
    path = "/sandboxes/{id}/files/{*path}",
    tag = FILES,
    summary = "Read a file as raw bytes (legacy)",
    params(SandboxId, GuestPath),
    responses(
        (status = 200, description = "OK", body = RawBytes, content_type = "application/octet-stream"),
        E404And422,
    ),
)]
async fn legacy_read(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> ApiResult<Response> {
    let (id, path) = legacy_target(uri.path()).ok_or_else(|| ApiError::not_found("route"))?;
    check_path("path", &path).map_err(|e| ApiError::validation(vec![e]))?;
    let guest = state.guest(&caller, &id, false).await?;
    send_file(&guest, &path).await
}

/// The whole file in JSON (base64), refused past the JSON body limit:
/// larger files belong to `fs/download`.
#[utoipa::path(
    get,
    path = "/sandboxes/{id}/files/read",
    tag = FILES,
    summary = "Read a file as base64",
    params(SandboxId, ("path" = String, Query, description = "Absolute guest path.", pattern = r"^/")),
    responses((status = 200, description = "OK: `{path, content, encoding, size}`", body = Data), E404And422),
)]
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<impl IntoResponse> {
    let path = query_path(&Params::parse(query.as_deref()), "path", None)
        .map_err(|e| ApiError::validation(vec![e]))?;
    let limit = state.config.max_json_body_bytes;
    let guest = state.guest(&caller, &id, false).await?;
    let content = guest.read_file_limited(&path, limit).await?;
    Ok(data(json!({
        "path": String::from_utf8_lossy(&path),
        "content": base64::engine::general_purpose::STANDARD.encode(&content),
        "encoding": "base64",
        "size": content.len(),
    })))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/files/list",
    tag = FILES,
    summary = "List a directory",
    params(
        SandboxId,
        ("path" = Option<String>, Query, description = "Absolute guest directory (default `/`).", pattern = r"^/"),
        ("depth" = Option<u32>, Query, description = "Levels to list, 1-10 (default 1).", minimum = 1, maximum = 10),
    ),
    responses((status = 200, description = "OK: `{path, entries}`", body = Data), E404And422),
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<impl IntoResponse> {
    let q = Params::parse(query.as_deref());
    let path = query_path(&q, "path", Some("/"));
    let depth = parse_depth(q.get("depth"), DEFAULT_LIST_DEPTH);
    let (path, depth) = both(path, depth)?;
    let r = state
        .guest(&caller, &id, false)
        .await?
        .list(&path, depth)
        .await?;
    let entries: Vec<Value> = r.entries.iter().map(entry_json).collect();
    Ok(data(json!({ "path": r.path, "entries": entries })))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = StatBody)]
#[serde(default)]
pub struct PathBody {
    /// An absolute guest path, without NUL.
    #[schema(value_type = String, required = true, pattern = r"^/[^\u0000]*$", example = "/workspace")]
    pub path: Option<String>,
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/fs/stat",
    tag = FILES,
    summary = "Stat a path",
    params(SandboxId),
    request_body = PathBody,
    responses((status = 200, description = "OK: the entry; a missing path is 404 `file_not_found`", body = Data), E404And422),
)]
async fn stat(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PathBody>,
) -> ApiResult<impl IntoResponse> {
    let path = one_path("path", body.path)?;
    let guest = state.guest(&caller, &id, false).await?;
    let entry = guest.stat(path.as_bytes()).await?;
    Ok(data(entry_json(&entry)))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/files/tree",
    tag = FILES,
    summary = "A directory tree",
    params(
        SandboxId,
        ("path" = Option<String>, Query, description = "Absolute guest directory (default `/`).", pattern = r"^/"),
        ("depth" = Option<u32>, Query, description = "Levels, 1-10 (default 3).", minimum = 1, maximum = 10),
    ),
    responses((status = 200, description = "OK: nested `{path, name, type, size, children}`", body = Data), E404And422),
)]
async fn tree(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<impl IntoResponse> {
    let q = Params::parse(query.as_deref());
    let path = query_path(&q, "path", Some("/")).and_then(|p| utf8_path("path", p));
    let depth = parse_depth(q.get("depth"), DEFAULT_TREE_DEPTH);
    let (path, depth) = both(path, depth)?;
    let node = state
        .guest(&caller, &id, false)
        .await?
        .tree(&path, depth)
        .await?;
    Ok(data(tree_json(&node)))
}

/// Guest changes as SSE. The agent's watch lives as long as this stream:
/// it ends when the client goes away, even if nothing changes meanwhile.
#[utoipa::path(
    get,
    path = "/sandboxes/{id}/files/watch",
    tag = FILES,
    summary = "Watch a path for changes",
    params(
        SandboxId,
        ("path" = String, Query, description = "Absolute guest path.", pattern = r"^/"),
        ("recursive" = Option<bool>, Query, description = "Watch subdirectories too."),
    ),
    responses(
        (status = 200, description = "Server-sent events `{event, type, path, is_dir, old_path?}`", body = EventStream, content_type = "text/event-stream"),
        E404And422,
    ),
)]
async fn watch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<impl IntoResponse> {
    let q = Params::parse(query.as_deref());
    let path = query_path(&q, "path", None).and_then(|p| utf8_path("path", p));
    let recursive = parse_bool("recursive", q.get("recursive"));
    let (path, recursive) = both(path, recursive)?;
    let guest = state.guest(&caller, &id, false).await?;
    let mut stream = guest.watch(&path, recursive).await?;
    let events = async_stream(move |tx| async move {
        let mut view = WatchView::new(&path);
        let mut seq = 0i64;
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                () = tx.closed() => return,
            };
            let frame = match item {
                None => return,
                Some(Ok(ev)) => match view.translate(ev) {
                    Some(ev) => {
                        seq += 1;
                        watch_frame(seq, &ev)
                    }
                    None => continue,
                },
                Some(Err(e)) => {
                    let err = ApiError::from(e);
                    let f = sse::frame(
                        "error",
                        None,
                        json!({ "code": err.code, "message": err.message }),
                    );
                    let _ = tx.send(Ok(f)).await;
                    return;
                }
            };
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
    });
    Ok(sse::response(events, sse::heartbeat_of(&state)))
}

/// One file as itself; several (or a directory) as one tar.gz.
#[utoipa::path(
    get,
    path = "/sandboxes/{id}/exports/download",
    tag = FILES,
    summary = "Download one file raw, or several as tar.gz",
    params(
        SandboxId,
        ("path" = Option<String>, Query, description = "One absolute guest path.", pattern = r"^/"),
        ("paths[]" = Option<Vec<String>>, Query, description = "Several absolute guest paths (repeat the parameter; at most 1024)."),
    ),
    responses(
        (status = 200, description = "OK", body = RawBytes, content_type = "application/octet-stream"),
        E404And422,
    ),
)]
async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let q = Params::parse(query.as_deref());
    let paths = q.all(&["path", "paths", "paths[]"]);
    if paths.is_empty() {
        return Err(ApiError::field(
            "paths",
            "name at least one path (path= or paths[]=)",
        ));
    }
    if paths.len() > MAX_EXPORT_PATHS {
        return Err(ApiError::field(
            "paths",
            format!("at most {MAX_EXPORT_PATHS} paths per export"),
        ));
    }
    let bad: Vec<FieldError> = paths
        .iter()
        .enumerate()
        .filter_map(|(i, p)| check_path(&format!("paths[{i}]"), p).err())
        .collect();
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let guest = state.guest(&caller, &id, false).await?;
    if let [one] = paths.as_slice() {
        let entry = guest.stat(one).await?;
        if entry.file_type != FileType::Dir {
            return send_file(&guest, one).await;
        }
    }
    let mut text = Vec::with_capacity(paths.len());
    let mut bad = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        match utf8_path(&format!("paths[{i}]"), p.to_vec()) {
            Ok(s) => text.push(s),
            Err(e) => bad.push(e),
        }
    }
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let stream = guest.archive(&text).await?;
    Ok(stream_response(
        "application/gzip",
        attachment(b"export.tar.gz"),
        Body::from_stream(stream),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(e: &ApiError) -> Vec<&str> {
        e.details.iter().map(|d| d.field.as_str()).collect()
    }

    #[test]
    fn modes_format_as_four_octal_digits() {
        assert_eq!(format_mode(0o644), "0644");
        assert_eq!(format_mode(0o755), "0755");
        assert_eq!(format_mode(0o4755), "4755");
        assert_eq!(format_mode(0o100644), "0644", "file type bits are dropped");
        assert_eq!(format_mode(0), "0000");
    }

    #[test]
    fn modes_parse_from_numbers_and_octal_strings() {
        assert_eq!(parse_mode(&json!(420)), Ok(Some(0o644)));
        assert_eq!(parse_mode(&json!("0644")), Ok(Some(0o644)));
        assert_eq!(parse_mode(&json!("755")), Ok(Some(0o755)));
        assert_eq!(parse_mode(&json!("0o700")), Ok(Some(0o700)));
        assert_eq!(parse_mode(&Value::Null), Ok(None));
        assert!(parse_mode(&json!("0855")).is_err());
        assert!(parse_mode(&json!("")).is_err());
        assert!(parse_mode(&json!(0o10000)).is_err());
        assert!(parse_mode(&json!(-1)).is_err());
        assert!(parse_mode(&json!(true)).is_err());
    }

    #[test]
    fn paths_must_be_absolute_and_free_of_nul() {
        assert!(check_path("path", b"/tmp/a").is_ok());
        assert_eq!(check_path("path", b"").unwrap_err().message, "is required");
        assert_eq!(
            check_path("path", b"tmp/a").unwrap_err().message,
            "must be an absolute path"
        );
        let e = check_path("to", b"/a\0b").unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("to", "cannot hold NUL")
        );
    }

    #[test]
    fn query_paths_default_and_validate() {
        let q = Params::parse(Some("path=rel"));
        assert_eq!(query_path(&q, "path", Some("/")).unwrap_err().field, "path");
        let q = Params::parse(Some("depth=2"));
        assert_eq!(query_path(&q, "path", Some("/")).unwrap(), b"/");
        assert_eq!(
            query_path(&q, "path", None).unwrap_err().message,
            "is required"
        );
        let q = Params::parse(Some("path="));
        assert!(
            query_path(&q, "path", Some("/")).is_err(),
            "an explicit empty path is not the default"
        );
    }

    #[test]
    fn depth_is_bounded() {
        assert_eq!(parse_depth(None, 3), Ok(3));
        assert_eq!(parse_depth(Some(b"10"), 1), Ok(10));
        for bad in [b"0".as_slice(), b"11", b"-1", b"two"] {
            assert_eq!(parse_depth(Some(bad), 1).unwrap_err().field, "depth");
        }
    }

    #[test]
    fn booleans_parse_strictly() {
        assert_eq!(parse_bool("recursive", None), Ok(false));
        assert_eq!(parse_bool("recursive", Some(b"true")), Ok(true));
        assert_eq!(parse_bool("recursive", Some(b"0")), Ok(false));
        assert!(parse_bool("recursive", Some(b"maybe")).is_err());
    }

    #[test]
    fn text_content_is_verbatim_but_legacy_content_is_base64() {
        let body = || -> WriteBody {
            serde_json::from_value(json!({"path": "/a", "content": "aGk=", "mode": "0600"}))
                .expect("body")
        };
        let text = body().validate(false).expect("text");
        assert_eq!(text.content.as_slice(), b"aGk=");
        assert_eq!(text.mode, Some(0o600));
        let legacy = body().validate(true).expect("legacy");
        assert_eq!(legacy.content.as_slice(), b"hi");
        let b64: WriteBody =
            serde_json::from_value(json!({"path": "/a", "content_base64": "aG\nk="}))
                .expect("body");
        assert_eq!(b64.validate(false).expect("b64").content.as_slice(), b"hi");
    }

    #[test]
    fn write_body_reports_every_bad_field() {
        let b: WriteBody =
            serde_json::from_value(json!({"path": "rel", "content_base64": "!!", "mode": "9"}))
                .expect("body");
        let e = b.validate(false).expect_err("invalid");
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(fields(&e), ["path", "content_base64", "mode"]);
        let e = WriteBody::default().validate(false).expect_err("empty");
        assert_eq!(fields(&e), ["path", "content"]);
        let b: WriteBody =
            serde_json::from_value(json!({"path": "/a", "content": "x", "content_base64": "eA=="}))
                .expect("body");
        assert_eq!(fields(&b.validate(false).expect_err("both")), ["content"]);
    }

    #[test]
    fn write_many_reports_bad_entries_without_failing_the_rest() {
        let body: WriteManyBody = serde_json::from_value(json!({"files": [
            {"path": "/ok", "content_base64": "aGk="},
            {"path": "relative", "content_base64": "aGk="},
            {"path": "/bad64", "content_base64": "%%%"},
        ]}))
        .expect("body");
        let (ok, failed) = split_write_many(body.files);
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].path, "/ok");
        assert_eq!(failed.len(), 2);
        assert_eq!(failed[0]["path"], "relative");
        assert_eq!(failed[0]["code"], "validation_error");
        assert_eq!(failed[1]["path"], "/bad64");
        assert!(failed[1]["error"].as_str().unwrap().contains("base64"));
    }

    #[test]
    fn legacy_paths_come_from_the_raw_uri() {
        assert_eq!(
            legacy_target("/sandboxes/sbx_1/files/tmp/a%20b"),
            Some(("sbx_1".to_string(), b"/tmp/a b".to_vec()))
        );
        assert_eq!(
            legacy_target("/api/v1/sandboxes/sbx_1/files/x+y/%FF"),
            Some(("sbx_1".to_string(), b"/x+y/\xff".to_vec()))
        );
        assert_eq!(legacy_target("/sandboxes/sbx_1/files/"), None);
        assert_eq!(legacy_target("/sandboxes/sbx_1/exports/a"), None);
    }

    #[test]
    fn downloads_are_named_after_the_file() {
        assert_eq!(base_name(b"/tmp/dir/a.txt"), b"a.txt");
        assert_eq!(base_name(b"/tmp/dir/"), b"dir");
        assert_eq!(base_name(b"/"), b"");
        assert_eq!(
            attachment(b"r\xc3\xa9sum\xc3\xa9 \"1\".pdf"),
            concat!(
                "attachment; filename=\"r__sum____1_.pdf\"; ",
                "filename*=UTF-8''r%C3%A9sum%C3%A9%20%221%22.pdf"
            )
        );
        assert_eq!(
            attachment(b""),
            "attachment; filename=\"download\"; filename*=UTF-8''download"
        );
    }

    #[test]
    fn entries_show_type_mode_and_time() {
        let e = FileEntry {
            name: "a".into(),
            path: "/t/a".into(),
            raw_path: None,
            file_type: FileType::Dir,
            size: 4096,
            mode: 0o40755,
            modified_at_ms: 1_700_000_000_123,
            symlink_target: None,
        };
        let v = entry_json(&e);
        assert_eq!(v["type"], "dir");
        assert_eq!(v["is_dir"], true);
        assert_eq!(v["mode"], "0755");
        assert_eq!(v["modified_at"], "2023-11-14T22:13:20.123Z");
        assert!(v.get("symlink_target").is_none());
    }

    #[test]
    fn trees_nest_and_mark_truncated_directories() {
        let leaf = |name: &str, t, children| TreeNode {
            name: name.into(),
            path: format!("/r/{name}"),
            file_type: t,
            size: 1,
            children,
        };
        let root = TreeNode {
            name: "r".into(),
            path: "/r".into(),
            file_type: FileType::Dir,
            size: 0,
            children: Some(vec![
                leaf("f", FileType::File, None),
                leaf("deep", FileType::Dir, None),
            ]),
        };
        let v = tree_json(&root);
        assert_eq!(v["children"][0]["name"], "f");
        assert_eq!(v["children"][0]["children"], json!([]));
        assert!(v["children"][0].get("truncated").is_none());
        assert_eq!(v["children"][1]["truncated"], true);
        assert!(v.get("truncated").is_none());
    }

    fn wev(kind: WatchEventKind, path: &str, old: Option<&str>) -> WatchEvent {
        WatchEvent {
            event: kind,
            path: path.into(),
            is_dir: false,
            old_path: old.map(str::to_string),
        }
    }

    #[test]
    fn atomic_writes_read_as_created_then_modified() {
        use WatchEventKind::*;
        let mut view = WatchView::new("/w");
        let temp = "/w/.a.txt.hearth-tmp-1f-0-3b9a";
        assert!(is_agent_temp(temp));
        assert!(
            !is_agent_temp("/w/a.hearth-tmp-1"),
            "not hidden: a user's file"
        );
        assert_eq!(view.translate(wev(Created, temp, None)), None);
        assert_eq!(view.translate(wev(Modified, temp, None)), None);
        let first = view.translate(wev(Renamed, "/w/a.txt", Some(temp)));
        assert_eq!(first, Some(wev(Created, "/w/a.txt", None)));
        let again = view.translate(wev(Renamed, "/w/a.txt", Some(temp)));
        assert_eq!(again, Some(wev(Modified, "/w/a.txt", None)));
        // A real rename keeps its old path; the file is known under the new one.
        let moved = view.translate(wev(Renamed, "/w/b.txt", Some("/w/a.txt")));
        assert_eq!(moved, Some(wev(Renamed, "/w/b.txt", Some("/w/a.txt"))));
        assert_eq!(
            view.translate(wev(Renamed, "/w/a.txt", Some(temp))),
            Some(wev(Created, "/w/a.txt", None))
        );
        assert_eq!(
            view.translate(wev(Deleted, "/w/b.txt", None)),
            Some(wev(Deleted, "/w/b.txt", None))
        );
        assert_eq!(
            view.translate(wev(Renamed, "/w/b.txt", Some(temp))),
            Some(wev(Created, "/w/b.txt", None))
        );
        // A watched file replaced atomically was there all along.
        let mut one = WatchView::new("/f.txt");
        assert_eq!(
            one.translate(wev(Renamed, "/f.txt", Some("/.f.txt.hearth-tmp-1-2-3"))),
            Some(wev(Modified, "/f.txt", None))
        );
    }

    #[test]
    fn watch_frames_carry_event_and_type() {
        let ev = WatchEvent {
            event: WatchEventKind::Renamed,
            path: "/w/b".into(),
            is_dir: false,
            old_path: Some("/w/a".into()),
        };
        // `Event` has no getters; its wire form is what clients see.
        let wire = format!("{:?}", watch_frame(7, &ev));
        for part in ["renamed", "/w/b", "/w/a", "old_path", "is_dir", "7"] {
            assert!(wire.contains(part), "{part} missing from {wire}");
        }
    }
}
