//! A sandbox's egress policy (the shape of MIOSA's network policy) and its
//! translation into the VM's own nftables chain. A policy only narrows
//! what the base chains leave: the host, other sandboxes, private,
//! link-local and multicast ranges are dropped before it is consulted.
//!
//! Rules are evaluated top to bottom, first match wins, then
//! `default_effect`. A rule's destination is a CIDR, an address or a
//! hostname (`*.example.com` matches subdomains); a hostname rule matches
//! the addresses the VM's DNS answered for that name (and the addresses
//! the host resolved when the policy was applied), each for the answer's
//! TTL but at least [`MIN_HOST_TTL`].

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::nft;

/// Most rules one policy may hold.
pub const MAX_RULES: usize = 256;
/// Most hostname rules one policy may hold (each is a set and DNS work).
pub const MAX_HOST_RULES: usize = 32;
/// How long an address answered for a hostname keeps matching its rule at
/// least: a long-lived connection outlives a short DNS TTL.
pub const MIN_HOST_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    fn verdict(self) -> &'static str {
        match self {
            Effect::Allow => "accept",
            Effect::Deny => "drop",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    #[default]
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EgressRule {
    pub effect: Effect,
    /// `203.0.113.0/24`, `203.0.113.7` or `api.example.com` (`*.example.com`
    /// for its subdomains); IPv4 only.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 253, example = "203.0.113.0/24")
    )]
    pub destination: String,
    /// `443` or `8000-8100`, within 1-65535; absent: every port.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^\s*[0-9]+\s*(-\s*[0-9]+\s*)?$", example = "443")
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
}

/// A sandbox's egress policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EgressPolicy {
    pub default_effect: Effect,
    /// Top to bottom, first match wins; at most 256 rules (`MAX_RULES`), of
    /// which at most 32 name a host (`MAX_HOST_RULES`).
    #[cfg_attr(feature = "openapi", schema(max_items = 256))]
    #[serde(default)]
    pub rules: Vec<EgressRule>,
}

/// What a rule's destination is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Net(Ipv4Net),
    /// Lower case, no trailing dot; `*.` prefix for subdomains.
    Host(String),
}

impl Destination {
    pub fn parse(s: &str) -> Result<Destination, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<Ipv4Net>() {
            return Ok(Destination::Net(net.trunc()));
        }
        if let Ok(ip) = s.parse::<Ipv4Addr>() {
            return Ok(Destination::Net(Ipv4Net::from(ip)));
        }
        if s.parse::<IpAddr>().is_ok() || s.parse::<ipnet::Ipv6Net>().is_ok() {
            return Err(
                "IPv6 destinations are not supported: sandboxes have no IPv6 egress".into(),
            );
        }
        let host = s.trim_end_matches('.').to_ascii_lowercase();
        let bare = host.strip_prefix("*.").unwrap_or(&host);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let all_digits = bare
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'/');
        if bare.is_empty() || host.len() > 253 || all_digits || !bare.split('.').all(label_ok) {
            return Err(format!(
                "{s:?} is not a CIDR, an IPv4 address or a hostname"
            ));
        }
        Ok(Destination::Host(host))
    }

    /// Whether `name` (as a DNS answer names it) is covered.
    pub fn matches_name(&self, name: &str) -> bool {
        let Destination::Host(h) = self else {
            return false;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        match h.strip_prefix("*.") {
            Some(suffix) => name.len() > suffix.len() && name.ends_with(&format!(".{suffix}")),
            None => name == *h,
        }
    }
}

fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?} must be a port (443) or a range (8000-8100) within 1-65535");
    let (lo, hi) = match s.trim().split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let lo: u16 = lo.parse().map_err(|_| bad())?;
    let hi: u16 = hi.parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// A hostname rule as the DNS forwarder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostRule {
    /// The nftables set holding the addresses answered for it.
    pub set: String,
    pub dest: Destination,
    pub effect: Effect,
}

/// A policy ready for nftables: the rule bodies of the VM's chain and the
/// hostname rules, whose sets those bodies use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Compiled {
    pub rules: Vec<String>,
    pub host_rules: Vec<HostRule>,
    pub default_effect: Effect,
}

