//! Where the agent listens and how a byte stream becomes an HTTP/2 session:
//! Unix socket (host-process mode), character device (virtio-serial in a VM)
//! or vsock, each followed by the hello handshake and an h2c server.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hearth_agent_protocol::handshake::{Hello, LineScanner, H2_PREFACE_LINE, HELLO_PREFIX};
use hearth_agent_protocol::PROTOCOL_VERSION;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use crate::Agent;

/// HTTP/2 flow-control windows: large enough that one stream can move
/// hundreds of MiB/s over a local socket without waiting on WINDOW_UPDATEs.
const STREAM_WINDOW: u32 = 16 * 1024 * 1024;
const CONN_WINDOW: u32 = 64 * 1024 * 1024;
const MAX_FRAME: u32 = 1024 * 1024;

/// A place the agent serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `unix:/path/to/socket`
    Unix(PathBuf),
    /// `chardev:/dev/virtio-ports/hearth.agent`
    CharDev(PathBuf),
    /// `vsock:1024`
    Vsock(u32),
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) = s.split_once(':').ok_or_else(|| {
            format!("listen address {s:?} must be unix:PATH, chardev:PATH or vsock:PORT")
        })?;
        match kind {
            "unix" if !rest.is_empty() => Ok(ListenAddr::Unix(rest.into())),
            "chardev" if !rest.is_empty() => Ok(ListenAddr::CharDev(rest.into())),
            "vsock" => rest
                .parse()
                .map(ListenAddr::Vsock)
                .map_err(|_| format!("vsock port {rest:?} is not a number")),
            _ => Err(format!(
                "listen address {s:?} must be unix:PATH, chardev:PATH or vsock:PORT"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("bind {0}")]
    Bind(PathBuf, #[source] io::Error),
    #[error("bind vsock port {0}")]
    BindVsock(u32, #[source] io::Error),
    #[error("accept")]
    Accept(#[source] io::Error),
}

/// Serves `addr` until `shutdown` fires.
pub async fn serve(
    agent: Arc<Agent>,
    addr: ListenAddr,
    shutdown: CancellationToken,
) -> Result<(), TransportError> {
    match addr {
        ListenAddr::Unix(path) => serve_unix(agent, &path, shutdown).await,
        ListenAddr::CharDev(path) => {
            serve_chardev(agent, &path, shutdown).await;
            Ok(())
        }
        ListenAddr::Vsock(port) => serve_vsock(agent, port, shutdown).await,
    }
}

async fn serve_unix(
    agent: Arc<Agent>,
    path: &Path,
    shutdown: CancellationToken,
) -> Result<(), TransportError> {
    // A stale socket from a previous run would make bind fail.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| TransportError::Bind(path.into(), e))?;
    tracing::info!(path = %path.display(), "serving on unix socket");
    loop {
        let conn = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            conn = listener.accept() => conn,
        };
        match conn {
            Ok((stream, _)) => {
                tokio::spawn(serve_stream(agent.clone(), stream, shutdown.clone()));
            }
            // Out of fds or similar: keep serving the connections we have.
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_vsock(
    agent: Arc<Agent>,
    port: u32,
    shutdown: CancellationToken,
) -> Result<(), TransportError> {
    let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, port);
    let listener =
        tokio_vsock::VsockListener::bind(addr).map_err(|e| TransportError::BindVsock(port, e))?;
    tracing::info!(port, "serving on vsock");
    loop {
        let conn = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            conn = listener.accept() => conn,
        };
        match conn {
            Ok((stream, _)) => {
                tokio::spawn(serve_stream(agent.clone(), stream, shutdown.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "vsock accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The virtio-serial port is one long-lived device, not a listener: serve it,
/// and when the session ends (host gone, snapshot restored into a new host
/// connection, garbage on the line) open it again and wait for a new hello.
async fn serve_chardev(agent: Arc<Agent>, path: &Path, shutdown: CancellationToken) {
    tracing::info!(path = %path.display(), "serving on character device");
    let mut backoff = Duration::from_millis(10);
    while !shutdown.is_cancelled() {
        let dev = match CharDev::open(path) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, path = %path.display(), "device not ready");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_millis(500));
                continue;
            }
        };
        backoff = Duration::from_millis(10);
        serve_stream(agent.clone(), dev, shutdown.clone()).await;
    }
}

/// Runs the handshake and then one HTTP/2 session on `io`.
pub async fn serve_stream<IO>(agent: Arc<Agent>, mut io: IO, shutdown: CancellationToken)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let prefix = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = accept_handshake(&mut io) => match r {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "handshake ended");
                return;
            }
        },
    };
    let io = Prefixed { prefix, inner: io };
    let service = TowerToHyperService::new(crate::router(agent));
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_send_buf_size(4 * 1024 * 1024)
        .max_concurrent_streams(4096)
        .enable_connect_protocol();
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "session ended");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}

/// Skips stale bytes up to a hello, answers every hello, and returns the bytes
/// that start the HTTP/2 session (the preface line and what followed it).
async fn accept_handshake<IO>(io: &mut IO) -> io::Result<Bytes>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    enum Line {
        Hello(Hello),
        Preface,
    }
    let mut scanner = LineScanner::default();
    let mut greeted = false;
    let mut buf = vec![0u8; 8192];
    loop {
        // A socket peer that left; a `CharDev` never reads 0 (it waits for a host).
        let n = io.read(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut chunk = &buf[..n];
        loop {
            let hit = scanner.feed(chunk, |line| {
                if greeted && line == H2_PREFACE_LINE {
                    return Some(Line::Preface);
                }
                Hello::parse(line, HELLO_PREFIX).map(Line::Hello)
            });
            match hit {
                None => break,
                Some((Line::Hello(h), rest)) => {
                    let ready = Hello {
                        generation: h.generation,
                        protocol_version: PROTOCOL_VERSION,
                    };
                    io.write_all(ready.ready_line().as_bytes()).await?;
                    io.flush().await?;
                    greeted = true;
                    chunk = rest;
                }
                Some((Line::Preface, rest)) => {
                    let mut out = Vec::with_capacity(H2_PREFACE_LINE.len() + 1 + rest.len());
                    out.extend_from_slice(H2_PREFACE_LINE);
                    out.push(b'\n');
                    out.extend_from_slice(rest);
                    return Ok(Bytes::from(out));
                }
            }
        }
    }
}

/// A stream that yields `prefix` before reading from `inner`.
struct Prefixed<IO> {
    prefix: Bytes,
    inner: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A character device driven by the tokio reactor. Opened non-blocking: a
/// virtio-serial write blocks while no host is attached, and a blocked PID 1
/// would hang the whole guest.
#[derive(Debug)]
pub struct CharDev {
    fd: AsyncFd<OwnedFd>,
    read_retry: Retry,
    write_retry: Retry,
}

/// A timer that wakes a pending read or write, backing off while nothing
/// moves. Reads and writes keep their own: progress on one must not drop
/// the other's wakeup.
#[derive(Debug)]
struct Retry {
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            sleep: None,
            delay: CHARDEV_RETRY,
        }
    }
}

