//! Response bodies that stream: NDJSON frames, and full-duplex byte pipes
//! (PTY, TCP tunnel) where the request body flows in while the response body
//! flows out.

use std::convert::Infallible;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::io::ReaderStream;

/// Content type of NDJSON streams.
pub const NDJSON: &str = "application/x-ndjson";

/// Turns a channel of frames into an NDJSON response. The producer sees its
/// sends fail once the client is gone and should stop then.
pub fn ndjson_response<T: Serialize + Send + 'static>(rx: mpsc::Receiver<T>) -> Response {
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|frame| {
        let mut line = serde_json::to_vec(&frame).unwrap_or_else(|e| {
            // Frames are plain data; a failure here is a bug, not input.
            format!("{{\"type\":\"error\",\"message\":\"encode frame: {e}\"}}").into_bytes()
        });
        line.push(b'\n');
        Ok::<_, Infallible>(Bytes::from(line))
    });
    (
        [(http::header::CONTENT_TYPE, NDJSON)],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Copies the request body into `writer` until the client ends its side,
/// then shuts `writer` down. Returns the bytes copied.
pub async fn pump_body_into<W: AsyncWrite + Unpin>(body: Body, mut writer: W) -> u64 {
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { break };
        if writer.write_all(&chunk).await.is_err() {
            break;
        }
        total += chunk.len() as u64;
    }
    let _ = writer.shutdown().await;
    total
}

/// A response whose body is everything read from `reader`.
pub fn reader_response<R: AsyncRead + Send + 'static>(reader: R, content_type: &str) -> Response {
    let stream = ReaderStream::with_capacity(reader, 256 * 1024);
    (
        [(http::header::CONTENT_TYPE, content_type.to_string())],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Size of each read of [`file_response`]: large reads on one blocking
/// thread move hundreds of MiB/s where a `tokio::fs` hop per small chunk
/// does not.
const FILE_CHUNK: usize = 1024 * 1024;

/// Streams a file read on a blocking thread. The read stops as soon as the
/// client goes away (the channel closes).
pub fn file_response(mut file: std::fs::File, len: Option<u64>, content_type: &str) -> Response {
    use std::io::Read;
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || loop {
        let mut buf = BytesMut::zeroed(FILE_CHUNK);
        match file.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                buf.truncate(n);
                if tx.blocking_send(Ok(buf.freeze())).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Ends the body with an error: the client sees a reset, not a short file.
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut resp = (
        [(http::header::CONTENT_TYPE, content_type.to_string())],
        body,
    )
        .into_response();
    if let Some(len) = len {
        resp.headers_mut()
            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    }
    resp
}

/// Collects a body into memory up to `limit` bytes; `None` when larger.
pub async fn collect_limited(body: Body, limit: usize) -> Result<Option<Bytes>, axum::Error> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if buf.len() + chunk.len() > limit {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf.freeze()))
}