impl Compiled {
    /// Whether the VM's DNS resolves `name`: the first hostname rule that
    /// covers it decides, else the default. Under a deny default a guest
    /// resolves only the names its allow rules name, so DNS cannot carry
    /// data out either.
    pub(crate) fn resolves(&self, name: &str) -> bool {
        match self.host_rules.iter().find(|r| r.dest.matches_name(name)) {
            Some(r) => r.effect == Effect::Allow,
            None => self.default_effect == Effect::Allow,
        }
    }
}

impl EgressPolicy {
    /// Everything wrong with the policy at once, each naming its field
    /// (`rules[2].ports`).
    pub fn validate(&self) -> Result<(), Vec<(String, String)>> {
        let mut bad = Vec::new();
        if self.rules.len() > MAX_RULES {
            bad.push((
                "rules".to_string(),
                format!("{} rules; at most {MAX_RULES}", self.rules.len()),
            ));
        }
        let mut hosts = 0;
        for (i, r) in self.rules.iter().enumerate() {
            match Destination::parse(&r.destination) {
                Ok(Destination::Host(_)) => hosts += 1,
                Ok(Destination::Net(net)) if r.effect == Effect::Allow => {
                    if let Some(range) = never_reachable(net) {
                        bad.push((
                            format!("rules[{i}].destination"),
                            format!(
                                "{net} lies in {range}, which sandboxes can never reach; an allow rule cannot open it"
                            ),
                        ));
                    }
                }
                Ok(_) => {}
                Err(e) => bad.push((format!("rules[{i}].destination"), e)),
            }
            if let Some(p) = &r.ports {
                if let Err(e) = parse_ports(p) {
                    bad.push((format!("rules[{i}].ports"), e));
                }
            }
        }
        if hosts > MAX_HOST_RULES {
            bad.push((
                "rules".to_string(),
                format!("{hosts} hostname rules; at most {MAX_HOST_RULES}"),
            ));
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad)
        }
    }

    /// The VM `slot`'s chain for this policy (validated first).
    pub(crate) fn compile(&self, slot: u32) -> Result<Compiled, Vec<(String, String)>> {
        self.validate()?;
        let mut rules = Vec::new();
        let mut host_rules = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let dest = Destination::parse(&r.destination)
                .map_err(|e| vec![(format!("rules[{i}].destination"), e)])?;
            let mut body = String::new();
            match &dest {
                Destination::Net(n) => {
                    let _ = write!(body, "ip daddr {n} ");
                }
                Destination::Host(_) => {
                    let set = format!("h{slot}_{i}");
                    let _ = write!(body, "ip daddr @{set} ");
                    host_rules.push(HostRule {
                        set,
                        dest: dest.clone(),
                        effect: r.effect,
                    });
                }
            }
            let ports = r
                .ports
                .as_deref()
                .map(parse_ports)
                .transpose()
                .map_err(|e| vec![(format!("rules[{i}].ports"), e)])?;
            let ports = ports.map(|(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            });
            match (r.protocol.unwrap_or_default(), ports) {
                (Protocol::Tcp, None) => body.push_str("meta l4proto tcp "),
                (Protocol::Udp, None) => body.push_str("meta l4proto udp "),
                (Protocol::Any, None) => {}
                (Protocol::Tcp, Some(p)) => {
                    let _ = write!(body, "tcp dport {p} ");
                }
                (Protocol::Udp, Some(p)) => {
                    let _ = write!(body, "udp dport {p} ");
                }
                (Protocol::Any, Some(p)) => {
                    let _ = write!(body, "meta l4proto {{ tcp, udp }} th dport {p} ");
                }
            }
            body.push_str(r.effect.verdict());
            rules.push(body);
        }
        rules.push(self.default_effect.verdict().to_string());
        Ok(Compiled {
            rules,
            host_rules,
            default_effect: self.default_effect,
        })
    }
}

/// The base range `net` lies in entirely, if any.
fn never_reachable(net: Ipv4Net) -> Option<&'static str> {
    nft::BLOCKED_V4
        .iter()
        .copied()
        .find(|r| r.parse::<Ipv4Net>().is_ok_and(|b| b.contains(&net)))
}

