//! The preview proxy: its own listener (HTTP/1.1 and HTTP/2), routing by
//! `Host: <slug>.preview.<domain>` to `127.0.0.1:PORT` in the sandbox
//! through the agent's tunnel (no network path into a VM exists). Bodies
//! stream both ways and WebSocket upgrades pass through.
//!
//! Private previews take the owning tenant's API key or a share token
//! (`?preview_token=`, `x-hearth-preview-token`, `x-miosa-preview-token`, or
//! the cookie the proxy sets on the preview's host so later requests work).
//! No Hearth credential ever reaches the guest ([`credentials`]). A page
//! request (GET, HEAD) with a token in its URL is answered with the cookie
//! and a redirect to the URL without it, so the token stays out of browser
//! history and `Referer`. A WebSocket through a private preview closes
//! when the key or token that opened it is revoked or expires ([`grant`]).
//! Public previews are rate limited per client. A
//! request to a paused persistent sandbox resumes it first; every request
//! resets the sandbox's idle clock.

pub mod credentials;
mod grant;
pub mod listener;
pub mod pages;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use axum::response::Response;
use hyper_util::rt::TokioIo;

use crate::core::keys::Caller;
use crate::core::nodes::peers::Owner;
use crate::core::Core;
use crate::model::{NodeRecord, PreviewRecord, Visibility};
use crate::ratelimit::RateLimiter;

pub use credentials::TOKEN_COOKIE;

#[derive(Debug)]
struct Proxy {
    core: Arc<Core>,
    /// `.preview.<domain>`
    suffix: String,
    /// `.apps.<domain>`: deployments.
    apps_suffix: String,
    limiter: RateLimiter,
    /// Share cookies stick in browsers at this scheme and domain (see
    /// [`credentials::cookie_sticks`]): page requests with a token in the
    /// URL are redirected.
    redirect_tokens: bool,
    /// `.<domain>`: E2B's `<port>-<sandboxID>.<domain>` hosts.
    domain_suffix: String,
    /// E2B's envd, served host-side ([`crate::e2b::envd`]).
    envd: axum::Router,
}

/// The proxy's router (every path, every method).
pub fn router(core: Arc<Core>) -> axum::Router {
    let p = &core.config.preview;
    let proxy = Proxy {
        suffix: format!(".preview.{}", p.domain.to_ascii_lowercase()),
        apps_suffix: format!(".apps.{}", p.domain.to_ascii_lowercase()),
        limiter: RateLimiter::new(p.public_rps, p.public_rps.saturating_mul(4)),
        redirect_tokens: credentials::cookie_sticks(p.url_scheme(), &p.domain),
        domain_suffix: format!(".{}", p.domain.to_ascii_lowercase()),
        envd: crate::e2b::envd::router(core.clone()),
        core,
    };
    axum::Router::new()
        .fallback(handle)
        .with_state(Arc::new(proxy))
}

/// Serves previews on `listener` (with TLS when the config names a
/// certificate and key) until `stop`.
pub async fn serve(
    core: Arc<Core>,
    listener: tokio::net::TcpListener,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        core.set_preview_port(addr.port());
    }
    let p = &core.config.preview;
    let tls = match (&p.tls_cert, &p.tls_key) {
        (Some(cert), Some(key)) => Some(listener::tls_config(cert, key, Some(core.clone()))?),
        _ => None,
    };
    let listener = listener::PreviewListener::new(listener, tls);
    let app = router(core).into_make_service_with_connect_info::<listener::Peer>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await?;
    Ok(())
}

/// The slug of `host` (`<slug>.preview.<domain>[:port]`), if it is one.
fn slug_of<'a>(host: &'a str, suffix: &str) -> Option<&'a str> {
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.chars().all(|c| c.is_ascii_digit()) => n,
        _ => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let cut = name.len().checked_sub(suffix.len())?;
    if !name.is_char_boundary(cut) || !name[cut..].eq_ignore_ascii_case(suffix) {
        return None;
    }
    let slug = &name[..cut];
    (!slug.is_empty() && slug.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .then_some(slug)
}

