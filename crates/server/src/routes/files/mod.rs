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
use crate::routes::Auth;

mod read;
#[cfg(test)]
mod tests;
mod write;

use read::*;
pub use write::WriteBody;
use write::*;

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
