//! File calls: streamed read and raw upload, atomic JSON writes, list, stat,
//! mkdir, remove, rename, tree, write-many, tar.gz archives and watches.
//!
//! Paths travel in query strings percent-encoded from raw bytes, so names that
//! are not UTF-8 stay reachable (the `*_raw_path` variants).

use std::io;
use std::pin::pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use hearth_agent_protocol::{
    routes, ArchiveRequest, FileEntry, ListResponse, MkdirRequest, RemoveRequest, RenameRequest,
    TreeNode, WatchEvent, WriteFileRequest, WriteManyRequest, WriteManyResponse, WriteResult,
};
use http::Method;
use http_body::Frame;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio::sync::mpsc::OwnedPermit;

use crate::body::channel_body;
use crate::{
    full, json_request, read_json, AgentClient, AgentClientError, ByteStream, ClientResult,
    NdjsonStream,
};

/// Read size when streaming an upload from an `AsyncRead`.
const UPLOAD_CHUNK: usize = 256 * 1024;

const OCTET_STREAM: &str = "application/octet-stream";

/// Percent-encodes raw bytes for a query value (`/` kept as is).
pub fn encode_query_bytes(bytes: &[u8]) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::percent_encode(bytes, SET).to_string()
}

fn path_uri(route: &str, path: &[u8]) -> String {
    format!("{route}?path={}", encode_query_bytes(path))
}

/// Largest file [`AgentClient::read_file_bytes`] reads into memory.
pub const MAX_READ_FILE_BYTES: usize = 256 << 20;

impl AgentClient {
    /// Streams the file at `path`.
    pub async fn read_file(&self, path: &str) -> ClientResult<ByteStream> {
        self.read_file_raw_path(path.as_bytes()).await
    }

    /// Like [`AgentClient::read_file`], for a path that may not be UTF-8.
    pub async fn read_file_raw_path(&self, path: &[u8]) -> ClientResult<ByteStream> {
        let resp = self
            .send_raw(
                Method::GET,
                &path_uri(routes::FILES_READ, path),
                OCTET_STREAM,
                full(Bytes::new()),
            )
            .await?;
        Ok(ByteStream::new(resp.into_body()))
    }

    /// The whole file at `path`, in memory (at most
    /// [`MAX_READ_FILE_BYTES`]; stream [`AgentClient::read_file`] for more).
    pub async fn read_file_bytes(&self, path: &str) -> ClientResult<Bytes> {
        self.read_file(path)
            .await?
            .collect(MAX_READ_FILE_BYTES)
            .await
    }

    /// Writes a file atomically from a JSON body (content in base64; the
    /// agent caps JSON bodies, so large files go through
    /// [`AgentClient::write_file_raw`]).
    pub async fn write_file(&self, req: &WriteFileRequest) -> ClientResult<WriteResult> {
        self.call(Method::POST, routes::FILES_WRITE, Some(req))
            .await
    }

    /// Writes a file atomically from everything `reader` yields, streamed in
    /// chunks. If `reader` fails, or this future is dropped before the end,
    /// the agent sees the upload abort and leaves the target untouched.
    pub async fn write_file_raw<R>(
        &self,
        path: &str,
        mode: Option<u32>,
        reader: R,
    ) -> ClientResult<WriteResult>
    where
        R: AsyncRead + Send + 'static,
    {
        let chunks = tokio_util::io::ReaderStream::with_capacity(reader, UPLOAD_CHUNK);
        self.write_file_raw_stream(path, mode, chunks).await
    }

    /// Like [`AgentClient::write_file_raw`], from a stream of chunks: the
    /// zero-copy form when the caller already holds `Bytes`.
    pub async fn write_file_raw_stream<S>(
        &self,
        path: &str,
        mode: Option<u32>,
        chunks: S,
    ) -> ClientResult<WriteResult>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + 'static,
    {
        let (tx, body) = channel_body();
        let uri = raw_write_uri(path.as_bytes(), mode);
        let mut send = pin!(self.send_raw(Method::PUT, &uri, OCTET_STREAM, body));
        let mut upload = pin!(pump(chunks, tx));
        let mut uploaded = false;
        let resp = loop {
            tokio::select! {
                resp = &mut send => break resp?,
                done = &mut upload, if !uploaded => {
                    uploaded = true;
                    done.map_err(AgentClientError::Stream)?;
                }
            }
        };
        read_json(resp).await
    }