/// The sandbox and port an E2B client addresses: the `E2b-Sandbox-Id`
/// (and `E2b-Sandbox-Port`, default envd's) headers of `E2B_SANDBOX_URL`,
/// or a `<port>-<sandboxID>.<domain>` host.
fn e2b_target(proxy: &Proxy, req: &Request, host: &str) -> Option<(String, u16)> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if let Some(id) = header("e2b-sandbox-id") {
        let port = header("e2b-sandbox-port")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(crate::e2b::ENVD_PORT);
        return Some((crate::e2b::from_e2b(id.trim()), port));
    }
    let name = host_name(host);
    let label = name.strip_suffix(&proxy.domain_suffix)?;
    let (port, id) = label.split_once('-')?;
    let port: u16 = port.parse().ok()?;
    let id_ok =
        id.starts_with("sbx-") && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-');
    id_ok.then(|| (crate::e2b::from_e2b(id), port))
}

/// An E2B request: envd's port goes to the envd translation; any other
/// port to the app listening there, when the sandbox was created through
/// E2B's API (its ports are public, as E2B's are) or the request carries
/// the sandbox's access token. Hearth credentials never reach the guest.
async fn serve_e2b(
    proxy: &Proxy,
    peer: SocketAddr,
    host: &str,
    sandbox_id: String,
    port: u16,
    mut req: Request,
) -> Response {
    use tower::ServiceExt;
    let core = &proxy.core;
    credentials::take(&mut req);
    for h in ["e2b-sandbox-id", "e2b-sandbox-port"] {
        req.headers_mut().remove(h);
    }
    if port == crate::e2b::ENVD_PORT {
        req.extensions_mut()
            .insert(crate::e2b::envd::Target { sandbox_id });
        return match proxy.envd.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
    }
    let Some(rec) = core.handle(&sandbox_id).map(|h| h.record()) else {
        return pages::not_found();
    };
    // The envd token opens every port; the traffic token is what E2B
    // hands out for them (`trafficAccessToken`).
    use crate::e2b::Token;
    let mut presented = |header: &str, kind: Token| {
        req.headers_mut()
            .remove(header)
            .and_then(|v| v.to_str().ok().map(str::to_string))
            .is_some_and(|t| kind.matches(core, &rec.id, &t))
    };
    let envd = presented("x-access-token", Token::Envd);
    let traffic = presented("e2b-traffic-access-token", Token::Traffic);
    let public = rec.tags.iter().any(|t| t == crate::e2b::PUBLIC_PORTS_TAG);
    let allowed = public || envd || traffic;
    if !allowed {
        return pages::not_found();
    }
    if !proxy.limiter.allow(peer.ip(), Instant::now()) {
        return pages::rate_limited();
    }
    let route = PreviewRecord {
        id: format!("e2b-{}", rec.id),
        tenant_id: rec.tenant_id.clone(),
        sandbox_id: rec.id.clone(),
        port,
        visibility: Visibility::Public,
        slug: String::new(),
        created_at: rec.created_at,
    };
    let resp = forward(core, &route, peer, host, req, std::future::pending()).await;
    finish(core, resp, None)
}

/// `host` without its port or trailing dot, lower case.
fn host_name(host: &str) -> String {
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.chars().all(|c| c.is_ascii_digit()) => n,
        _ => host,
    };
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Hop-by-hop headers (RFC 9110 7.6.1), and any the Connection header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        if !(keep_upgrade && n == header::UPGRADE) {
            headers.remove(n);
        }
    }
    for n in [
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "proxy-authorization",
    ] {
        headers.remove(n);
    }
    headers.remove(header::CONNECTION);
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

