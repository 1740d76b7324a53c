//! File operations: streamed read, atomic writes (JSON or a streamed raw
//! body), list, stat, mkdir, remove, rename, tree and write-many.
//!
//! Every write lands in a temp file next to its target and is renamed over it,
//! so readers never see half a file and a failed or abandoned upload leaves the
//! target exactly as it was.

use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Json;
use bytes::Bytes;
use futures_util::StreamExt;
use hearth_agent_protocol::paths::{lexical_normalize, parse_guest_path};
use hearth_agent_protocol::{
    routes, Base64Bytes, ErrorCode, FileEntry, FileType, ListQuery, ListResponse, MkdirRequest,
    RawWriteQuery, RemoveRequest, RenameRequest, TreeNode, WriteFailure, WriteFileRequest,
    WriteManyRequest, WriteManyResponse, WriteResult,
};
use tokio::sync::mpsc;

use super::AgentRouter;
use crate::error::{HandlerError, HandlerResult};
use crate::extract::{JsonBody, QueryArgs, QueryPath};
use crate::stream::file_response;

/// Mode of a new file when the request names none and nothing is replaced.
const DEFAULT_FILE_MODE: u32 = 0o644;
/// Mode of a directory created by `mkdir` when the request names none.
const DEFAULT_DIR_MODE: u32 = 0o755;
/// Deepest `list`/`tree` walk accepted.
const MAX_DEPTH: u32 = 10;
const DEFAULT_LIST_DEPTH: u32 = 1;
const DEFAULT_TREE_DEPTH: u32 = 3;
/// Entries one `list`/`tree` answer may hold: a deep walk of `/` must not
/// grow the agent's memory without bound.
const MAX_ENTRIES: usize = 200_000;
/// Writes of a raw upload are batched this large: few syscalls, no fsync
/// (the host calls `/v1/sync` before snapshots).
const RAW_WRITE_BUFFER: usize = 1024 * 1024;
/// Body chunks in flight between the HTTP side and the blocking writer.
const RAW_CHANNEL_DEPTH: usize = 32;
/// Bytes of the target's name kept in a temp name, so the temp name stays
/// under the 255-byte limit of a file name.
const TEMP_NAME_KEEP: usize = 200;
/// Infix of temp file names; recognisable when a crash leaves one behind.
pub(crate) const TEMP_MARKER: &str = ".hearth-tmp-";
/// Paths no `..` spelling or symlinked parent may remove or rename.
const PROTECTED: [&str; 5] = ["/", "/proc", "/sys", "/dev", "/dev/pts"];

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

async fn write(JsonBody(req): JsonBody<WriteFileRequest>) -> HandlerResult<Json<WriteResult>> {
    blocking(move || write_one(&req)).await.map(Json)
}

