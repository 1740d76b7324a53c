//! Snapshot files node to node, over the API listener's `/internal/v1`
//! routes, which answer only requests a node signed (anything else is
//! 404): the source lists a paused sandbox's snapshot (each file's size,
//! SHA-256 and data extents, so holes in a sparse disk are never sent) and
//! serves byte ranges of it; the puller fetches each extent in pieces of
//! at most [`PIECE`] into a file of the right size, records each piece
//! when it is written (a pull cut short resumes where it stopped), and
//! checks every file's digest before the snapshot counts. The digest is a
//! SHA-256 over each data extent's bounds and bytes: what was sent, in
//! full, and where (the rest of both files is holes).

use std::io::{SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{forward, Forwarded};
use crate::core::error::Error;
use crate::core::model::NodeRecord;
use crate::core::nodes::peers::Owner;
use crate::core::Core;
use crate::error::ApiError;
use crate::routes::AppState;

/// The most one range request fetches: the unit a pull resumes from.
pub const PIECE: u64 = 32 << 20;

/// The most a piece's fetch holds before it writes.
const WRITE_RUN: usize = 4 << 20;

/// Tries per piece before a pull gives up (it can be resumed later).
const TRIES: u32 = 3;

/// One file of a snapshot as its source lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    /// Hex SHA-256 over the data extents (see the module).
    pub sha256: String,
    /// `[start, end)` byte ranges that hold data; the rest is holes.
    pub extents: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub files: Vec<FileEntry>,
}

/// The node-to-node routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/internal/v1/sandboxes/{id}/paused", get(manifest))
        .route("/internal/v1/sandboxes/{id}/paused/{name}", get(file))
        .route("/internal/v1/sandboxes/{id}/adopt", post(adopt))
        .route(
            "/internal/v1/sandboxes/{id}/replica",
            post(copy_replica).delete(delete_replica),
        )
        .layer(axum::middleware::from_fn(nodes_only))
}

/// Only another node (a request it signed) sees these routes, and only
/// for a sandbox id (never a path out of its directory).
async fn nodes_only(req: Request, next: Next) -> Response {
    let sandbox = req.uri().path().split('/').nth(4).unwrap_or_default();
    let id_ok = sandbox.starts_with("sbx_")
        && sandbox
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if req.extensions().get::<Forwarded>().is_none() || !id_ok {
        return ApiError::not_found("route").into_response();
    }
    next.run(req).await
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(anyhow::anyhow!("{e}"))
}

/// A file name of a snapshot directory: one plain path component.
fn plain(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// Lists a directory's regular files with their digests and extents.
pub fn list_dir(dir: &Path) -> std::io::Result<Manifest> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let f = std::fs::File::open(entry.path())?;
        let bytes = f.metadata()?.len();
        let extents = hearth_image::data_extents(&f, bytes)?;
        files.push(FileEntry {
            name,
            bytes,
            sha256: digest(&f, &extents)?,
            extents,
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Manifest { files })
}

/// SHA-256 over each extent's bounds (big-endian) and bytes.
fn digest(f: &std::fs::File, extents: &[(u64, u64)]) -> std::io::Result<String> {
    use std::os::unix::fs::FileExt;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for &(start, end) in extents {
        h.update(start.to_be_bytes());
        h.update(end.to_be_bytes());
        let mut at = start;
        while at < end {
            let n = buf.len().min((end - at) as usize);
            f.read_exact_at(&mut buf[..n], at)?;
            h.update(&buf[..n]);
            at += n as u64;
        }
    }
    Ok(format!("{:x}", h.finalize()))
}

async fn manifest(
    State(core): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let dir = core.paused_dir(&id);
    let listed = tokio::task::spawn_blocking(move || list_dir(&dir))
        .await
        .map_err(internal)?;
    match listed {
        Ok(m) if !m.files.is_empty() => Ok(axum::Json(m).into_response()),
        Ok(_) => Err(ApiError::not_found("paused snapshot")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ApiError::not_found("paused snapshot"))
        }
        Err(e) => Err(internal(e)),
    }
}

/// `Range: bytes=<start>-<end>` (inclusive end), as this module sends it.
fn range_of(req: &Request) -> Option<(u64, u64)> {
    let v = req.headers().get(header::RANGE)?.to_str().ok()?;
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    (a <= b).then_some((a, b + 1))
}

async fn file(
    State(core): State<AppState>,
    UrlPath((id, name)): UrlPath<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    if !plain(&name) {
        return Err(ApiError::not_found("file"));
    }
    let path = core.paused_dir(&id).join(&name);
    let mut f = tokio::fs::File::open(&path)
        .await
        .map_err(|_| ApiError::not_found("file"))?;
    let len = f.metadata().await.map_err(internal)?.len();
    let (start, end) = range_of(&req).unwrap_or((0, len));
    if end > len {
        return Err(ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range_not_satisfiable",
            format!("{name} has {len} bytes"),
        ));
    }
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    f.seek(SeekFrom::Start(start)).await.map_err(internal)?;
    let stream = tokio_util::io::ReaderStream::new(f.take(end - start));
    let mut resp = Body::from_stream(stream).into_response();
    *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    if let Ok(v) = HeaderValue::from_str(&(end - start).to_string()) {
        resp.headers_mut().insert(header::CONTENT_LENGTH, v);
    }
    Ok(resp)
}

