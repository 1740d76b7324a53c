//! File operations: streamed read, atomic writes (JSON or a streamed raw
//! body), list, stat, mkdir, remove, rename, tree and write-many.
//!
//! This module holds the routes, the handlers and the request checks they
//! share; `atomic` owns writes, `listing` describes and walks paths, and
//! `entries` makes, removes and renames directory entries.

mod atomic;
mod entries;
mod listing;
mod owner;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Json;
use futures_util::StreamExt;
use hearth_agent_protocol::paths::parse_guest_path;
use hearth_agent_protocol::{
    routes, ErrorCode, FileEntry, ListQuery, ListResponse, MkdirRequest, RawWriteQuery,
    RemoveRequest, RenameRequest, TreeNode, WriteFailure, WriteFileRequest, WriteManyRequest,
    WriteManyResponse, WriteResult,
};
use tokio::sync::mpsc;

use super::{AgentRouter, AgentState};
use crate::error::{HandlerError, HandlerResult};
use crate::extract::{JsonBody, QueryArgs, QueryPath};
use crate::stream::file_response;
use atomic::{write_one, write_stream, PendingWrite, RawChunk};
pub(crate) use entries::is_protected;
use entries::{make_dir, remove_path, rename_path};
use listing::{entry_for, list_entries, tree_node};
use owner::NewOwner;

/// Deepest `list`/`tree` walk accepted.
const MAX_DEPTH: u32 = 10;
const DEFAULT_LIST_DEPTH: u32 = 1;
const DEFAULT_TREE_DEPTH: u32 = 3;
/// Body chunks in flight between the HTTP side and the blocking writer.
const RAW_CHANNEL_DEPTH: usize = 32;

const OCTET_STREAM: &str = "application/octet-stream";

pub fn routes() -> AgentRouter {
    AgentRouter::new()
        .route(routes::FILES_READ, get(read))
        .route(routes::FILES_WRITE, post(write))
        .route(routes::FILES_RAW, put(write_raw))
        .route(routes::FILES_LIST, get(list))
        .route(routes::FILES_STAT, get(stat))
        .route(routes::FILES_MKDIR, post(mkdir))
        .route(routes::FILES_REMOVE, post(remove))
        .route(routes::FILES_RENAME, post(rename))
        .route(routes::FILES_TREE, get(tree))
        .route(routes::FILES_WRITE_MANY, post(write_many))
}

// ---------------------------------------------------------------- handlers

async fn read(QueryPath(path): QueryPath) -> HandlerResult<Response> {
    let meta = tokio::fs::metadata(&path)
        .await
        .map_err(|e| HandlerError::io(&e, &path))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        return Err(coded(ErrorCode::IsADirectory, &path, "is a directory"));
    }
    // A FIFO would block the read until some writer shows up, and a socket
    // cannot be opened at all; devices (e.g. /dev/urandom) are the caller's call.
    if ft.is_fifo() || ft.is_socket() {
        return Err(coded(ErrorCode::BadRequest, &path, "not a regular file"));
    }
    let file = std::fs::File::open(&path).map_err(|e| HandlerError::io(&e, &path))?;
    // Devices and /proc files report sizes that are not their content's.
    let len = ft.is_file().then_some(meta.len()).filter(|&l| l > 0);
    Ok(file_response(file, len, OCTET_STREAM))
}

async fn write(
    agent: AgentState,
    JsonBody(req): JsonBody<WriteFileRequest>,
) -> HandlerResult<Json<WriteResult>> {
    let user = NewOwner::of(&agent);
    blocking(move || write_one(&req, user)).await.map(Json)
}

