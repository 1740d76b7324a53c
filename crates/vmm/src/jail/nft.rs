//! The host's packet filter for VM traffic: one nftables table
//! (`inet hearth`) applied with the `nft` tool in atomic transactions.
//!
//! Every VM's network namespace reaches the host through its own veth
//! (`hv<slot>`). The base chains, the same for every VM:
//! - `input`: from a VM, only DNS to its own host-side address (Hearth's
//!   forwarder) and replies to connections the host opened; every other
//!   packet to any host address, loopback included, is dropped.
//! - `forward`: nothing new into a VM (so no VM reaches another); from a
//!   VM, no IPv6, nothing to the blocked ranges (RFC 1918, CGNAT,
//!   link-local, loopback, multicast, reserved) or to networks the host is
//!   directly attached to; what is left goes through the VM's own chain.
//! - `postrouting`: VM traffic leaving the host is masqueraded.
//!
//! A VM's own chain (`egress_<slot>`, reached through the `egress` verdict
//! map keyed by interface) holds what its policy allows of what is left.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use tokio::io::AsyncWriteExt;

use super::policy::{Compiled, MIN_HOST_TTL};
use super::JailError;

pub(crate) const TABLE: &str = "hearth";

/// Ranges no guest packet is ever forwarded to, under any policy.
pub(crate) const BLOCKED_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// The table, its sets and base chains. Idempotent: it refills the sets
/// and base chains and leaves the per-VM chains of running VMs alone.
pub(crate) fn base_ruleset(subnet: Ipv4Net, host_nets: &[Ipv4Net]) -> String {
    let t = TABLE;
    let mut s = String::new();
    let _ = writeln!(s, "add table inet {t}");
    for set in ["blocked4", "hostnets4"] {
        let _ = writeln!(
            s,
            "add set inet {t} {set} {{ type ipv4_addr; flags interval; auto-merge; }}"
        );
        let _ = writeln!(s, "flush set inet {t} {set}");
    }
    let _ = writeln!(
        s,
        "add element inet {t} blocked4 {{ {} }}",
        BLOCKED_V4.join(", ")
    );
    if !host_nets.is_empty() {
        let nets: Vec<String> = host_nets.iter().map(|n| n.to_string()).collect();
        let _ = writeln!(
            s,
            "add element inet {t} hostnets4 {{ {} }}",
            nets.join(", ")
        );
    }
    let _ = writeln!(s, "add map inet {t} egress {{ type ifname : verdict; }}");
    for (chain, hook) in [
        (
            "input",
            "type filter hook input priority filter - 10; policy accept;",
        ),
        (
            "forward",
            "type filter hook forward priority filter - 10; policy accept;",
        ),
        (
            "postrouting",
            "type nat hook postrouting priority srcnat; policy accept;",
        ),
    ] {
        let _ = writeln!(s, "add chain inet {t} {chain} {{ {hook} }}");
        let _ = writeln!(s, "flush chain inet {t} {chain}");
    }
    let rules = [
        // Hearth's DNS forwarder listens on each VM's host-side address.
        format!("input iifname \"hv*\" ip daddr {subnet} udp dport 53 accept"),
        // Replies to what the host itself opened (a guest cannot make one).
        "input iifname \"hv*\" ct state established,related accept".to_string(),
        "input iifname \"hv*\" drop".to_string(),
        "forward oifname \"hv*\" ct state established,related accept".to_string(),
        "forward oifname \"hv*\" drop".to_string(),
        "forward iifname \"hv*\" meta nfproto != ipv4 drop".to_string(),
        "forward iifname \"hv*\" ip daddr @blocked4 drop".to_string(),
        "forward iifname \"hv*\" ip daddr @hostnets4 drop".to_string(),
        "forward iifname \"hv*\" iifname vmap @egress".to_string(),
        "forward iifname \"hv*\" drop".to_string(),
        format!("postrouting ip saddr {subnet} oifname != \"hv*\" masquerade"),
    ];
    for r in rules {
        let _ = writeln!(s, "add rule inet {t} {r}");
    }
    s
}

/// Creates or replaces VM `slot`'s chain with `rules` (each a rule body,
/// evaluated in order; the last should be a verdict for everything else)
/// and points its interface at it.
pub(crate) fn vm_chain(slot: u32, rules: &[String]) -> String {
    let t = TABLE;
    let mut s = String::new();
    let _ = writeln!(s, "add chain inet {t} egress_{slot}");
    let _ = writeln!(s, "flush chain inet {t} egress_{slot}");
    for r in rules {
        let _ = writeln!(s, "add rule inet {t} egress_{slot} {r}");
    }
    let _ = writeln!(
        s,
        "add element inet {t} egress {{ \"hv{slot}\" : jump egress_{slot} }}"
    );
    s
}

/// Replaces VM `slot`'s chain with a compiled policy: declares its
/// hostname sets (emptied), swaps the rules in, then deletes the sets the
/// previous policy had and this one does not.
pub(crate) fn vm_policy(slot: u32, compiled: &Compiled, old_sets: &[String]) -> String {
    let t = TABLE;
    let mut s = String::new();
    for set in compiled.host_rules.iter().map(|r| &r.set) {
        let _ = writeln!(
            s,
            "add set inet {t} {set} {{ type ipv4_addr; flags timeout; }}\nflush set inet {t} {set}"
        );
    }
    s.push_str(&vm_chain(slot, &compiled.rules));
    for old in old_sets {
        if !compiled.host_rules.iter().any(|r| r.set == *old) {
            let _ = writeln!(s, "delete set inet {t} {old}");
        }
    }
    s
}