#[derive(Debug, Deserialize)]
struct AdoptQuery {
    from: String,
}

/// Copies paused sandbox `id`'s snapshot from node `from` into `dest`
/// (a move's and a copy's each their own, as both may run at once); that
/// node.
async fn pull_paused(
    core: &Core,
    id: &str,
    from: &str,
    dest: &Path,
) -> Result<NodeRecord, ApiError> {
    let node = match core.live_node(from).await.map_err(Error::from)? {
        Owner::Node(n) => n,
        Owner::Here => return Err(ApiError::not_found("node")),
    };
    let path = format!("/internal/v1/sandboxes/{id}/paused");
    pull(core, &node, &path, dest).await?;
    Ok(node)
}

/// Copies paused sandbox `id`'s snapshot from node `from` and takes the
/// sandbox over.
async fn adopt(
    State(core): State<AppState>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<AdoptQuery>,
) -> Result<Response, ApiError> {
    let node = pull_paused(&core, &id, &q.from, &core.incoming_dir(&id)).await?;
    let rec = core.adopt_moved(&id, &node.id).await?;
    Ok(
        axum::Json(serde_json::json!({ "id": rec.id, "state": rec.state.as_str() }))
            .into_response(),
    )
}

/// Copies paused sandbox `id`'s snapshot from node `from` as a replica
/// (`cluster::replicas`).
async fn copy_replica(
    State(core): State<AppState>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<AdoptQuery>,
) -> Result<Response, ApiError> {
    let incoming = core.replica_dir(&id).with_extension("partial");
    pull_paused(&core, &id, &q.from, &incoming).await?;
    let dest = core.replica_dir(&id);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(internal)?;
    }
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&incoming, &dest).map_err(internal)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_replica(State(core): State<AppState>, UrlPath(id): UrlPath<String>) -> Response {
    let _ = std::fs::remove_dir_all(core.replica_dir(&id));
    StatusCode::NO_CONTENT.into_response()
}

/// A signed GET to another node, its answer's status checked.
async fn get_from(
    core: &Core,
    node: &NodeRecord,
    path: &str,
    range: Option<(u64, u64)>,
) -> Result<http::Response<hyper::body::Incoming>, String> {
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    if let Some((a, b)) = range {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes={a}-{}", b - 1)) {
            req.headers_mut().insert(header::RANGE, v);
        }
    }
    let resp = forward::send(core, node, &node.api_url, None, req).await?;
    if !resp.status().is_success() {
        return Err(format!("{path}: {}", resp.status()));
    }
    Ok(resp)
}

/// Copies the snapshot that `node` lists at `path` into `dest`, resuming
/// a copy cut short, and checks every file. The pieces written are noted
/// in `<file>.pieces`, one start offset per line.
pub async fn pull(core: &Core, node: &NodeRecord, path: &str, dest: &Path) -> Result<(), ApiError> {
    let fail = |why: String| {
        tracing::warn!(node_id = %node.id, path, error = %why, "snapshot pull failed");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "transfer_failed",
            format!("copying the snapshot from node {}: {why}", node.id),
        )
    };
    let resp = get_from(core, node, path, None).await.map_err(fail)?;
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(e.to_string()))?
        .to_bytes();
    let manifest: Manifest =
        serde_json::from_slice(&body).map_err(|e| fail(format!("bad listing: {e}")))?;
    std::fs::create_dir_all(dest).map_err(internal)?;
    for entry in &manifest.files {
        if !plain(&entry.name) {
            return Err(fail(format!("bad file name {:?}", entry.name)));
        }
        let file = dest.join(&entry.name);
        let log = dest.join(format!("{}.pieces", entry.name));
        let done = pieces_done(&log);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&file)
            .map_err(internal)?;
        f.set_len(entry.bytes).map_err(internal)?;
        let f = Arc::new(std::sync::Mutex::new(f));
        for (start, end) in pieces(&entry.extents) {
            if done.contains(&start) {
                continue;
            }
            let url = format!("{path}/{}", entry.name);
            let mut tries = 0;
            loop {
                match fetch_piece(core, node, &url, start, end, &f).await {
                    Ok(()) => break,
                    Err(e) if tries + 1 < TRIES => {
                        tries += 1;
                        tracing::debug!(error = %e, tries, "piece retried");
                        tokio::time::sleep(std::time::Duration::from_millis(
                            200 * u64::from(tries),
                        ))
                        .await;
                    }
                    Err(e) => return Err(fail(e)),
                }
            }
            note_piece(&log, start).map_err(internal)?;
        }
        let (want, path, extents) = (entry.sha256.clone(), file.clone(), entry.extents.clone());
        let got = tokio::task::spawn_blocking(move || {
            std::fs::File::open(&path).and_then(|f| digest(&f, &extents))
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        if got != want {
            // Start this file over next time.
            let _ = std::fs::remove_file(&file);
            let _ = std::fs::remove_file(&log);
            return Err(fail(format!("{} failed its checksum", entry.name)));
        }
    }
    for entry in &manifest.files {
        let _ = std::fs::remove_file(dest.join(format!("{}.pieces", entry.name)));
    }
    Ok(())
}

