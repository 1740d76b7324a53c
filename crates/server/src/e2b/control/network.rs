//! E2B's sandbox network settings as Hearth's egress policy: `allowOut`
//! entries become allow rules ahead of the `denyOut` entries (E2B's allowed
//! entries win), and `allow_internet_access: false` makes the default deny.
//! `dnsServers` (8.8.8.8 unless given) are allowed on port 53 when an
//! allowed entry is a domain, as E2B does. The SOCKS egress proxy, request
//! host masking, HTTPS ports and per-domain transform rules are refused.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::{body_of, sandbox, E2bError, E2bResult};
use crate::core::sandboxes::network::{Destination, Effect, EgressPolicy, EgressRule};
use crate::routes::{AppState, Auth};

/// E2B's default nameserver, allowed with a domain in `allowOut`.
const DEFAULT_DNS: &str = "8.8.8.8";

/// `network` on create, and the body of `PUT /sandboxes/{id}/network`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NetworkConfig {
    pub allow_public_traffic: Option<bool>,
    allow_out: Option<Vec<String>>,
    deny_out: Option<Vec<String>>,
    dns_servers: Option<Vec<String>>,
    #[serde(rename = "allow_internet_access")]
    pub allow_internet_access: Option<bool>,
    egress_proxy: Option<Value>,
    mask_request_host: Option<Value>,
    https_ports: Option<Value>,
    rules: Option<Value>,
}

impl NetworkConfig {
    /// The egress policy these settings mean (`None`: no rules, Hearth's
    /// default), or why they cannot be served.
    pub fn policy(&self, internet: bool) -> E2bResult<Option<EgressPolicy>> {
        let unsupported = [
            ("network.egressProxy", &self.egress_proxy),
            ("network.maskRequestHost", &self.mask_request_host),
            ("network.httpsPorts", &self.https_ports),
            ("network.rules", &self.rules),
        ]
        .into_iter()
        .find(|(_, v)| v.as_ref().is_some_and(|v| !v.is_null()));
        if let Some((field, _)) = unsupported {
            return Err(E2bError::not_supported(field));
        }
        let allow = self.allow_out.clone().unwrap_or_default();
        let deny = self.deny_out.clone().unwrap_or_default();
        if allow.is_empty() && deny.is_empty() {
            return Ok((!internet).then(|| EgressPolicy {
                default_effect: Effect::Deny,
                rules: vec![],
            }));
        }
        let rule = |effect, destination: &str, ports: Option<&str>| EgressRule {
            effect,
            destination: destination.trim().to_string(),
            ports: ports.map(str::to_string),
            protocol: None,
        };
        let names_a_host = allow
            .iter()
            .any(|d| matches!(Destination::parse(d), Ok(Destination::Host(_))));
        let dns = match (names_a_host, &self.dns_servers) {
            (false, _) => vec![],
            (true, None) => vec![DEFAULT_DNS.to_string()],
            (true, Some(servers)) => servers.clone(),
        };
        let rules = dns
            .iter()
            .map(|d| rule(Effect::Allow, d, Some("53")))
            .chain(allow.iter().map(|d| rule(Effect::Allow, d, None)))
            .chain(deny.iter().map(|d| rule(Effect::Deny, d, None)))
            .collect();
        let policy = EgressPolicy {
            default_effect: match internet {
                true => Effect::Allow,
                false => Effect::Deny,
            },
            rules,
        };
        let mut bad = vec![];
        crate::routes::network::check_policy(&mut bad, "network", &policy);
        if let Some(d) = bad.first() {
            return Err(E2bError::bad_request(format!("{}: {}", d.field, d.message)));
        }
        Ok(Some(policy))
    }
}

/// `PUT /sandboxes/{id}/network`: replaces the sandbox's egress settings
/// (what is omitted is cleared).
pub async fn update(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> E2bResult<StatusCode> {
    let b: NetworkConfig = body_of(&body)?;
    let rec = sandbox(&state, &caller, &id).await?;
    let policy = b.policy(b.allow_internet_access.unwrap_or(true))?;
    state.set_egress_policy(&caller, &rec.id, policy).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(allow: &[&str], deny: &[&str]) -> NetworkConfig {
        let list = |l: &[&str]| Some(l.iter().map(|s| s.to_string()).collect());
        NetworkConfig {
            allow_out: list(allow),
            deny_out: list(deny),
            ..Default::default()
        }
    }

    #[test]
    fn allowed_entries_come_before_denied_ones() {
        let p = config(&["203.0.113.7"], &["0.0.0.0/0"])
            .policy(true)
            .ok()
            .flatten();
        let p = p.expect("a policy");
        assert_eq!(p.default_effect, Effect::Allow);
        let got: Vec<_> = p
            .rules
            .iter()
            .map(|r| (r.effect, r.destination.as_str()))
            .collect();
        assert_eq!(
            got,
            [(Effect::Allow, "203.0.113.7"), (Effect::Deny, "0.0.0.0/0")]
        );
    }

    #[test]
    fn a_domain_allows_the_dns_servers_on_port_53() {
        let p = config(&["example.com"], &["0.0.0.0/0"])
            .policy(true)
            .ok()
            .flatten();
        let first = p.expect("a policy").rules.remove(0);
        assert_eq!(
            (first.destination.as_str(), first.ports.as_deref()),
            (DEFAULT_DNS, Some("53"))
        );
    }

    #[test]
    fn no_internet_and_no_rules_denies_everything_and_no_rules_is_no_policy() {
        let none = NetworkConfig::default();
        assert_eq!(none.policy(true).ok(), Some(None));
        let p = none.policy(false).ok().flatten().expect("a policy");
        assert_eq!((p.default_effect, p.rules.len()), (Effect::Deny, 0));
    }

    #[test]
    fn unsupported_settings_and_bad_destinations_are_refused() {
        let proxy = NetworkConfig {
            egress_proxy: Some(serde_json::json!({"address": "socks5://x"})),
            ..Default::default()
        };
        let e = proxy.policy(true).expect_err("refused");
        assert_eq!(e.status, StatusCode::NOT_IMPLEMENTED);
        let e = config(&["not a host!"], &[])
            .policy(true)
            .expect_err("refused");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