async fn handle(
    State(proxy): State<Arc<Proxy>>,
    ConnectInfo(listener::Peer(peer)): ConnectInfo<listener::Peer>,
    mut req: Request,
) -> Response {
    let core = &proxy.core;
    // A request another node's proxy sent on: its client, and never sent
    // on again.
    let forwarded = crate::cluster::accept(core, &mut req);
    let peer = match forwarded.as_ref().and_then(|f| f.client_ip) {
        Some(ip) => SocketAddr::new(ip, peer.port()),
        None => peer,
    };
    let here = forwarded.is_some();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    if let Some((sandbox_id, port)) = e2b_target(&proxy, &req, &host) {
        if let Some(node) = elsewhere(core, &sandbox_id, here).await {
            return to_owner(core, &node, peer, req).await;
        }
        return serve_e2b(&proxy, peer, &host, sandbox_id, port, req).await;
    }
    let Some(slug) = slug_of(&host, &proxy.suffix) else {
        let app = slug_of(&host, &proxy.apps_suffix)
            .map(str::to_string)
            .or_else(|| core.domain_route(&host_name(&host)).map(|d| d.slug));
        return match app {
            Some(app) => serve_app(&proxy, peer, &host, &app, here, req).await,
            None => pages::not_found(),
        };
    };
    let preview = match core.preview_by_slug(slug).await {
        Ok(Some(p)) => p,
        Ok(None) => return pages::not_found(),
        Err(e) => {
            tracing::error!(error = %e, "preview lookup");
            return pages::bad_gateway("the preview could not be looked up");
        }
    };
    if let Some(node) = elsewhere(core, &preview.sandbox_id, here).await {
        return to_owner(core, &node, peer, req).await;
    }
    let presented = credentials::take(&mut req);
    if preview.visibility == Visibility::Public && !proxy.limiter.allow(peer.ip(), Instant::now()) {
        return pages::rate_limited();
    }
    let (grant, set_cookie) = match grant::authorize(core, &preview, &presented).await {
        Ok(g) => g,
        Err(page) => return page,
    };
    let page_request = matches!(*req.method(), Method::GET | Method::HEAD);
    let resp = if presented.token_in_query && page_request && proxy.redirect_tokens {
        let scheme = core.config.preview.url_scheme();
        let rest = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        pages::see_other(&format!("{scheme}://{host}{rest}"))
    } else {
        let held = grant.lost(core.clone(), slug.to_string(), preview.id.clone());
        forward(core, &preview, peer, &host, req, held).await
    };
    finish(core, resp, set_cookie)
}

/// The node whose proxy serves `sandbox_id`, when another node runs it
/// and this request did not come from a node already.
async fn elsewhere(core: &Core, sandbox_id: &str, here: bool) -> Option<NodeRecord> {
    if here {
        return None;
    }
    match core.sandbox_owner(sandbox_id).await {
        Ok(Owner::Node(n)) if n.proxy_url.is_some() => Some(n),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(%sandbox_id, error = %e, "sandbox owner lookup");
            None
        }
    }
}

/// The request, untouched (its credentials, cookies and host), to the
/// proxy of the node that runs its sandbox.
async fn to_owner(core: &Core, node: &NodeRecord, peer: SocketAddr, req: Request) -> Response {
    let base = node.proxy_url.as_deref().unwrap_or_default();
    crate::cluster::forward::to_node(core, node, base, Some(peer.ip()), req, true)
        .await
        .unwrap_or_else(|why| pages::bad_gateway(&why))
}