/// The extents cut into pieces of at most [`PIECE`] bytes.
fn pieces(extents: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(start, end) in extents {
        let mut at = start;
        while at < end {
            let to = (at + PIECE).min(end);
            out.push((at, to));
            at = to;
        }
    }
    out
}

fn pieces_done(log: &Path) -> std::collections::HashSet<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn note_piece(log: &PathBuf, start: u64) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    writeln!(f, "{start}")?;
    f.sync_data()
}

/// Fetches `[start, end)` of `url` and writes it at `start`.
async fn fetch_piece(
    core: &Core,
    node: &NodeRecord,
    url: &str,
    start: u64,
    end: u64,
    file: &Arc<std::sync::Mutex<std::fs::File>>,
) -> Result<(), String> {
    let resp = get_from(core, node, url, Some((start, end))).await?;
    let mut body = resp.into_body().into_data_stream();
    let mut at = start;
    // Written in runs of up to 4 MiB, not per network chunk.
    let mut run = Vec::with_capacity(WRITE_RUN);
    let mut run_at = start;
    loop {
        let chunk = match body.next().await {
            Some(c) => Some(c.map_err(|e| e.to_string())?),
            None => None,
        };
        if let Some(c) = &chunk {
            if at + c.len() as u64 > end {
                return Err(format!("{url}: more bytes than asked for"));
            }
            run.extend_from_slice(c);
            at += c.len() as u64;
        }
        if run.len() >= WRITE_RUN || (chunk.is_none() && !run.is_empty()) {
            let f = file.clone();
            let (bytes, offset) = (std::mem::take(&mut run), run_at);
            run_at += bytes.len() as u64;
            tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let f = f.lock().map_err(|e| e.to_string())?;
                f.write_all_at(&bytes, offset).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())??;
        }
        if chunk.is_none() {
            break;
        }
    }
    if at != end {
        return Err(format!("{url}: {} of {} bytes", at - start, end - start));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_routes_take_sandbox_ids_only() {
        use tower::ServiceExt;
        let app = Router::new()
            .route("/internal/v1/sandboxes/{id}/paused", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(nodes_only));
        let call = |path: &str, signed: bool| {
            let mut req = Request::builder()
                .uri(path)
                .body(Body::empty())
                .expect("request");
            if signed {
                req.extensions_mut().insert(Forwarded {
                    node_id: "node_x".into(),
                    client_ip: None,
                });
            }
            app.clone().oneshot(req)
        };
        let status = |r: Result<Response, std::convert::Infallible>| r.expect("answer").status();
        assert_eq!(
            status(call("/internal/v1/sandboxes/sbx_ab12/paused", true).await),
            200
        );
        assert_eq!(
            status(call("/internal/v1/sandboxes/sbx_ab12/paused", false).await),
            404
        );
        for bad in [
            "/internal/v1/sandboxes/%2E%2E/paused",
            "/internal/v1/sandboxes/..%2Fx/paused",
        ] {
            assert_eq!(status(call(bad, true).await), 404, "{bad}");
        }
    }

    #[test]
    fn pieces_cover_the_extents_and_names_stay_in_their_directory() {
        let p = pieces(&[(0, 10), (PIECE * 2, PIECE * 3 + 5)]);
        assert_eq!(
            p,
            vec![(0, 10), (PIECE * 2, PIECE * 3), (PIECE * 3, PIECE * 3 + 5)]
        );
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(!plain(bad), "{bad:?}");
        }
        assert!(plain("memory.bin"));
    }

    #[test]
    fn a_listing_names_sizes_digests_and_data_only() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("state"), b"hello").expect("write");
        let f = std::fs::File::create(dir.path().join("disk")).expect("disk");
        f.set_len(64 << 20).expect("sparse");
        {
            use std::os::unix::fs::FileExt;
            f.write_all_at(b"data", 8 << 20).expect("write");
        }
        std::fs::create_dir(dir.path().join("subdir")).expect("dir");
        let m = list_dir(dir.path()).expect("list");
        let names: Vec<&str> = m.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["disk", "state"]);
        let mut want = Sha256::new();
        want.update(0u64.to_be_bytes());
        want.update(5u64.to_be_bytes());
        want.update(b"hello");
        assert_eq!(m.files[1].sha256, format!("{:x}", want.finalize()));
        let disk = &m.files[0];
        assert_eq!(disk.bytes, 64 << 20);
        let data: u64 = disk.extents.iter().map(|(a, b)| b - a).sum();
        assert!(data < 1 << 20, "holes are not data: {:?}", disk.extents);
    }
}
