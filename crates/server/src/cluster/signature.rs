//! `Hearth-Forwarded-By: <node> <unix ms> <client address or -> <mac>`: a
//! node's word that it forwarded this request for that client, bound to
//! its method and path and good for [`MAX_AGE_MS`]. The mac is derived with the sealing key every node
//! shares (`secrets_key_file`), so only a node can make one.

use std::net::IpAddr;

use axum::extract::Request;
use axum::http::{HeaderValue, Method};
use base64::Engine;

use super::Forwarded;
use crate::core::Core;

pub const HEADER: &str = "hearth-forwarded-by";

/// How far a signature's time may be from this node's clock, either way
/// (clocks differ a little; a captured header is soon useless).
pub const MAX_AGE_MS: i64 = 60_000;

const CONTEXT: &str = "hearth-forwarded-by";

fn mac(core: &Core, node: &str, at: i64, client: &str, method: &Method, path: &str) -> String {
    let input = format!("{node}\n{at}\n{client}\n{method}\n{path}");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(core.derive_secret(CONTEXT, &input))
}

/// The header this node puts on a request it forwards for `client`.
pub fn sign(core: &Core, method: &Method, path: &str, client: Option<IpAddr>) -> HeaderValue {
    let node = core.node_id();
    let at = core.now_ms();
    let client = client.map_or_else(|| "-".to_string(), |ip| ip.to_string());
    let v = format!(
        "{node} {at} {client} {}",
        mac(core, node, at, &client, method, path)
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Takes the header off `req` and answers whether another node made it
/// for this very request, recently; with the client it names.
pub fn verify(core: &Core, req: &mut Request) -> Option<Forwarded> {
    let value = req.headers_mut().remove(HEADER)?;
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    check(core, value.to_str().ok()?, req.method(), path)
}

fn check(core: &Core, value: &str, method: &Method, path: &str) -> Option<Forwarded> {
    let mut parts = value.split(' ');
    let (node, at, client, presented) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let at: i64 = at.parse().ok()?;
    if (core.now_ms() - at).abs() > MAX_AGE_MS {
        return None;
    }
    let want = mac(core, node, at, client, method, path);
    let same = want.len() == presented.len()
        && want
            .bytes()
            .zip(presented.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    same.then(|| Forwarded {
        node_id: node.to_string(),
        client_ip: client.parse().ok(),
    })
}