async fn write_raw(
    agent: AgentState,
    QueryPath(path): QueryPath,
    QueryArgs(query): QueryArgs<RawWriteQuery>,
    body: Body,
) -> HandlerResult<Json<WriteResult>> {
    let mode = query.mode.as_deref().map(parse_octal_mode).transpose()?;
    let shown = display(&path);
    let user = NewOwner::of(&agent);
    let (pending, file) = {
        let path = path.clone();
        blocking(move || PendingWrite::create(&path, mode, user)).await?
    };
    let (tx, rx) = mpsc::channel(RAW_CHANNEL_DEPTH);
    // The writer owns the temp file; if this handler is dropped (the client
    // reset the stream) the channel closes without `End` and the writer
    // removes the temp file, leaving the target untouched.
    let writer = tokio::task::spawn_blocking(move || write_stream(pending, file, rx, &path));
    let mut body = body.into_data_stream();
    let mut interrupted = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(data) => {
                if tx.send(RawChunk::Data(data)).await.is_err() {
                    // The writer failed; its result says why.
                    break;
                }
            }
            Err(e) => {
                interrupted = Some(e);
                break;
            }
        }
    }
    if interrupted.is_none() {
        let _ = tx.send(RawChunk::End).await;
    }
    drop(tx);
    let size_bytes = writer
        .await
        .map_err(|e| HandlerError::internal(format!("write task: {e}")))??;
    if let Some(e) = interrupted {
        return Err(HandlerError::bad_request(format!(
            "upload interrupted: {e}"
        )));
    }
    Ok(Json(WriteResult {
        path: shown,
        size_bytes,
    }))
}

async fn list(
    QueryPath(path): QueryPath,
    QueryArgs(query): QueryArgs<ListQuery>,
) -> HandlerResult<Json<ListResponse>> {
    let depth = check_depth(query.depth, DEFAULT_LIST_DEPTH)?;
    let shown = display(&path);
    let entries = blocking(move || list_entries(&path, depth)).await?;
    Ok(Json(ListResponse {
        path: shown,
        entries,
    }))
}

async fn stat(QueryPath(path): QueryPath) -> HandlerResult<Json<FileEntry>> {
    blocking(move || {
        let meta = fs::symlink_metadata(&path).map_err(|e| HandlerError::io(&e, &path))?;
        Ok(entry_for(&path, &meta))
    })
    .await
    .map(Json)
}

async fn mkdir(
    agent: AgentState,
    JsonBody(req): JsonBody<MkdirRequest>,
) -> HandlerResult<Json<FileEntry>> {
    let path = json_path(&req.path)?;
    let mode = check_mode(req.mode)?;
    let user = NewOwner::of(&agent);
    blocking(move || make_dir(&path, mode, user))
        .await
        .map(Json)
}

async fn remove(JsonBody(req): JsonBody<RemoveRequest>) -> HandlerResult<Json<serde_json::Value>> {
    let path = json_path(&req.path)?;
    blocking(move || remove_path(&path, req.recursive)).await?;
    Ok(Json(serde_json::json!({})))
}

async fn rename(
    agent: AgentState,
    JsonBody(req): JsonBody<RenameRequest>,
) -> HandlerResult<Json<FileEntry>> {
    let from = json_path(&req.from)?;
    let to = json_path(&req.to)?;
    let user = NewOwner::of(&agent);
    blocking(move || rename_path(&from, &to, user))
        .await
        .map(Json)
}

async fn tree(
    QueryPath(path): QueryPath,
    QueryArgs(query): QueryArgs<ListQuery>,
) -> HandlerResult<Json<TreeNode>> {
    let depth = check_depth(query.depth, DEFAULT_TREE_DEPTH)?;
    blocking(move || {
        let meta = fs::metadata(&path).map_err(|e| HandlerError::io(&e, &path))?;
        let mut count = 0;
        tree_node(&path, &meta, depth, &mut count)
    })
    .await
    .map(Json)
}

