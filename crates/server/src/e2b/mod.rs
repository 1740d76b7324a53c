//! E2B compatibility: the official E2B SDKs work against Hearth with
//! `E2B_API_URL`, `E2B_SANDBOX_URL` and `E2B_API_KEY` pointed at it.
//!
//! - [`control`]: E2B's control API (create, list, get, kill, timeout,
//!   pause, resume, connect, ...), mounted at `/e2b` on the API listener,
//!   authenticated with `X-API-Key` carrying a Hearth key, mapped onto
//!   Hearth's core: no second implementation of a lifecycle.
//! - [`envd`]: E2B's in-sandbox protocol (Connect RPC `process.Process`
//!   and `filesystem.Filesystem`, and REST `/files`), served host-side by
//!   the proxy listener and translated to Hearth's own guest agent.
//!
//! Ids: E2B puts sandbox ids in host names (`<port>-<id>.<domain>`), where
//! `_` does not belong, so a Hearth id `sbx_abc` is `sbx-abc` to E2B
//! clients ([`to_e2b`], [`from_e2b`]). Every sandbox is `secure` in E2B's
//! sense: its envd answers only requests with its access token
//! ([`access_token`]), derived from the id with the server's key.

pub mod control;
pub mod envd;

use base64::Engine;

use crate::core::Core;

/// The envd version Hearth's translation speaks: the SDK turns on
/// features by it (default user 0.4.0, stdin 0.3.0, closing stdin 0.5.2;
/// below 0.5.7 uploads are multipart, which Hearth serves).
pub const ENVD_VERSION: &str = "0.5.6";

/// The port E2B's SDK addresses envd at.
pub const ENVD_PORT: u16 = 49983;

/// The tag of sandboxes created through E2B's API: their ports are public
/// at `<port>-<sandboxID>.<domain>`, as E2B's are (other sandboxes' ports
/// answer only with the access token; Hearth's previews are unchanged).
pub const PUBLIC_PORTS_TAG: &str = "e2b-public-ports";

/// The application as E2B's API alone, at the root of a listener of its
/// own (`[e2b] listen`): every path is served as `/e2b<path>`, with the
/// same keys, limits, scopes and audit log as there.
pub fn standalone(
    app: axum::Router,
) -> tower::util::MapRequest<axum::Router, fn(axum::extract::Request) -> axum::extract::Request> {
    tower::ServiceBuilder::new()
        .map_request(under_e2b as fn(_) -> _)
        .service(app)
}

fn under_e2b(mut req: axum::extract::Request) -> axum::extract::Request {
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = format!("/e2b{pq}").parse().ok();
    if let Ok(uri) = axum::http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    req
}

/// A Hearth sandbox id as E2B clients see it.
pub fn to_e2b(id: &str) -> String {
    id.replace('_', "-")
}

/// An E2B sandbox id as Hearth knows it.
pub fn from_e2b(id: &str) -> String {
    id.replace('-', "_")
}

/// The tokens E2B hands out per sandbox. Only this server derives them
/// (from its sealing key and the sandbox id), and they need no storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// envd's `X-Access-Token` (`envdAccessToken`): every envd call.
    Envd,
    /// `e2b-traffic-access-token` (`trafficAccessToken`): the ports of a
    /// sandbox created with `allowPublicTraffic: false`.
    Traffic,
}

impl Token {
    fn purpose_and_prefix(self) -> (&'static str, &'static str) {
        match self {
            Token::Envd => ("e2b-envd-access-token", "ea_"),
            Token::Traffic => ("e2b-traffic-access-token", "ta_"),
        }
    }

    /// The token of this kind for a sandbox.
    pub fn of(self, core: &Core, sandbox_id: &str) -> String {
        let (purpose, prefix) = self.purpose_and_prefix();
        let raw = core.derive_secret(purpose, sandbox_id);
        format!(
            "{prefix}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        )
    }

    /// Whether `presented` is this sandbox's token (in constant time).
    pub fn matches(self, core: &Core, sandbox_id: &str, presented: &str) -> bool {
        let want = self.of(core, sandbox_id);
        want.len() == presented.len()
            && want
                .bytes()
                .zip(presented.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_standalone_listener_serves_every_path_under_e2b() {
        let req = axum::extract::Request::builder()
            .uri("/v2/sandboxes?state=running")
            .body(axum::body::Body::empty())
            .expect("request");
        assert_eq!(
            super::under_e2b(req).uri().to_string(),
            "/e2b/v2/sandboxes?state=running"
        );
    }

    #[test]
    fn ids_round_trip_and_fit_in_host_names() {
        let e = super::to_e2b("sbx_ab12cd");
        assert_eq!(e, "sbx-ab12cd");
        assert_eq!(super::from_e2b(&e), "sbx_ab12cd");
    }
}
