//! Per-VM network namespaces (`hearth-<slot>`) and the veth pair that is
//! their only way out (`hv<slot>` on the host, `eth0` inside), made with
//! iproute2. QEMU's user-mode network stack runs inside the namespace, so
//! the guest's gateway address (`10.0.2.2`) maps to the namespace's own
//! empty loopback, and everything else leaves through the veth, where the
//! host's nftables rules ([`super::nft`]) decide.
//!
//! A slot is claimed by creating its namespace: `ip netns add` fails when
//! the name exists, so two drivers (or two servers) on one host never
//! share a slot.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use tokio::io::AsyncWriteExt;

use super::JailError;

/// Where iproute2 keeps named namespaces.
pub(crate) const NETNS_DIR: &str = "/run/netns";

pub(crate) fn ns_name(slot: u32) -> String {
    format!("hearth-{slot}")
}

pub(crate) fn ns_path(slot: u32) -> PathBuf {
    Path::new(NETNS_DIR).join(ns_name(slot))
}

pub(crate) fn host_if(slot: u32) -> String {
    format!("hv{slot}")
}

/// The host-side and namespace-side addresses of slot `slot`: the slot's
/// /30 inside `subnet` (`.1` host, `.2` namespace).
pub(crate) fn addresses(subnet: Ipv4Net, slot: u32) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let base = u32::from(subnet.network()).checked_add(slot.checked_mul(4)?)?;
    let last = u32::from(subnet.broadcast());
    if base.checked_add(3)? > last {
        return None;
    }
    Some((Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2)))
}

/// How many slots `subnet` holds.
pub(crate) fn capacity(subnet: Ipv4Net) -> u32 {
    let size = 1u64 << (32 - u32::from(subnet.prefix_len()));
    u32::try_from(size / 4).unwrap_or(u32::MAX)
}

async fn ip(args: &[&str], stdin: Option<&str>) -> Result<(), JailError> {
    let spawn_err = |source| JailError::Spawn { tool: "ip", source };
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).await.map_err(spawn_err)?;
    }
    let out = child.wait_with_output().await.map_err(spawn_err)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(JailError::Tool {
            tool: "ip",
            detail: format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// Slots whose namespace exists (claimed by any driver on this host).
pub(crate) fn claimed() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("hearth-")?
                .parse()
                .ok()
        })
        .collect()
}

/// Claims the lowest free slot at or after `hint` (wrapping) by creating
/// its namespace.
pub(crate) async fn claim(hint: u32, capacity: u32) -> Result<u32, JailError> {
    let taken: std::collections::HashSet<u32> = claimed().into_iter().collect();
    let mut tried = 0;
    for i in 0..capacity {
        let slot = (hint + i) % capacity;
        if taken.contains(&slot) {
            continue;
        }
        // Another process may take it between the scan and here: then
        // `ip netns add` fails and the next one is tried.
        tried += 1;
        if ip(&["netns", "add", &ns_name(slot)], None).await.is_ok() {
            return Ok(slot);
        }
        if tried > 16 {
            break;
        }
    }
    Err(JailError::NoSlot { capacity })
}

/// Gives slot `slot`'s namespace its way out: the veth pair, addresses
/// and a default route through the host.
pub(crate) async fn connect(slot: u32, subnet: Ipv4Net) -> Result<(), JailError> {
    let (host, guest) = addresses(subnet, slot).ok_or(JailError::NoSlot {
        capacity: capacity(subnet),
    })?;
    let ns = ns_name(slot);
    let hv = host_if(slot);
    // The kernel tears a deleted namespace down in the background: its
    // veth may outlive the name for a moment (or longer, while a process
    // still holds it). Deleting one end deletes both, at once.
    drop_stale_link(&hv).await?;
    let host_side = format!(
        "link add {hv} type veth peer name eth0 netns {ns}\n\
         addr add {host}/30 dev {hv}\n\
         link set {hv} up\n"
    );
    ip(&["-batch", "-"], Some(&host_side)).await?;
    let ns_side = format!(
        "link set lo up\n\
         addr add {guest}/30 dev eth0\n\
         link set eth0 up\n\
         route add default via {host} dev eth0\n"
    );
    ip(&["-n", &ns, "-batch", "-"], Some(&ns_side)).await
}