/// Adds answered addresses to hostname sets, each for its TTL (at least
/// [`MIN_HOST_TTL`]).
pub(crate) fn add_addresses(sets: &[String], addrs: &[(Ipv4Addr, u32)]) -> String {
    let t = TABLE;
    let elems: Vec<String> = addrs
        .iter()
        .map(|(a, ttl)| {
            let secs = u64::from(*ttl).max(MIN_HOST_TTL.as_secs());
            format!("{a} timeout {secs}s")
        })
        .collect();
    let mut s = String::new();
    for set in sets {
        // `add` leaves an element that is there already as it is (nft 1.0.6
        // has no atomic refresh): it expires on its first schedule, and the
        // next answer after that adds it again.
        let _ = writeln!(s, "add element inet {t} {set} {{ {} }}", elems.join(", "));
    }
    s
}

/// Removes VM `slot`'s map entry and chain, then its hostname sets.
pub(crate) fn remove_vm_chain(slot: u32, sets: &[String]) -> String {
    let t = TABLE;
    let mut s = format!(
        "delete element inet {t} egress {{ \"hv{slot}\" }}\ndelete chain inet {t} egress_{slot}\n"
    );
    for set in sets {
        let _ = writeln!(s, "delete set inet {t} {set}");
    }
    s
}

/// Runs `nft -f -` with `script` as one transaction.
pub(crate) async fn apply(script: &str) -> Result<(), JailError> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| JailError::Spawn {
            tool: "nft",
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|source| JailError::Spawn {
                tool: "nft",
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| JailError::Spawn {
            tool: "nft",
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(JailError::Tool {
            tool: "nft",
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Networks the host is attached to directly (its LANs), from the main
/// routing table: routes with no gateway on interfaces that are not ours.
pub(crate) async fn host_networks() -> Vec<Ipv4Net> {
    let out = match tokio::process::Command::new("ip")
        .args(["-4", "-j", "route", "show"])
        .output()
        .await
    {
        Ok(o) if o.status.success() => o.stdout,
        _ => return Vec::new(),
    };
    parse_host_networks(&out, |dev| Path::new("/sys/class/net").join(dev).exists())
}

/// The LANs in `ip -j route` output, `exists` telling which interfaces
/// are there. A route on an interface that is gone is no LAN: `ip` names
/// an interface deleted while it listed the routes `if<index>` (a VM's
/// veth being torn down), and taking that for a LAN inside the VM subnet
/// refused every new VM with "overlaps the host network".
fn parse_host_networks(json: &[u8], exists: impl Fn(&str) -> bool) -> Vec<Ipv4Net> {
    let Ok(routes) = serde_json::from_slice::<Vec<serde_json::Value>>(json) else {
        return Vec::new();
    };
    routes
        .iter()
        .filter(|r| r.get("gateway").is_none())
        .filter(|r| {
            r.get("dev")
                .and_then(|d| d.as_str())
                .is_some_and(|d| !d.starts_with("hv") && d != "lo" && exists(d))
        })
        .filter_map(|r| r.get("dst")?.as_str())
        .filter(|d| *d != "default")
        .filter_map(|d| {
            if d.contains('/') {
                d.parse().ok()
            } else {
                d.parse::<Ipv4Addr>().ok().map(Ipv4Net::from)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_ruleset_blocks_host_private_and_vm_to_vm_before_any_policy() {
        let s = base_ruleset(
            "10.213.0.0/16".parse().unwrap(),
            &["192.0.2.0/24".parse().unwrap()],
        );
        let pos = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle} in\n{s}"));
        // The policy map comes after every fixed drop.
        let vmap = pos("vmap @egress");
        for fixed in [
            "ip daddr @blocked4 drop",
            "ip daddr @hostnets4 drop",
            "meta nfproto != ipv4 drop",
            "forward oifname \"hv*\" drop",
        ] {
            assert!(pos(fixed) < vmap, "{fixed}");
        }
        assert!(
            pos("input iifname \"hv*\" ip daddr 10.213.0.0/16 udp dport 53 accept")
                < pos("input iifname \"hv*\" drop")
        );
        for r in [
            "127.0.0.0/8",
            "169.254.0.0/16",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "224.0.0.0/4",
        ] {
            assert!(s.contains(r), "{r}");
        }
        assert!(s.contains("add element inet hearth hostnets4 { 192.0.2.0/24 }"));
        // No VM's chain is touched: re-applying keeps running VMs' policies.
        assert!(!s.contains("egress_"));
    }

    #[test]
    fn host_networks_are_direct_routes_not_ours() {
        let json = br#"[{"dst":"default","gateway":"192.0.2.1","dev":"eth0"},
            {"dst":"192.0.2.0/24","dev":"eth0","protocol":"kernel"},
            {"dst":"10.213.0.0/30","dev":"hv0"},
            {"dst":"203.0.113.0/24","gateway":"10.9.0.2","dev":"eth1"},
            {"dst":"198.51.100.7","dev":"eth1"},
            {"dst":"10.213.0.8/30","dev":"if42","protocol":"kernel"}]"#;
        // if42: a VM's veth deleted while `ip` listed the routes.
        let exists = |d: &str| d != "if42";
        assert_eq!(
            parse_host_networks(json, exists),
            vec![
                "192.0.2.0/24".parse::<Ipv4Net>().unwrap(),
                "198.51.100.7/32".parse().unwrap()
            ]
        );
        assert!(parse_host_networks(b"not json", exists).is_empty());
    }

    #[test]
    fn vm_chain_is_replaced_whole_and_removed_whole() {
        let s = vm_chain(7, &["accept".into()]);
        assert!(s.contains("flush chain inet hearth egress_7"));
        assert!(s.contains("\"hv7\" : jump egress_7"));
        let r = remove_vm_chain(7, &[]);
        assert!(r.find("delete element").unwrap() < r.find("delete chain").unwrap());
    }
}
