//! The proxy's listener: plain TCP, or TLS (rustls, ALPN `h2` and
//! `http/1.1`) with a configured certificate and key, and a deployment's
//! custom domain's own certificate for that name (SNI). TLS handshakes run
//! in their own tasks, so a slow client never holds up the accept loop.
//! Every connection gets TCP_NODELAY: responses leave as a head write and a
//! body write, and Nagle would hold the second until the client's delayed
//! ACK (~40 ms a request).

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use std::collections::HashMap;

use parking_lot::Mutex as SyncMutex;

use crate::core::deployments::routing::Certificate;
use crate::core::Core;

/// Where a connection came from (the proxy's `ConnectInfo`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, PreviewListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, PreviewListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// A PEM certificate chain and private key, checked to fit together.
fn certified_key(chain: &[u8], key: &[u8]) -> anyhow::Result<Arc<CertifiedKey>> {
    use anyhow::Context as _;
    let certs = rustls_pemfile::certs(&mut &chain[..])
        .collect::<Result<Vec<_>, _>>()
        .context("the certificate chain is not PEM")?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in the chain");
    let key = rustls_pemfile::private_key(&mut &key[..])
        .context("the private key is not PEM")?
        .context("no private key")?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .context("the private key's type is not supported")?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match()
        .context("the certificate and key do not fit together")?;
    Ok(Arc::new(ck))
}

/// Whether a PEM chain and key fit together and the first certificate is
/// valid for `domain` (its expiry is the client's business); why not.
pub fn check_certificate(domain: &str, chain: &[u8], key: &[u8]) -> Result<(), String> {
    let ck = certified_key(chain, key).map_err(|e| format!("{e:#}"))?;
    let name = rustls::pki_types::ServerName::try_from(domain.to_string())
        .map_err(|_| format!("{domain} is not a host name"))?;
    let end = webpki::EndEntityCert::try_from(&ck.cert[0])
        .map_err(|e| format!("the certificate cannot be read: {e}"))?;
    end.verify_is_valid_for_subject_name(&name)
        .map_err(|_| format!("the certificate is not valid for {domain}"))
}

/// Picks the certificate of a handshake: a verified custom domain's own,
/// by SNI, else the configured one.
#[derive(Debug)]
struct Certificates {
    default: Arc<CertifiedKey>,
    core: Option<Arc<Core>>,
    /// Parsed custom-domain certificates, by domain, with what they were
    /// parsed from (a new certificate for a name replaces its entry).
    parsed: SyncMutex<HashMap<String, Parsed>>,
}

/// A custom domain's certificate, and what it was parsed into.
type Parsed = (Arc<Certificate>, Arc<CertifiedKey>);

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let own = (|| {
            let name = hello.server_name()?.to_ascii_lowercase();
            let cert = self.core.as_ref()?.domain_route(&name)?.certificate?;
            let mut parsed = self.parsed.lock();
            if let Some((from, ck)) = parsed.get(&name) {
                if Arc::ptr_eq(from, &cert) {
                    return Some(ck.clone());
                }
            }
            match certified_key(cert.chain_pem.as_bytes(), &cert.key_pem) {
                Ok(ck) => {
                    if parsed.len() >= 10_000 {
                        parsed.clear();
                    }
                    parsed.insert(name, (cert, ck.clone()));
                    Some(ck)
                }
                Err(e) => {
                    tracing::warn!(domain = %name, error = %e, "custom domain certificate unusable");
                    None
                }
            }
        })();
        Some(own.unwrap_or_else(|| self.default.clone()))
    }
}

/// Loads a PEM certificate chain and private key into a server config that
/// offers HTTP/2 and HTTP/1.1; with `core`, a verified custom domain's own
/// certificate is served for its name.
pub fn tls_config(
    cert: &Path,
    key: &Path,
    core: Option<Arc<Core>>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use anyhow::Context as _;
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("open {}", p.display()));
    let default = certified_key(&read(cert)?, &read(key)?)
        .with_context(|| format!("{} and {}", cert.display(), key.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS versions")?
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(Certificates {
        default,
        core,
        parsed: SyncMutex::new(HashMap::new()),
    }));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A connection: plain or TLS.
#[derive(Debug)]
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, data),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The proxy's listener.
#[derive(Debug)]
pub enum PreviewListener {
    Plain(TcpListener),
    /// Connections whose handshake finished, from the accept task.
    Tls {
        ready: mpsc::Receiver<(Conn, SocketAddr)>,
        local: SocketAddr,
    },
}

impl PreviewListener {
    /// Plain TCP, or TLS with `tls`.
    pub fn new(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> PreviewListener {
        let Some(tls) = tls else {
            return PreviewListener::Plain(listener);
        };
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %e, "preview accept");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, conn_tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(tcp),
                    );
                    match handshake.await {
                        Ok(Ok(s)) => {
                            let _ = conn_tx.send((Conn::Tls(Box::new(s)), addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, %addr, "TLS handshake"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        PreviewListener::Tls { ready, local }
    }
}

impl axum::serve::Listener for PreviewListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self {
            PreviewListener::Plain(l) => loop {
                match TcpListener::accept(l).await {
                    Ok((tcp, addr)) => {
                        let _ = tcp.set_nodelay(true);
                        return (Conn::Plain(tcp), addr);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "preview accept");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            },
            PreviewListener::Tls { ready, .. } => match ready.recv().await {
                Some(c) => c,
                // The accept task is gone: nothing more will come.
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            PreviewListener::Plain(l) => l.local_addr(),
            PreviewListener::Tls { local, .. } => Ok(*local),
        }
    }
}