/// A deployment's public URL (or a verified custom domain of it): one of
/// its serving instances in turn, public, rate limited per client like a
/// public preview; every Hearth credential is stripped as for previews.
async fn serve_app(
    proxy: &Proxy,
    peer: SocketAddr,
    host: &str,
    slug: &str,
    here: bool,
    mut req: Request,
) -> Response {
    let core = &proxy.core;
    let app = match core.app_route(slug).await {
        Ok(Some(r)) => r,
        Ok(None) => return pages::not_found(),
        Err(e) => {
            tracing::error!(error = %e, "deployment lookup");
            return pages::bad_gateway("the deployment could not be looked up");
        }
    };
    if !proxy.limiter.allow(peer.ip(), Instant::now()) {
        return pages::rate_limited();
    }
    let candidates = core.instance_order(&app);
    if candidates.is_empty() {
        // Its instances run on another node: that node's proxy serves it.
        for instance in &app.instances {
            if let Some(node) = elsewhere(core, instance, here).await {
                return to_owner(core, &node, peer, req).await;
            }
        }
        return pages::not_found();
    }
    credentials::take(&mut req);
    if let Some(page) = declared_too_large(core, &req) {
        return page;
    }
    // The next instance in turn; one that cannot take a connection (it
    // just died) passes the request on to the next, before a byte of it
    // was sent.
    let mut last = None;
    for instance in candidates {
        // The instance as a public preview of its port.
        let route = PreviewRecord {
            id: app.deployment_id.clone(),
            tenant_id: app.tenant_id.clone(),
            sandbox_id: instance,
            port: app.port,
            visibility: Visibility::Public,
            slug: app.slug.clone(),
            created_at: app.created_at,
        };
        match connect(core, &route).await {
            Ok(upstream) => {
                let held = std::future::pending();
                let resp = relay(core, &route, upstream, peer, host, req, held).await;
                return finish(core, resp, None);
            }
            Err(page) => last = Some(page),
        }
    }
    finish(core, last.unwrap_or_else(pages::not_found), None)
}

/// Adds the proxy's own headers to an answer: the frame-ancestors policy,
/// and the share cookie when a token just opened the preview.
fn finish(core: &Core, mut resp: Response, set_cookie: Option<(String, i64)>) -> Response {
    let cfg = &core.config.preview;
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("frame-ancestors {}", cfg.frame_ancestors)) {
        headers.append(header::CONTENT_SECURITY_POLICY, v);
    }
    if let Some((t, expires_at)) = set_cookie {
        let max_age = ((expires_at - core.now_ms()) / 1000).max(0);
        if let Ok(v) = HeaderValue::from_str(&credentials::cookie(&t, max_age, cfg.embed)) {
            headers.append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// The connection to a preview's port in its sandbox: an HTTP/1.1 client
/// over the agent's tunnel, or the page that says why there is none.
type Upstream = hyper::client::conn::http1::SendRequest<http_body_util::Limited<Body>>;

/// Opens [`Upstream`] to the preview's port, waking a paused persistent
/// sandbox first.
async fn connect(core: &Arc<Core>, preview: &PreviewRecord) -> Result<Upstream, Response> {
    let caller = Caller::system(&preview.tenant_id, "preview");
    // Wake a paused persistent sandbox; anything else not running says so.
    let rec = match core.get_sandbox(&caller, &preview.sandbox_id).await {
        Ok(r) => r,
        Err(_) => return Err(pages::sandbox_down("gone")),
    };
    if rec.state.can_resume() && rec.persistent {
        if let Err(e) = core.resume_sandbox(&caller, &rec.id).await {
            tracing::warn!(sandbox_id = %rec.id, error = %e, "wake on preview request failed");
            return Err(pages::sandbox_down("paused and could not be resumed"));
        }
    }
    let guest = match core.guest(&caller, &preview.sandbox_id, true).await {
        Ok(g) => g,
        Err(_) => {
            let state = core
                .get_sandbox(&caller, &preview.sandbox_id)
                .await
                .map_or(rec.state, |r| r.state);
            return Err(pages::sandbox_down(state.as_str()));
        }
    };
    let tunnel = match guest.tunnel(preview.port).await {
        Ok(t) => t,
        Err(e) if e.code == "port_closed" => return Err(pages::app_not_running(preview.port)),
        Err(e) => {
            tracing::warn!(sandbox_id = %preview.sandbox_id, error = %e, "preview tunnel");
            return Err(pages::bad_gateway(
                "the sandbox's agent did not open a connection",
            ));
        }
    };
    let (sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(tunnel)).await {
        Ok(x) => x,
        Err(e) => return Err(pages::bad_gateway(&format!("connection failed: {e}"))),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "preview upstream connection");
        }
    });
    Ok(sender)
}

