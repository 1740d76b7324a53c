//! Attach streaming: the scrollback every output chunk goes into, the one
//! attached client's queue, the reader task that feeds both, and the pump
//! that copies a client's input into the terminal.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::session::Session;
use super::terminal::{read_some, write_all};

/// Recent output replayed to a client that attaches.
const SCROLLBACK_BYTES: usize = 64 * 1024;
/// After the shell exits, output still arriving from processes that kept the
/// terminal open is read for this long before the stream ends.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);
/// How long the end of output waits for the shell's exit to be recorded.
const EXIT_AFTER_OUTPUT: Duration = Duration::from_secs(1);
/// Largest chunk read from the master at once.
const READ_CHUNK: usize = 64 * 1024;
/// Chunks queued for an attached client before the reader waits for it.
const CLIENT_QUEUE: usize = 64;

#[derive(Debug, Default)]
pub(super) struct Output {
    scrollback: VecDeque<u8>,
    client: Option<Client>,
    /// The reader is done: nothing more will be published.
    ended: bool,
    generation: u64,
}

/// A newly attached client's output queue, the token fired when it is
/// replaced, and its generation.
pub(super) type Live = (mpsc::Receiver<Bytes>, CancellationToken, u64);

/// The attached client's output queue.
#[derive(Debug)]
struct Client {
    generation: u64,
    tx: mpsc::Sender<Bytes>,
    /// Fired when another client replaces this one.
    detach: CancellationToken,
}

impl Output {
    fn remember(&mut self, chunk: &[u8]) {
        let keep = chunk.len().min(SCROLLBACK_BYTES);
        self.scrollback.extend(&chunk[chunk.len() - keep..]);
        let excess = self.scrollback.len().saturating_sub(SCROLLBACK_BYTES);
        self.scrollback.drain(..excess);
    }
}

impl Session {
    /// Makes a new client the attached one. Returns the scrollback and,
    /// unless the output already ended, the live queue and the token that
    /// fires when this client is replaced.
    pub(super) fn attach(&self) -> (Bytes, Option<Live>) {
        let mut out = self.output.lock();
        let scrollback = Bytes::from(out.scrollback.iter().copied().collect::<Vec<u8>>());
        if out.ended {
            return (scrollback, None);
        }
        if let Some(old) = out.client.take() {
            old.detach.cancel();
        }
        out.generation += 1;
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        let detach = CancellationToken::new();
        out.client = Some(Client {
            generation: out.generation,
            tx,
            detach: detach.clone(),
        });
        (scrollback, Some((rx, detach, out.generation)))
    }

    /// Ends client `generation`'s output stream, if it is still the
    /// attached one (output goes on into the scrollback).
    fn detach(&self, generation: u64) {
        let mut out = self.output.lock();
        if out.client.as_ref().map(|c| c.generation) == Some(generation) {
            if let Some(old) = out.client.take() {
                old.detach.cancel();
            }
        }
    }

    /// Records a chunk of output and hands it to the attached client, waiting
    /// while that client's queue is full (backpressure reaches the shell).
    async fn publish(&self, chunk: Bytes) {
        let client = {
            let mut out = self.output.lock();
            out.remember(&chunk);
            out.client
                .as_ref()
                .map(|c| (c.generation, c.tx.clone(), c.detach.clone()))
        };
        let Some((generation, tx, detach)) = client else {
            return;
        };
        let delivered = tokio::select! {
            r = tx.send(chunk) => r.is_ok(),
            _ = detach.cancelled() => true,
            _ = self.closed.cancelled() => true,
        };
        if !delivered {
            // The client went away; keep reading into the scrollback only.
            let mut out = self.output.lock();
            if out.client.as_ref().map(|c| c.generation) == Some(generation) {
                out.client = None;
            }
        }
    }

    /// No more output: ends the attached client's stream.
    fn end_output(&self) {
        let mut out = self.output.lock();
        out.ended = true;
        out.client = None;
    }
}

/// Copies one client's input into the terminal until the client ends its
/// side, is replaced, or the session closes. Never closes the terminal: a
/// client leaving is not end of input for the shell. A client that ends its
/// input cleanly is detached once all of it is written, which ends its
/// output stream: a host that closes its side and reads to the end knows
/// the shell got every byte it sent (dropping the stream instead could
/// discard input still in flight).
pub(super) async fn pump_input(
    session: Arc<Session>,
    body: Body,
    detach: CancellationToken,
    generation: u64,
) {
    let mut chunks = body.into_data_stream();
    loop {
        let chunk = tokio::select! {
            _ = detach.cancelled() => return,
            _ = session.closed.cancelled() => return,
            c = chunks.next() => match c {
                Some(Ok(c)) => c,
                Some(Err(_)) => return,
                None => {
                    session.detach(generation);
                    return;
                }
            },
        };
        let written = tokio::select! {
            _ = detach.cancelled() => return,
            _ = session.closed.cancelled() => return,
            r = write_all(&session.master, &chunk) => r,
        };
        if let Err(e) = written {
            // EIO: nothing has the terminal open any more (the shell exited).
            tracing::debug!(pty = %session.id, error = %e, "pty input ended");
            return;
        }
    }
}

/// Reads the terminal until its output ends, then marks the session's
/// output ended.
pub(super) async fn run_session(session: Arc<Session>) {
    let drain = CancellationToken::new();
    let watcher = {
        let session = session.clone();
        let drain = drain.clone();
        let mut exit = session.exit.clone();
        tokio::spawn(async move {
            tokio::select! {
                e = exit.wait() => {
                    tracing::info!(pty = %session.id, code = e.code, "pty shell exited");
                }
                _ = session.closed.cancelled() => {}
            }
            // Normally the reader sees EIO right away; a background job that
            // kept the terminal open does not hold the stream open forever.
            tokio::time::sleep(DRAIN_AFTER_EXIT).await;
            drain.cancel();
        })
    };
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let read = tokio::select! {
            biased;
            _ = session.closed.cancelled() => break,
            _ = drain.cancelled() => break,
            r = read_some(&session.master, &mut buf) => r,
        };
        match read {
            Ok(0) => break,
            Ok(n) => session.publish(Bytes::copy_from_slice(&buf[..n])).await,
            // EIO: every slave fd is closed (the shell and its jobs are gone).
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => {
                tracing::warn!(pty = %session.id, error = %e, "read pty");
                break;
            }
        }
    }
    // The output normally ends as the shell exits: wait (briefly) for its
    // exit to be recorded, so a client that sees the end can ask for the
    // exit code and get it.
    if !session.closed.is_cancelled() {
        let mut exit = session.exit.clone();
        let _ = tokio::time::timeout(EXIT_AFTER_OUTPUT, exit.wait()).await;
    }
    session.end_output();
    watcher.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrollback_keeps_only_the_newest_bytes() {
        let mut out = Output::default();
        out.remember(&vec![b'a'; SCROLLBACK_BYTES - 10]);
        out.remember(b"0123456789abcdef");
        assert_eq!(out.scrollback.len(), SCROLLBACK_BYTES);
        let tail: Vec<u8> = out
            .scrollback
            .iter()
            .rev()
            .take(16)
            .rev()
            .copied()
            .collect();
        assert_eq!(tail, b"0123456789abcdef");
        out.remember(&vec![b'z'; SCROLLBACK_BYTES * 2]);
        assert_eq!(out.scrollback.len(), SCROLLBACK_BYTES);
        assert!(out.scrollback.iter().all(|&b| b == b'z'));
    }
}