    /// Writes `data` as a raw (non-JSON) body: no base64, no JSON size cap.
    pub async fn write_file_raw_bytes(
        &self,
        path: &str,
        mode: Option<u32>,
        data: Bytes,
    ) -> ClientResult<WriteResult> {
        let uri = raw_write_uri(path.as_bytes(), mode);
        let resp = self
            .send_raw(Method::PUT, &uri, OCTET_STREAM, full(data))
            .await?;
        read_json(resp).await
    }

    /// Entries under the directory `path`, `depth` levels deep (default 1).
    pub async fn list(&self, path: &str, depth: Option<u32>) -> ClientResult<ListResponse> {
        self.list_raw_path(path.as_bytes(), depth).await
    }

    /// Like [`AgentClient::list`], for a path that may not be UTF-8.
    pub async fn list_raw_path(
        &self,
        path: &[u8],
        depth: Option<u32>,
    ) -> ClientResult<ListResponse> {
        let mut uri = path_uri(routes::FILES_LIST, path);
        if let Some(d) = depth {
            uri.push_str(&format!("&depth={d}"));
        }
        self.call::<(), _>(Method::GET, &uri, None).await
    }

    /// Metadata of `path` itself (a symlink is described, not followed).
    pub async fn stat(&self, path: &str) -> ClientResult<FileEntry> {
        self.stat_raw_path(path.as_bytes()).await
    }

    /// Like [`AgentClient::stat`], for a path that may not be UTF-8.
    pub async fn stat_raw_path(&self, path: &[u8]) -> ClientResult<FileEntry> {
        self.call::<(), _>(Method::GET, &path_uri(routes::FILES_STAT, path), None)
            .await
    }

    /// `mkdir -p`; an existing directory is fine. Returns the directory.
    pub async fn mkdir(&self, path: &str, mode: Option<u32>) -> ClientResult<FileEntry> {
        let req = MkdirRequest {
            path: path.to_string(),
            mode,
        };
        self.call(Method::POST, routes::FILES_MKDIR, Some(&req))
            .await
    }

    /// Removes a file, symlink or empty directory; any directory with
    /// `recursive`.
    pub async fn remove(&self, path: &str, recursive: bool) -> ClientResult<()> {
        let req = RemoveRequest {
            path: path.to_string(),
            recursive,
        };
        self.call::<_, serde_json::Value>(Method::POST, routes::FILES_REMOVE, Some(&req))
            .await
            .map(|_| ())
    }

    /// Renames `from` to `to`, creating the parents of `to`. Returns `to`.
    pub async fn rename(&self, from: &str, to: &str) -> ClientResult<FileEntry> {
        let req = RenameRequest {
            from: from.to_string(),
            to: to.to_string(),
        };
        self.call(Method::POST, routes::FILES_RENAME, Some(&req))
            .await
    }

    /// The tree under `path`, `depth` levels deep (default 3).
    pub async fn tree(&self, path: &str, depth: Option<u32>) -> ClientResult<TreeNode> {
        let mut uri = path_uri(routes::FILES_TREE, path.as_bytes());
        if let Some(d) = depth {
            uri.push_str(&format!("&depth={d}"));
        }
        self.call::<(), _>(Method::GET, &uri, None).await
    }

    /// Writes several files, each atomically; failures are reported per file.
    pub async fn write_many(&self, req: &WriteManyRequest) -> ClientResult<WriteManyResponse> {
        self.call(Method::POST, routes::FILES_WRITE_MANY, Some(req))
            .await
    }