async fn write_many(
    agent: AgentState,
    JsonBody(req): JsonBody<WriteManyRequest>,
) -> HandlerResult<Json<WriteManyResponse>> {
    let user = NewOwner::of(&agent);
    blocking(move || {
        let mut written = Vec::new();
        let mut failed = Vec::new();
        for file in req.files {
            match write_one(&file, user) {
                Ok(r) => written.push(r),
                Err(e) => failed.push(WriteFailure {
                    path: file.path,
                    error: e.to_wire(),
                }),
            }
        }
        Ok(WriteManyResponse { written, failed })
    })
    .await
    .map(Json)
}

// ---------------------------------------------------------------- shared helpers

/// A path from a JSON body, validated like a query path.
pub(crate) fn json_path(s: &str) -> HandlerResult<PathBuf> {
    Ok(parse_guest_path(s.as_bytes())?)
}

/// Runs blocking filesystem work off the runtime threads.
pub(crate) async fn blocking<T, F>(f: F) -> HandlerResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> HandlerResult<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HandlerError::internal(format!("file task: {e}")))?
}

/// A path as the host sees it in JSON (lossy when not UTF-8).
pub(crate) fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// An error about `path` with a fixed description.
pub(crate) fn coded(code: ErrorCode, path: &Path, what: &str) -> HandlerError {
    HandlerError::new(code, format!("{}: {what}", path.display()))
}

/// Permission bits from an optional request field: at most 0o7777.
fn check_mode(mode: Option<u32>) -> HandlerResult<Option<u32>> {
    match mode {
        Some(m) if m > 0o7777 => Err(HandlerError::bad_request(format!(
            "mode {m:#o} has bits beyond 0o7777"
        ))),
        other => Ok(other),
    }
}

/// `"644"`, `"0755"` or `"0o755"` as permission bits.
fn parse_octal_mode(s: &str) -> HandlerResult<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| HandlerError::bad_request(format!("invalid octal mode {s:?}")))?;
    check_mode(Some(mode)).map(|_| mode)
}

fn check_depth(depth: Option<u32>, default: u32) -> HandlerResult<u32> {
    match depth.unwrap_or(default) {
        d @ 1..=MAX_DEPTH => Ok(d),
        d => Err(HandlerError::bad_request(format!(
            "depth must be between 1 and {MAX_DEPTH}, got {d}"
        ))),
    }
}

/// The last component as spelled in the request (after trailing slashes):
/// `Path::file_name` hides a trailing `.` and `..`, which matter here.
fn last_component(path: &Path) -> &[u8] {
    let bytes = path.as_os_str().as_bytes();
    let end = bytes.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    let trimmed = &bytes[..end];
    let start = trimmed
        .iter()
        .rposition(|&b| b == b'/')
        .map_or(0, |i| i + 1);
    &trimmed[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_modes_parse_with_or_without_prefix() {
        assert_eq!(parse_octal_mode("644").ok(), Some(0o644));
        assert_eq!(parse_octal_mode("0755").ok(), Some(0o755));
        assert_eq!(parse_octal_mode("0o4755").ok(), Some(0o4755));
        assert!(parse_octal_mode("9").is_err());
        assert!(parse_octal_mode("17777").is_err());
        assert!(parse_octal_mode("").is_err());
    }

    #[test]
    fn depth_is_bounded() {
        assert_eq!(check_depth(None, 3).ok(), Some(3));
        assert_eq!(check_depth(Some(10), 1).ok(), Some(10));
        assert_eq!(
            check_depth(Some(0), 1).map_err(|e| e.code),
            Err(ErrorCode::BadRequest)
        );
        assert_eq!(
            check_depth(Some(11), 1).map_err(|e| e.code),
            Err(ErrorCode::BadRequest)
        );
    }

    #[test]
    fn last_component_keeps_dot_and_dotdot() {
        assert_eq!(last_component(Path::new("/a/b/..")), b"..");
        assert_eq!(last_component(Path::new("/a/b/./")), b".");
        assert_eq!(last_component(Path::new("/a/b//")), b"b");
        assert_eq!(last_component(Path::new("/")), b"");
    }
}
