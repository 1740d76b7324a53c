//! What a VM's jail is, as recorded in its `vm.json`: enough for a new
//! driver instance to take the jail over and tear it down, and to tell
//! what of it is still on the host.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{cgroup, netns, nft, resolv_conf};

/// What `vm.json` keeps of a VM's jail, so a new driver can take it over
/// and tear it down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailRecord {
    pub slot: u32,
    pub uid: u32,
    pub gid: u32,
    /// The namespace has a veth (egress on).
    pub connected: bool,
    pub cgroups: Vec<PathBuf>,
}

impl JailRecord {
    pub fn netns(&self) -> PathBuf {
        netns::ns_path(self.slot)
    }
    pub fn host_interface(&self) -> String {
        netns::host_if(self.slot)
    }
    /// The memory limit the VM's cgroup has now.
    pub fn memory_limit(&self) -> Option<u64> {
        cgroup::memory_limit(&self.cgroups)
    }

    /// What of this jail is still on the host: its network namespace,
    /// veth, filter chain, cgroups, resolver file. Empty once released
    /// (for tests and diagnostics).
    pub async fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let netns = self.netns();
        if netns.exists() {
            left.push(format!("network namespace {}", netns.display()));
        }
        let veth = self.host_interface();
        if Path::new("/sys/class/net").join(&veth).exists() {
            left.push(format!("interface {veth}"));
        }
        let chain = format!("egress_{}", self.slot);
        let listed = tokio::process::Command::new("nft")
            .args(["list", "chain", "inet", nft::TABLE, &chain])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await;
        if listed.is_ok_and(|s| s.success()) {
            left.push(format!("nftables chain inet {} {chain}", nft::TABLE));
        }
        for d in self.cgroups.iter().filter(|d| d.exists()) {
            left.push(format!("cgroup {}", d.display()));
        }
        let resolv = resolv_conf(self.slot);
        if resolv.exists() {
            left.push(format!("resolver file {}", resolv.display()));
        }
        left
    }
}
