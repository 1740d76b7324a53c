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

/// A Hearth sandbox id as E2B clients see it.
pub fn to_e2b(id: &str) -> String {
    id.replace('_', "-")
}

/// An E2B sandbox id as Hearth knows it.
pub fn from_e2b(id: &str) -> String {
    id.replace('-', "_")
}

/// The sandbox's envd access token (`X-Access-Token`): only this server
/// derives it, and it needs no storage.
pub fn access_token(core: &Core, sandbox_id: &str) -> String {
    let raw = core.derive_secret("e2b-envd-access-token", sandbox_id);
    format!(
        "ea_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    )
}

/// Whether `presented` is the sandbox's access token (in constant time).
pub fn token_matches(core: &Core, sandbox_id: &str, presented: &str) -> bool {
    let want = access_token(core, sandbox_id);
    want.len() == presented.len()
        && want
            .bytes()
            .zip(presented.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_round_trip_and_fit_in_host_names() {
        let e = super::to_e2b("sbx_ab12cd");
        assert_eq!(e, "sbx-ab12cd");
        assert_eq!(super::from_e2b(&e), "sbx_ab12cd");
    }
}