impl Retry {
    fn arm(&mut self, cx: &mut Context<'_>) {
        let delay = self.delay;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
        if sleep.as_mut().poll(cx).is_ready() {
            self.delay = (delay * 2).min(CHARDEV_RETRY_MAX);
            sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + self.delay);
            cx.waker().wake_by_ref();
        }
    }

    fn reset(&mut self) {
        self.delay = CHARDEV_RETRY;
        self.sleep = None;
    }
}

impl CharDev {
    /// Wraps an open descriptor (made non-blocking here), e.g. a PTY master
    /// that stands in for QEMU's side of a virtio-serial port in tests.
    pub fn from_fd(fd: OwnedFd) -> io::Result<CharDev> {
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
        // SAFETY: the OwnedFd moves into the AsyncFd and lives exactly as long.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(CharDev {
            fd,
            read_retry: Retry::default(),
            write_retry: Retry::default(),
        })
    }

    pub fn open(path: &Path) -> io::Result<CharDev> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)?;
        // SAFETY: the fd is owned by the OwnedFd moved into the AsyncFd, so it
        // stays open and the same for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register(OwnedFd::from(file)) }?;
        Ok(CharDev {
            fd,
            read_retry: Retry::default(),
            write_retry: Retry::default(),
        })
    }
}

/// How often a pending device read or write is retried even without a
/// readiness event: the virtio console's wakeups are not always delivered
/// as the edge epoll waits for (seen under QEMU 7.2: an answer stuck until the
/// host wrote again), and a stuck PID 1 channel loses the whole guest.
const CHARDEV_RETRY: Duration = Duration::from_millis(20);
/// The retry backs off to this while nothing moves (an idle channel), so an
/// idle guest is not woken 50 times a second: each wakeup costs the host
/// about a millisecond of CPU under TCG, and at 250 ms this retry was a
/// third of an idle clone's cost. The first request after an idle second
/// still answers at once (readiness delivers it; measured 10-17 ms for
/// `true`, 20 tries after 1.2-3 s idle).
const CHARDEV_RETRY_MAX: Duration = Duration::from_millis(1000);

