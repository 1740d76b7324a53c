//! `archive`: a tar.gz of several guest paths, streamed while it is built.
//!
//! Compression runs on a blocking thread writing into a channel; the response
//! body drains it. A client that goes away closes the channel, the next write
//! fails, and the thread stops instead of compressing into the void.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::{Bytes, BytesMut};
use flate2::write::GzEncoder;
use flate2::Compression;
use hearth_agent_protocol::paths::lexical_normalize;
use hearth_agent_protocol::{routes, ArchiveRequest};
use tokio::sync::mpsc;

use super::files::{blocking, is_protected, json_path};
use super::AgentRouter;
use crate::error::{HandlerError, HandlerResult};
use crate::extract::JsonBody;

/// Compressed bytes gathered before one channel send.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight towards the client.
const CHANNEL_DEPTH: usize = 8;

const GZIP: &str = "application/gzip";

pub fn routes() -> AgentRouter {
    AgentRouter::new().route(routes::FILES_ARCHIVE, post(archive))
}

async fn archive(JsonBody(req): JsonBody<ArchiveRequest>) -> HandlerResult<Response> {
    if req.paths.is_empty() {
        return Err(HandlerError::bad_request("paths must not be empty"));
    }
    let mut paths = Vec::with_capacity(req.paths.len());
    for p in &req.paths {
        let path = json_path(p)?;
        if is_protected(&path) {
            return Err(HandlerError::bad_request(format!(
                "refusing to archive {}",
                lexical_normalize(&path).display()
            )));
        }
        paths.push(path);
    }
    // Every path must exist before the first byte goes out: after that, the
    // only way to report a problem is to break the stream.
    let paths = blocking(move || {
        for p in &paths {
            fs::symlink_metadata(p).map_err(|e| HandlerError::io(&e, p))?;
        }
        Ok(paths)
    })
    .await?;

    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH);
    tokio::task::spawn_blocking(move || {
        let mut sink = ChannelWriter::new(tx.clone());
        let result = build(&paths, &mut sink).and_then(|()| sink.flush());
        if let Err(e) = result {
            if e.kind() == io::ErrorKind::BrokenPipe {
                tracing::debug!("archive client went away");
            } else {
                tracing::warn!(error = %e, "archive failed mid-stream");
                // Break the stream so the client cannot mistake a truncated
                // archive for a complete one.
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(([(http::header::CONTENT_TYPE, GZIP)], body).into_response())
}

fn build<W: Write>(paths: &[PathBuf], out: W) -> io::Result<()> {
    let gz = GzEncoder::new(out, Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for path in paths {
        let name = entry_name(path);
        append(&mut tar, path, &name, true)?;
    }
    tar.into_inner()?.finish()?;
    Ok(())
}

/// Entry name of a top-level path: absolute, `..` resolved, leading `/` dropped
/// (tar refuses `..` and absolute names).
fn entry_name(path: &Path) -> PathBuf {
    let normal = lexical_normalize(path);
    PathBuf::from(std::ffi::OsStr::from_bytes(
        normal
            .as_os_str()
            .as_bytes()
            .strip_prefix(b"/")
            .unwrap_or_default(),
    ))
}

/// Adds `path` (recursively for directories) under `name`. Symlinks are
/// stored as links, never followed; sockets and other special files are
/// skipped. Only write errors end the archive: an entry that vanished or
/// cannot be read is left out.
fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &Path,
    name: &Path,
    top: bool,
) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if !top => {
            tracing::debug!(path = %path.display(), error = %e, "archive: skipping entry");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    let ft = meta.file_type();
    if ft.is_symlink() {
        let Ok(target) = fs::read_link(path) else {
            return Ok(());
        };
        header.set_size(0);
        tar.append_link(&mut header, name, target)?;
    } else if ft.is_dir() {
        header.set_size(0);
        tar.append_data(&mut header, name, io::empty())?;
        let mut children: Vec<_> = match fs::read_dir(path) {
            Ok(entries) => entries.flatten().map(|e| e.file_name()).collect(),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "archive: unreadable directory");
                Vec::new()
            }
        };
        children.sort();
        for child in children {
            append(tar, &path.join(&child), &name.join(&child), false)?;
        }
    } else if ft.is_file() {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "archive: unreadable file");
                return Ok(());
            }
        };
        let len = meta.len();
        // Exactly `len` bytes whatever happens to the file meanwhile: a file
        // growing or shrinking mid-read must not corrupt the archive framing.
        let data = file.take(len).chain(io::repeat(0)).take(len);
        tar.append_data(&mut header, name, data)?;
    } else {
        tracing::debug!(path = %path.display(), "archive: skipping special file");
    }
    Ok(())
}

/// `io::Write` into a tokio channel, in chunks of [`CHUNK`] bytes. Writes
/// fail with `BrokenPipe` once the receiving side is gone.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        ChannelWriter {
            tx,
            buf: BytesMut::with_capacity(CHUNK),
        }
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send_buffered()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffered()
    }
}

impl std::fmt::Debug for ChannelWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelWriter")
            .field("buffered", &self.buf.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_relative_and_resolved() {
        assert_eq!(entry_name(Path::new("/a/b")), PathBuf::from("a/b"));
        assert_eq!(entry_name(Path::new("/a/../c/")), PathBuf::from("c"));
    }

    #[test]
    fn archive_round_trips_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("d");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/x.txt"), b"hello").unwrap();
        std::os::unix::fs::symlink("sub/x.txt", root.join("link")).unwrap();
        let mut out = Vec::new();
        build(std::slice::from_ref(&root), &mut out).unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&out[..]));
        let base = entry_name(&root);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().into_owned();
            let mut content = String::new();
            if e.header().entry_type().is_file() {
                e.read_to_string(&mut content).unwrap();
            }
            seen.push((p.strip_prefix(&base).unwrap().to_path_buf(), content));
        }
        assert_eq!(
            seen,
            vec![
                (PathBuf::from(""), String::new()),
                (PathBuf::from("link"), String::new()),
                (PathBuf::from("sub"), String::new()),
                (PathBuf::from("sub/x.txt"), "hello".to_string()),
            ]
        );
    }
}