    /// A tar.gz stream of `paths` (directories recursively); entry names are
    /// the absolute paths without their leading `/`.
    pub async fn archive<S: AsRef<str>>(&self, paths: &[S]) -> ClientResult<ByteStream> {
        let req = ArchiveRequest {
            paths: paths.iter().map(|p| p.as_ref().to_string()).collect(),
        };
        let resp = self
            .send(json_request(
                Method::POST,
                routes::FILES_ARCHIVE,
                Some(&req),
            )?)
            .await?;
        Ok(ByteStream::new(resp.into_body()))
    }

    /// Changes under `path` (below it too with `recursive`) until the stream
    /// is dropped. The watch is in place when this returns.
    pub async fn watch(
        &self,
        path: &str,
        recursive: bool,
    ) -> ClientResult<NdjsonStream<WatchEvent>> {
        let uri = format!(
            "{}&recursive={recursive}",
            path_uri(routes::FILES_WATCH, path.as_bytes())
        );
        self.stream::<(), _>(Method::GET, &uri, None).await
    }
}

fn raw_write_uri(path: &[u8], mode: Option<u32>) -> String {
    let mut uri = path_uri(routes::FILES_RAW, path);
    if let Some(m) = mode {
        uri.push_str(&format!("&mode={m:o}"));
    }
    uri
}

type FrameSender = mpsc::Sender<io::Result<Frame<Bytes>>>;

/// Puts an error frame into the upload body when dropped armed, so the
/// transport resets the stream. Without it, an upload abandoned midway would
/// end like a complete one and the agent would commit a truncated file.
struct AbortOnDrop(Option<OwnedPermit<io::Result<Frame<Bytes>>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(permit) = self.0.take() {
            permit.send(Err(io::Error::other("upload aborted")));
        }
    }
}

/// Copies `reader` into the upload body; returns the bytes sent.
async fn pump<S: Stream<Item = io::Result<Bytes>>>(chunks: S, tx: FrameSender) -> io::Result<u64> {
    let gone = || {
        io::Error::new(
            io::ErrorKind::BrokenPipe,
            "agent stopped reading the upload",
        )
    };
    // Reserved up front so the abort frame can be queued synchronously in Drop.
    let permit = tx.clone().reserve_owned().await.map_err(|_| gone())?;
    let mut abort = AbortOnDrop(Some(permit));
    let mut chunks = pin!(chunks);
    let mut total = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        total += chunk.len() as u64;
        tx.send(Ok(Frame::data(chunk))).await.map_err(|_| gone())?;
    }
    // Complete: release the reserved slot unused, ending the body normally.
    abort.0.take();
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encoding_keeps_slashes_and_escapes_the_rest() {
        assert_eq!(encode_query_bytes(b"/tmp/a b&c"), "/tmp/a%20b%26c");
        assert_eq!(encode_query_bytes(b"/x/\xff"), "/x/%FF");
        assert_eq!(
            raw_write_uri(b"/a", Some(0o644)),
            "/v1/files/raw?path=/a&mode=644"
        );
    }

    #[tokio::test]
    async fn dropped_upload_ends_the_body_with_an_error() {
        let (tx, mut rx) = mpsc::channel(4);
        // A reader that never ends: the pump is abandoned midway.
        let (reader, mut writer) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut writer, b"partial")
            .await
            .unwrap();
        let pumping = tokio::spawn(pump(tokio_util::io::ReaderStream::new(reader), tx));
        let first = rx.recv().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"partial"));
        pumping.abort();
        let last = rx.recv().await.unwrap();
        assert!(
            last.is_err(),
            "an abandoned upload must end with an error frame"
        );
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn finished_upload_ends_the_body_cleanly() {
        let (tx, mut rx) = mpsc::channel(4);
        let n = pump(tokio_util::io::ReaderStream::new(&b"all of it"[..]), tx)
            .await
            .unwrap();
        assert_eq!(n, 9);
        assert_eq!(
            rx.recv().await.unwrap().unwrap().into_data().unwrap(),
            Bytes::from_static(b"all of it")
        );
        assert!(rx.recv().await.is_none());
    }
}