async fn write_raw(
    QueryPath(path): QueryPath,
    QueryArgs(query): QueryArgs<RawWriteQuery>,
    body: Body,
) -> HandlerResult<Json<WriteResult>> {
    let mode = query.mode.as_deref().map(parse_octal_mode).transpose()?;
    let shown = display(&path);
    let (pending, file) = {
        let path = path.clone();
        blocking(move || PendingWrite::create(&path, mode)).await?
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

async fn mkdir(JsonBody(req): JsonBody<MkdirRequest>) -> HandlerResult<Json<FileEntry>> {
    let path = json_path(&req.path)?;
    let mode = check_mode(req.mode)?;
    blocking(move || make_dir(&path, mode)).await.map(Json)
}

async fn remove(JsonBody(req): JsonBody<RemoveRequest>) -> HandlerResult<Json<serde_json::Value>> {
    let path = json_path(&req.path)?;
    blocking(move || remove_path(&path, req.recursive)).await?;
    Ok(Json(serde_json::json!({})))
}

async fn rename(JsonBody(req): JsonBody<RenameRequest>) -> HandlerResult<Json<FileEntry>> {
    let from = json_path(&req.from)?;
    let to = json_path(&req.to)?;
    blocking(move || rename_path(&from, &to)).await.map(Json)
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
    JsonBody(req): JsonBody<WriteManyRequest>,
) -> HandlerResult<Json<WriteManyResponse>> {
    blocking(move || {
        let mut written = Vec::new();
        let mut failed = Vec::new();
        for file in req.files {
            match write_one(&file) {
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

/// True when `path` is, lexically, one of the paths that must never be
/// removed, renamed or archived wholesale.
pub(crate) fn is_protected(path: &Path) -> bool {
    let normal = lexical_normalize(path);
    PROTECTED.iter().any(|p| normal == Path::new(p))
}

pub(crate) fn file_type_of(meta: &Metadata) -> FileType {
    let ft = meta.file_type();
    if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_dir() {
        FileType::Dir
    } else if ft.is_file() {
        FileType::File
    } else {
        FileType::Other
    }
}

/// Describes `path` from its (lstat) metadata.
pub(crate) fn entry_for(path: &Path, meta: &Metadata) -> FileEntry {
    let file_type = file_type_of(meta);
    let symlink_target = (file_type == FileType::Symlink)
        .then(|| fs::read_link(path).ok().map(|t| display(&t)))
        .flatten();
    FileEntry {
        name: name_of(path),
        path: display(path),
        raw_path: path
            .to_str()
            .is_none()
            .then(|| Base64Bytes(path.as_os_str().as_bytes().to_vec())),
        file_type,
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        modified_at_ms: meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000,
        symlink_target,
    }
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| display(path))
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

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
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

/// Refuses destructive operations on `/`, kernel filesystems, and paths
/// ending in `.` or `..` (like `rm` does): `/workspace/../..` is `/`, and
/// `/a/b/..` would empty `/a` before failing on the final rmdir.
fn refuse_protected(path: &Path, op: &str) -> HandlerResult<()> {
    let last = last_component(path);
    if last == b"." || last == b".." {
        return Err(HandlerError::bad_request(format!(
            "refusing to {op} a path ending in '.' or '..': {}",
            path.display()
        )));
    }
    if is_protected(path) {
        return Err(HandlerError::bad_request(format!(
            "refusing to {op} {}",
            lexical_normalize(path).display()
        )));
    }
    // A symlinked parent can also spell a protected path (`/rootlink/proc`).
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
        if let Ok(real_parent) = parent.canonicalize() {
            let real = real_parent.join(name);
            if is_protected(&real) {
                return Err(HandlerError::bad_request(format!(
                    "refusing to {op} {}",
                    real.display()
                )));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- writes

fn write_one(req: &WriteFileRequest) -> HandlerResult<WriteResult> {
    let path = json_path(&req.path)?;
    let mode = check_mode(req.mode)?;
    let (pending, mut file) = PendingWrite::create(&path, mode)?;
    file.write_all(req.content.as_slice())
        .map_err(|e| HandlerError::io_op(&e, "write", &path))?;
    pending.commit(file)?;
    Ok(WriteResult {
        path: req.path.clone(),
        size_bytes: req.content.as_slice().len() as u64,
    })
}

/// A chunk of a raw upload, or the mark that the body ended normally. A
/// channel that closes without `End` means the upload was abandoned.
#[derive(Debug)]
enum RawChunk {
    Data(Bytes),
    End,
}

fn write_stream(
    pending: PendingWrite,
    file: File,
    mut rx: mpsc::Receiver<RawChunk>,
    path: &Path,
) -> HandlerResult<u64> {
    let mut out = BufWriter::with_capacity(RAW_WRITE_BUFFER, file);
    let mut total = 0u64;
    loop {
        match rx.blocking_recv() {
            Some(RawChunk::Data(data)) => {
                out.write_all(&data)
                    .map_err(|e| HandlerError::io_op(&e, "write", path))?;
                total += data.len() as u64;
            }
            Some(RawChunk::End) => break,
            None => {
                tracing::debug!(path = %path.display(), bytes = total, "raw upload abandoned");
                return Err(HandlerError::bad_request(
                    "upload ended before the body was complete",
                ));
            }
        }
    }
    let file = out
        .into_inner()
        .map_err(|e| HandlerError::io_op(e.error(), "write", path))?;
    pending.commit(file)?;
    Ok(total)
}

/// A temp file next to the target of a write; removed on drop unless the
/// write was committed by renaming it over the target.
#[derive(Debug)]
struct PendingWrite {
    target: PathBuf,
    temp: PathBuf,
    mode: u32,
    owner: Option<(u32, u32)>,
    committed: bool,
}

impl PendingWrite {
    /// Creates parents and the temp file, and decides the final mode and
    /// owner from the file being replaced, if any.
    fn create(path: &Path, mode: Option<u32>) -> HandlerResult<(PendingWrite, File)> {
        let last = last_component(path);
        if last.is_empty()
            || last == b"."
            || last == b".."
            || path.as_os_str().as_bytes().ends_with(b"/")
        {
            return Err(coded(
                ErrorCode::InvalidPath,
                path,
                "names a directory, not a file",
            ));
        }
        let target = resolve_symlink(path);
        let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
            return Err(coded(
                ErrorCode::InvalidPath,
                path,
                "names a directory, not a file",
            ));
        };
        create_parents(parent)?;
        let existing = match fs::metadata(&target) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(HandlerError::io(&e, path)),
        };
        if existing.as_ref().is_some_and(Metadata::is_dir) {
            return Err(coded(ErrorCode::IsADirectory, path, "is a directory"));
        }
        let mode = mode
            .or(existing.as_ref().map(|m| m.mode() & 0o7777))
            .unwrap_or(DEFAULT_FILE_MODE);
        // Root replacing a user's file must not hand it to root.
        let owner = existing
            .as_ref()
            .filter(|_| running_as_root())
            .map(|m| (m.uid(), m.gid()));
        let (temp, file) = create_temp(parent, name)?;
        Ok((
            PendingWrite {
                target,
                temp,
                mode,
                owner,
                committed: false,
            },
            file,
        ))
    }

    /// Applies owner and mode, then renames the temp file over the target.
    fn commit(mut self, file: File) -> HandlerResult<()> {
        if let Some((uid, gid)) = self.owner {
            // Before chmod: chown clears set-id bits.
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                .map_err(|e| HandlerError::io_op(&e, "chown", &self.target))?;
        }
        // fchmod is not subject to the umask, so the mode is exactly as asked.
        file.set_permissions(fs::Permissions::from_mode(self.mode))
            .map_err(|e| HandlerError::io_op(&e, "chmod", &self.target))?;
        drop(file);
        fs::rename(&self.temp, &self.target)
            .map_err(|e| HandlerError::io_op(&e, "replace", &self.target))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = fs::remove_file(&self.temp) {
                tracing::warn!(temp = %self.temp.display(), error = %e, "could not remove temp file");
            }
        }
    }
}

/// Writing through a symlink updates the file it points at, like `>` in a
/// shell; a dangling link is replaced by the new file.
fn resolve_symlink(path: &Path) -> PathBuf {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

/// `mkdir -p` for the parents of a file being written or renamed.
fn create_parents(dir: &Path) -> HandlerResult<()> {
    fs::create_dir_all(dir).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            // create_dir_all reports a file where a directory should be this way.
            coded(ErrorCode::NotADirectory, dir, "not a directory")
        } else {
            HandlerError::io_op(&e, "create parent", dir)
        }
    })
}

fn create_temp(dir: &Path, name: &OsStr) -> HandlerResult<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let keep = &name.as_bytes()[..name.len().min(TEMP_NAME_KEEP)];
    for _ in 0..8 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let suffix = format!(
            "{TEMP_MARKER}{:x}-{:x}-{nanos:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut temp_name = Vec::with_capacity(1 + keep.len() + suffix.len());
        temp_name.push(b'.');
        temp_name.extend_from_slice(keep);
        temp_name.extend_from_slice(suffix.as_bytes());
        let temp = dir.join(OsStr::from_bytes(&temp_name));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
        {
            Ok(f) => return Ok((temp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(HandlerError::io_op(&e, "create temp file in", dir)),
        }
    }
    Err(HandlerError::internal("no free temp file name"))
}

// ---------------------------------------------------------------- other operations

fn list_entries(root: &Path, depth: u32) -> HandlerResult<Vec<FileEntry>> {
    let meta = fs::metadata(root).map_err(|e| HandlerError::io(&e, root))?;
    if !meta.is_dir() {
        return Err(coded(ErrorCode::NotADirectory, root, "not a directory"));
    }
    let mut found = Vec::new();
    walk(root, depth, true, &mut found)?;
    found.sort_by(|(a, _), (b, _)| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    Ok(found.into_iter().map(|(_, e)| e).collect())
}

fn walk(
    dir: &Path,
    remaining: u32,
    top: bool,
    found: &mut Vec<(PathBuf, FileEntry)>,
) -> HandlerResult<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if top => return Err(HandlerError::io(&e, dir)),
        Err(e) => {
            // One unreadable subdirectory should not fail the whole listing.
            tracing::debug!(dir = %dir.display(), error = %e, "skipping unreadable directory");
            return Ok(());
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // Gone between readdir and lstat: nothing to report.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if found.len() >= MAX_ENTRIES {
            return Err(HandlerError::bad_request(format!(
                "more than {MAX_ENTRIES} entries; ask for a smaller depth"
            )));
        }
        found.push((path.clone(), entry_for(&path, &meta)));
        // lstat: a symlinked directory is reported, never entered.
        if meta.is_dir() && remaining > 1 {
            walk(&path, remaining - 1, false, found)?;
        }
    }
    Ok(())
}

fn tree_node(
    path: &Path,
    meta: &Metadata,
    remaining: u32,
    count: &mut usize,
) -> HandlerResult<TreeNode> {
    *count += 1;
    if *count > MAX_ENTRIES {
        return Err(HandlerError::bad_request(format!(
            "more than {MAX_ENTRIES} entries; ask for a smaller depth"
        )));
    }
    let children = if meta.is_dir() && remaining > 0 {
        match fs::read_dir(path) {
            Ok(entries) => {
                let mut kids: Vec<(PathBuf, Metadata)> = entries
                    .flatten()
                    .filter_map(|e| {
                        let p = e.path();
                        fs::symlink_metadata(&p).ok().map(|m| (p, m))
                    })
                    .collect();
                kids.sort_by(|(a, _), (b, _)| {
                    a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes())
                });
                let mut nodes = Vec::with_capacity(kids.len());
                for (p, m) in kids {
                    nodes.push(tree_node(&p, &m, remaining - 1, count)?);
                }
                Some(nodes)
            }
            Err(e) if *count == 1 => return Err(HandlerError::io(&e, path)),
            Err(e) => {
                tracing::debug!(dir = %path.display(), error = %e, "skipping unreadable directory");
                None
            }
        }
    } else {
        None
    };
    Ok(TreeNode {
        name: name_of(path),
        path: display(path),
        file_type: file_type_of(meta),
        size: meta.len(),
        children,
    })
}

fn make_dir(path: &Path, mode: Option<u32>) -> HandlerResult<FileEntry> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            let meta = fs::symlink_metadata(path).map_err(|e| HandlerError::io(&e, path))?;
            return Ok(entry_for(path, &meta));
        }
        Ok(_) => {
            return Err(coded(
                ErrorCode::AlreadyExists,
                path,
                "exists and is not a directory",
            ))
        }
        Err(_) => {}
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode.unwrap_or(DEFAULT_DIR_MODE))
        .create(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                coded(
                    ErrorCode::NotADirectory,
                    path,
                    "a parent is not a directory",
                )
            } else {
                HandlerError::io_op(&e, "mkdir", path)
            }
        })?;
    if let Some(m) = mode {
        // The builder's mode went through the umask; the caller asked for exact bits.
        fs::set_permissions(path, fs::Permissions::from_mode(m))
            .map_err(|e| HandlerError::io_op(&e, "chmod", path))?;
    }
    let meta = fs::symlink_metadata(path).map_err(|e| HandlerError::io(&e, path))?;
    Ok(entry_for(path, &meta))
}