/// The chain for no policy at all: everything the base chains leave.
pub(crate) fn allow_all() -> Compiled {
    Compiled {
        rules: vec!["accept".into()],
        host_rules: Vec::new(),
        default_effect: Effect::Allow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        effect: Effect,
        dest: &str,
        ports: Option<&str>,
        protocol: Option<Protocol>,
    ) -> EgressRule {
        EgressRule {
            effect,
            destination: dest.into(),
            ports: ports.map(Into::into),
            protocol,
        }
    }

    #[test]
    fn rules_compile_in_order_and_end_with_the_default() {
        let p = EgressPolicy {
            default_effect: Effect::Deny,
            rules: vec![
                rule(
                    Effect::Allow,
                    "203.0.113.0/24",
                    Some("443"),
                    Some(Protocol::Tcp),
                ),
                rule(Effect::Allow, "api.example.com", Some("8000-8100"), None),
                rule(Effect::Deny, "198.51.100.7", None, Some(Protocol::Udp)),
            ],
        };
        let c = p.compile(4).unwrap();
        assert_eq!(
            c.rules,
            [
                "ip daddr 203.0.113.0/24 tcp dport 443 accept",
                "ip daddr @h4_1 meta l4proto { tcp, udp } th dport 8000-8100 accept",
                "ip daddr 198.51.100.7/32 meta l4proto udp drop",
                "drop",
            ]
        );
        assert_eq!(
            c.host_rules,
            [HostRule {
                set: "h4_1".into(),
                dest: Destination::Host("api.example.com".into()),
                effect: Effect::Allow
            }]
        );
        // DNS follows the policy: under deny, only names allowed by name.
        assert!(c.resolves("API.example.com."));
        assert!(!c.resolves("exfil.attacker.example"));
        assert!(allow_all().resolves("anything.example"));
        let mut p2 = p.clone();
        p2.default_effect = Effect::Allow;
        p2.rules[1].effect = Effect::Deny;
        let c2 = p2.compile(4).unwrap();
        assert!(!c2.resolves("api.example.com") && c2.resolves("other.example"));
    }

    #[test]
    fn every_bad_field_is_named() {
        let p = EgressPolicy {
            default_effect: Effect::Allow,
            rules: vec![
                rule(Effect::Deny, "not a host!", None, None),
                rule(Effect::Allow, "10.1.0.0/16", None, None),
                rule(Effect::Deny, "1.2.3.4", Some("0"), None),
                rule(Effect::Deny, "1.2.3.4", Some("90-80"), None),
                rule(Effect::Deny, "2001:db8::1", None, None),
                rule(Effect::Deny, "10.1.0.0/16", None, None),
            ],
        };
        let bad = p.validate().unwrap_err();
        let fields: Vec<&str> = bad.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "rules[0].destination",
                "rules[1].destination",
                "rules[2].ports",
                "rules[3].ports",
                "rules[4].destination"
            ],
            "{bad:?}"
        );
        assert!(bad[1].1.contains("10.0.0.0/8"), "{bad:?}");
    }

    #[test]
    fn hostnames_match_exactly_or_as_subdomains() {
        let d = Destination::parse("API.Example.com.").unwrap();
        assert!(d.matches_name("api.example.com."));
        assert!(!d.matches_name("x.api.example.com"));
        let w = Destination::parse("*.example.com").unwrap();
        assert!(w.matches_name("a.b.example.com"));
        assert!(!w.matches_name("example.com"));
        assert!(!w.matches_name("badexample.com"));
        assert!(Destination::parse("1.2.3").is_err());
        assert_eq!(
            Destination::parse("203.0.113.9/24").unwrap(),
            Destination::Net("203.0.113.0/24".parse().unwrap())
        );
    }

    #[test]
    fn wire_shape_is_mioas_network_policy() {
        let json = r#"{"default_effect":"deny","rules":[{"effect":"allow","destination":"api.example.com","ports":"443","protocol":"tcp"}]}"#;
        let p: EgressPolicy = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), json);
        assert!(serde_json::from_str::<EgressPolicy>(r#"{"default_effect":"maybe"}"#).is_err());
    }
}