/// A request body over the proxy's limit, by its declared length.
fn declared_too_large(core: &Core, req: &Request) -> Option<Response> {
    let max = core.config.preview.max_body_bytes;
    let len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())?;
    (len > max).then(|| pages::too_large(max))
}

/// Sends `req` to the preview's port in its sandbox and streams the answer.
/// A connection upgraded (a WebSocket) lives until either side closes it
/// or `held` completes: the grant that let it through is gone.
async fn forward(
    core: &Arc<Core>,
    preview: &PreviewRecord,
    peer: SocketAddr,
    host: &str,
    req: Request,
    held: impl std::future::Future<Output = ()> + Send + 'static,
) -> Response {
    if let Some(page) = declared_too_large(core, &req) {
        return page;
    }
    match connect(core, preview).await {
        Ok(upstream) => relay(core, preview, upstream, peer, host, req, held).await,
        Err(page) => page,
    }
}

/// Sends `req` over `sender` and streams the answer back (see [`forward`]).
async fn relay(
    core: &Arc<Core>,
    preview: &PreviewRecord,
    mut sender: Upstream,
    peer: SocketAddr,
    host: &str,
    mut req: Request,
    held: impl std::future::Future<Output = ()> + Send + 'static,
) -> Response {
    let cfg = &core.config.preview;
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    if !parts.headers.contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(host) {
            parts.headers.insert(header::HOST, v);
        }
    }
    let h = &mut parts.headers;
    let forwarded_for = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    for (name, value) in [
        ("x-forwarded-for", forwarded_for),
        ("x-forwarded-proto", cfg.url_scheme().to_string()),
        ("x-forwarded-host", host.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    parts.version = Version::HTTP_11;
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"));
    let limit = usize::try_from(cfg.max_body_bytes).unwrap_or(usize::MAX);
    let upstream_req = Request::from_parts(parts, http_body_util::Limited::new(body, limit));

    let deadline = Duration::from_millis(cfg.upstream_timeout_ms);
    let mut resp = match tokio::time::timeout(deadline, sender.send_request(upstream_req)).await {
        Err(_) => return pages::timeout(deadline.as_secs()),
        Ok(Err(e)) => {
            let too_big = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_big {
                return pages::too_large(cfg.max_body_bytes);
            }
            return pages::bad_gateway(&format!("{e}"));
        }
        Ok(Ok(r)) => r,
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client) = client_upgrade {
            let upstream = hyper::upgrade::on(&mut resp);
            let sandbox_id = preview.sandbox_id.clone();
            tokio::spawn(async move {
                match tokio::try_join!(client, upstream) {
                    Ok((c, u)) => {
                        let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut c, &mut u) => {}
                            () = held => {
                                tracing::info!(%sandbox_id, "preview connection closed: its access was revoked or expired");
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "preview upgrade"),
                }
            });
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, Body::empty());
        }
    }
    strip_hop_by_hop(resp.headers_mut(), false);
    resp.map(Body::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_come_from_the_preview_host_only() {
        let s = ".preview.localhost";
        assert_eq!(slug_of("abc123.preview.localhost:7071", s), Some("abc123"));
        assert_eq!(slug_of("ABC.Preview.Localhost", s), Some("ABC"));
        assert_eq!(slug_of("abc.preview.localhost.", s), Some("abc"));
        for bad in [
            "preview.localhost",
            ".preview.localhost",
            "a.b.preview.localhost",
            "abc.preview.example.com",
            "localhost:7071",
            "",
        ] {
            assert_eq!(slug_of(bad, s), None, "{bad:?}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        let mut up = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-app"], "kept");
        strip_hop_by_hop(&mut up, true);
        assert_eq!(up[header::CONNECTION], "upgrade");
        assert_eq!(up[header::UPGRADE], "websocket");
    }
}