fn remove_path(path: &Path, recursive: bool) -> HandlerResult<()> {
    refuse_protected(path, "remove")?;
    let meta = fs::symlink_metadata(path).map_err(|e| HandlerError::io(&e, path))?;
    let result = if meta.is_dir() {
        if recursive {
            fs::remove_dir_all(path)
        } else {
            fs::remove_dir(path)
        }
    } else {
        fs::remove_file(path)
    };
    result.map_err(|e| HandlerError::io_op(&e, "remove", path))
}

fn rename_path(from: &Path, to: &Path) -> HandlerResult<FileEntry> {
    refuse_protected(from, "rename")?;
    refuse_protected(to, "replace")?;
    fs::symlink_metadata(from).map_err(|e| HandlerError::io(&e, from))?;
    if let Some(parent) = to.parent() {
        create_parents(parent)?;
    }
    fs::rename(from, to)
        .map_err(|e| HandlerError::io_op(&e, &format!("rename {} to", from.display()), to))?;
    let meta = fs::symlink_metadata(to).map_err(|e| HandlerError::io(&e, to))?;
    Ok(entry_for(to, &meta))
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

    #[test]
    fn root_spellings_are_refused() {
        for p in [
            "/",
            "/workspace/../..",
            "/tmp/..",
            "/proc",
            "/dev/./pts",
            "/a/..",
        ] {
            let err = refuse_protected(Path::new(p), "remove").unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest, "{p}");
        }
        assert!(refuse_protected(Path::new("/tmp/x"), "remove").is_ok());
    }

    #[test]
    fn failed_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        let (pending, _file) = PendingWrite::create(&target, None).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(pending);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(!target.exists());
    }
}