impl CharDev {
    /// Swaps the reactor registration for one on a duplicate descriptor of
    /// the same open port (closing the port would discard buffered input).
    fn reregister(&mut self) -> io::Result<()> {
        let dup = self.fd.get_ref().try_clone()?;
        // SAFETY: `dup` is owned by the new AsyncFd for its whole life.
        self.fd = unsafe { AsyncFd::register(dup) }?;
        Ok(())
    }

    fn raw_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reading into an initialized buffer of the given length.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn raw_write(&self, data: &[u8]) -> io::Result<usize> {
        // SAFETY: writing from a valid slice of the given length.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl AsyncRead for CharDev {
    /// A read never reports end of stream. A virtio console reads 0 bytes
    /// while no host is attached, and the guest learns of a disconnect and a
    /// reconnect late: treating 0 as EOF ended sessions that a new host had
    /// already started, and reopening the port then discarded the new host's
    /// first bytes. A new host's hello instead ends a stale session as a
    /// protocol error, and the port is reopened then.
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Try first, wait second: readiness is a hint here, not the truth.
        // Two rounds: a stale "ready" is cleared and the waker registered.
        for _ in 0..2 {
            match self.raw_read(buf.initialize_unfilled()) {
                Ok(0) => break, // no host attached: wait on the timer
                Ok(n) => {
                    buf.advance(n);
                    self.read_retry.reset();
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Poll::Ready(Err(e)),
                Err(_) => {}
            }
            // A host is attached (no data, but not 0). A hang-up seen earlier
            // stays set in the reactor for good and would make readiness
            // useless: register a fresh descriptor to get real events again.
            if let Poll::Ready(Ok(guard)) = self.fd.poll_read_ready(cx) {
                if guard.ready().is_read_closed() {
                    drop(guard);
                    if let Err(e) = self.reregister() {
                        return Poll::Ready(Err(e));
                    }
                }
            }
            match self.fd.poll_read_ready(cx) {
                Poll::Ready(Ok(mut guard)) => guard.clear_ready(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        self.read_retry.arm(cx);
        Poll::Pending
    }
}

impl AsyncWrite for CharDev {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        for _ in 0..2 {
            match self.raw_write(data) {
                Ok(n) => {
                    self.write_retry.reset();
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Poll::Ready(Err(e)),
                Err(_) => {}
            }
            match self.fd.poll_write_ready(cx) {
                Poll::Ready(Ok(mut guard)) => guard.clear_ready(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        self.write_retry.arm(cx);
        Poll::Pending
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_addresses() {
        assert_eq!(
            "unix:/tmp/a.sock".parse(),
            Ok(ListenAddr::Unix("/tmp/a.sock".into()))
        );
        assert_eq!("vsock:1024".parse(), Ok(ListenAddr::Vsock(1024)));
        assert_eq!(
            "chardev:/dev/virtio-ports/hearth.agent".parse(),
            Ok(ListenAddr::CharDev("/dev/virtio-ports/hearth.agent".into()))
        );
        assert!("tcp:1".parse::<ListenAddr>().is_err());
        assert!("vsock:x".parse::<ListenAddr>().is_err());
        assert!("unix:".parse::<ListenAddr>().is_err());
    }

    #[tokio::test]
    async fn handshake_skips_stale_bytes_and_answers_every_hello() {
        let (mut host, mut guest) = tokio::io::duplex(4096);
        let task = tokio::spawn(async move { accept_handshake(&mut guest).await });
        host.write_all(b"garbage\x00\x01\nHEARTH-HELLO 5 1\nHEARTH-HELLO 6 1\n")
            .await
            .unwrap();
        host.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nrest")
            .await
            .unwrap();
        let prefix = task.await.unwrap().unwrap();
        assert_eq!(&prefix[..], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nrest");
        let mut answer = vec![0u8; 64];
        let n = host.read(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]).to_string();
        assert_eq!(
            answer,
            format!("HEARTH-READY 5 {PROTOCOL_VERSION}\nHEARTH-READY 6 {PROTOCOL_VERSION}\n")
        );
    }

    #[tokio::test]
    async fn preface_before_hello_is_ignored() {
        let (mut host, mut guest) = tokio::io::duplex(4096);
        let task = tokio::spawn(async move { accept_handshake(&mut guest).await });
        host.write_all(b"PRI * HTTP/2.0\r\nHEARTH-HELLO 9 1\nPRI * HTTP/2.0\r\nX")
            .await
            .unwrap();
        let prefix = task.await.unwrap().unwrap();
        assert_eq!(&prefix[..], b"PRI * HTTP/2.0\r\nX");
    }
}
