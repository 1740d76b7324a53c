//! Files in the guest: writes (whole, streamed, many at once) with their
//! `sandbox.file.written` events, reads, listings, watches and archives.

use std::io;

use bytes::Bytes;
use futures_util::Stream;
use hearth_agent_client::AgentClientError;
use hearth_agent_protocol::{
    FileEntry, ListResponse, TreeNode, WatchEvent, WriteFileRequest, WriteManyRequest, WriteResult,
};
use serde_json::json;

use super::{Frames, Guest, GuestBytes};
use crate::error::{Error, Kind, Result};
use crate::events::EventKind;

/// What a write-many did: the files written, and per failed file its path
/// and why.
#[derive(Debug, Default)]
pub struct WriteMany {
    pub written: Vec<WriteResult>,
    pub failed: Vec<(String, Error)>,
}

impl Guest {
    async fn written(&self, r: &WriteResult) {
        self.emit(
            EventKind::FileWritten,
            json!({ "path": r.path, "size_bytes": r.size_bytes }),
        )
        .await;
    }

    pub async fn write_file(&self, req: &WriteFileRequest) -> Result<WriteResult> {
        let r = self.agent.write_file(req).await?;
        self.written(&r).await;
        Ok(r)
    }

    /// Writes `chunks` to `path` as they come; the agent commits the file
    /// only when they ended cleanly. A broken upload is the caller's
    /// doing (`BadRequest`); a broken pipe is the agent giving up on it.
    pub async fn write_file_stream<S>(
        &self,
        path: &str,
        mode: Option<u32>,
        chunks: S,
    ) -> Result<WriteResult>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + 'static,
    {
        let r = self
            .agent
            .write_file_raw_stream(path, mode, chunks)
            .await
            .map_err(|e| match &e {
                AgentClientError::Stream(io) if io.kind() != io::ErrorKind::BrokenPipe => {
                    Error::bad_request(format!("request body: {io}"))
                }
                _ => Error::from(e),
            })?;
        self.written(&r).await;
        Ok(r)
    }

    pub async fn write_many(&self, files: Vec<WriteFileRequest>) -> Result<WriteMany> {
        let mut out = WriteMany::default();
        if files.is_empty() {
            return Ok(out);
        }
        let r = self.agent.write_many(&WriteManyRequest { files }).await?;
        for w in r.written {
            self.written(&w).await;
            out.written.push(w);
        }
        for f in r.failed {
            let err = Error::from(AgentClientError::Agent {
                status: f.error.code.http_status(),
                error: f.error,
            });
            out.failed.push((f.path, err));
        }
        Ok(out)
    }

    pub async fn mkdir(&self, path: &str, mode: Option<u32>) -> Result<FileEntry> {
        Ok(self.agent.mkdir(path, mode).await?)
    }

    pub async fn remove(&self, path: &str, recursive: bool) -> Result<()> {
        Ok(self.agent.remove(path, recursive).await?)
    }

    pub async fn rename(&self, from: &str, to: &str) -> Result<FileEntry> {
        Ok(self.agent.rename(from, to).await?)
    }

    /// `path` (any bytes: guest paths need not be UTF-8), streamed.
    pub async fn read_file(&self, path: &[u8]) -> Result<GuestBytes> {
        Ok(GuestBytes(self.agent.read_file_raw_path(path).await?))
    }

    /// `path` whole, refused (`TooLarge`) past `limit` bytes.
    pub async fn read_file_limited(&self, path: &[u8], limit: usize) -> Result<Vec<u8>> {
        let mut stream = self.agent.read_file_raw_path(path).await?;
        let mut content = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if content.len() + chunk.len() > limit {
                return Err(Error::new(
                    Kind::TooLarge,
                    "payload_too_large",
                    format!("file exceeds {limit} bytes; use fs/download"),
                ));
            }
            content.extend_from_slice(&chunk);
        }
        Ok(content)
    }

    pub async fn list(&self, path: &[u8], depth: u32) -> Result<ListResponse> {
        Ok(self.agent.list_raw_path(path, Some(depth)).await?)
    }

    pub async fn stat(&self, path: &[u8]) -> Result<FileEntry> {
        Ok(self.agent.stat_raw_path(path).await?)
    }

    pub async fn tree(&self, path: &str, depth: u32) -> Result<TreeNode> {
        Ok(self.agent.tree(path, Some(depth)).await?)
    }

    /// Changes under `path` for as long as the returned stream lives.
    pub async fn watch(&self, path: &str, recursive: bool) -> Result<Frames<WatchEvent>> {
        Ok(Frames(self.agent.watch(path, recursive).await?))
    }

    /// `paths` as one tar.gz, streamed.
    pub async fn archive(&self, paths: &[String]) -> Result<GuestBytes> {
        Ok(GuestBytes(self.agent.archive(paths).await?))
    }
}
