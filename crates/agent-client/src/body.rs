//! Streaming answers: NDJSON frames, raw byte streams, and full-duplex byte
//! pipes (PTY, tunnel).

use std::collections::VecDeque;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use crate::{AgentClientError, ClientBody, ClientResult};

/// Longest NDJSON frame accepted (a 1 MiB output chunk in base64 plus slack).
const MAX_FRAME_LINE: usize = 4 * 1024 * 1024;

/// Frames of type `T`, one JSON document per line.
#[derive(Debug)]
pub struct NdjsonStream<T> {
    body: Incoming,
    buf: BytesMut,
    ready: VecDeque<Bytes>,
    done: bool,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> NdjsonStream<T> {
    pub(crate) fn new(body: Incoming) -> Self {
        NdjsonStream {
            body,
            buf: BytesMut::new(),
            ready: VecDeque::new(),
            done: false,
            _t: PhantomData,
        }
    }

    /// The next frame, or `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<ClientResult<T>> {
        futures_util::StreamExt::next(self).await
    }

    fn split_lines(&mut self) {
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line = self.buf.split_to(i + 1).freeze();
            if line.len() > 1 {
                self.ready.push_back(line.slice(..line.len() - 1));
            }
        }
    }
}

impl<T: DeserializeOwned> Stream for NdjsonStream<T> {
    type Item = ClientResult<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                return Poll::Ready(Some(
                    serde_json::from_slice(&line).map_err(AgentClientError::Decode),
                ));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                        if self.buf.len() > MAX_FRAME_LINE && !self.buf.contains(&b'\n') {
                            self.done = true;
                            return Poll::Ready(Some(Err(AgentClientError::Stream(
                                io::Error::new(io::ErrorKind::InvalidData, "frame too long"),
                            ))));
                        }
                        self.split_lines();
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(AgentClientError::Http(e))));
                }
                None => {
                    self.done = true;
                    if !self.buf.is_empty() {
                        let rest = self.buf.split().freeze();
                        self.ready.push_back(rest);
                    }
                }
            }
        }
    }
}

/// Raw bytes of an answer body (file download, archive).
#[derive(Debug)]
pub struct ByteStream {
    body: Incoming,
}

impl ByteStream {
    pub(crate) fn new(body: Incoming) -> Self {
        ByteStream { body }
    }

    /// The next chunk, or `None` at the end.
    pub async fn next(&mut self) -> Option<ClientResult<Bytes>> {
        futures_util::StreamExt::next(self).await
    }

    /// Everything, in memory, up to `limit` bytes
    /// ([`AgentClientError::TooLarge`] past it).
    pub async fn collect(self, limit: usize) -> ClientResult<Bytes> {
        crate::collect_limited(self.body, limit).await
    }

    /// An `AsyncRead` over the body.
    pub fn into_reader(self) -> impl AsyncRead + Send + Unpin {
        tokio_util::io::StreamReader::new(futures_util::StreamExt::map(self, |r| {
            r.map_err(|e| io::Error::other(e.to_string()))
        }))
    }
}

impl Stream for ByteStream {
    type Item = ClientResult<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(AgentClientError::Http(e)))),
                None => return Poll::Ready(None),
            }
        }
    }
}

/// A request body fed from a channel, for streamed uploads and duplex pipes.
pub(crate) fn channel_body() -> (mpsc::Sender<io::Result<Frame<Bytes>>>, ClientBody) {
    let (tx, rx) = mpsc::channel(16);
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    (tx, BodyExt::boxed(body))
}

/// A full-duplex byte pipe to the guest: what is written goes to the guest
/// (PTY input, TCP payload), what is read came from it. `shutdown` ends the
/// host's direction only.
#[derive(Debug)]
pub struct Duplex {
    tx: PollSender<io::Result<Frame<Bytes>>>,
    body: Incoming,
    pending: Bytes,
}

impl Duplex {
    pub(crate) fn new(tx: mpsc::Sender<io::Result<Frame<Bytes>>>, body: Incoming) -> Self {
        Duplex {
            tx: PollSender::new(tx),
            body,
            pending: Bytes::new(),
        }
    }
}

impl AsyncRead for Duplex {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending = data;
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncWrite for Duplex {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.tx.poll_reserve(cx)).map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        let chunk = Bytes::copy_from_slice(&data[..data.len().min(256 * 1024)]);
        let n = chunk.len();
        self.tx
            .send_item(Ok(Frame::data(chunk)))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tx.close();
        Poll::Ready(Ok(()))
    }
}