/// Brings up the loopback of a namespace that gets no veth (no egress).
pub(crate) async fn loopback_only(slot: u32) -> Result<(), JailError> {
    ip(&["-n", &ns_name(slot), "link", "set", "lo", "up"], None).await
}

async fn drop_stale_link(hv: &str) -> Result<(), JailError> {
    if Path::new("/sys/class/net").join(hv).exists() {
        tracing::info!(interface = hv, "deleting a stale vm link");
        delete_link(hv).await?;
    }
    Ok(())
}

async fn delete_link(hv: &str) -> Result<(), JailError> {
    if Path::new("/sys/class/net").join(hv).exists() {
        ip(&["link", "delete", hv], None).await?;
    }
    Ok(())
}

/// Deletes slot `slot`'s veth pair and namespace, the pair first so that
/// its name is free as soon as this returns. Missing is fine.
pub(crate) async fn remove(slot: u32) {
    if let Err(e) = delete_link(&host_if(slot)).await {
        tracing::warn!(slot, error = %e, "delete vm link");
    }
    if !ns_path(slot).exists() {
        return;
    }
    if let Err(e) = ip(&["netns", "delete", &ns_name(slot)], None).await {
        tracing::warn!(slot, error = %e, "delete vm network namespace");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    #[ignore = "needs root (network namespaces); run with --run-ignored (scripts/test does, as root)"]
    async fn a_stale_link_of_a_reused_slot_is_replaced_and_remove_frees_the_name_at_once() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (network namespaces)"
        );
        // A slot far above what tests use, and a link left under its name
        // (as a namespace still being torn down leaves its veth).
        let slot = 16_000 + std::process::id() % 300;
        let net: Ipv4Net = "10.213.0.0/16".parse().unwrap();
        remove(slot).await;
        let stale_peer = format!("st{slot}");
        ip(
            &[
                "link",
                "add",
                &host_if(slot),
                "type",
                "veth",
                "peer",
                "name",
                &stale_peer,
            ],
            None,
        )
        .await
        .unwrap();
        ip(&["netns", "add", &ns_name(slot)], None).await.unwrap();
        let connected = connect(slot, net).await;
        let shown = tokio::process::Command::new("ip")
            .args(["-d", "link", "show", &host_if(slot)])
            .output()
            .await
            .unwrap();
        let link = Path::new("/sys/class/net").join(host_if(slot));
        remove(slot).await;
        connected.unwrap();
        let shown = String::from_utf8_lossy(&shown.stdout);
        assert!(
            shown.contains("link-netns"),
            "a new pair into the namespace: {shown}"
        );
        assert!(!Path::new("/sys/class/net").join(&stale_peer).exists());
        assert!(!link.exists(), "the name is free when remove returns");
        assert!(!ns_path(slot).exists());
    }

    #[test]
    fn slots_get_disjoint_slash_30s_inside_the_subnet() {
        let net: Ipv4Net = "10.213.0.0/16".parse().unwrap();
        assert_eq!(capacity(net), 16384);
        assert_eq!(
            addresses(net, 0),
            Some(("10.213.0.1".parse().unwrap(), "10.213.0.2".parse().unwrap()))
        );
        assert_eq!(
            addresses(net, 65),
            Some(("10.213.1.5".parse().unwrap(), "10.213.1.6".parse().unwrap()))
        );
        assert!(addresses(net, 16383).is_some());
        assert_eq!(addresses(net, 16384), None);
        assert_eq!(addresses(net, u32::MAX), None);
        assert_eq!(
            host_if(16383).len(),
            7,
            "interface names stay under 16 bytes"
        );
    }
}
