//! The jail every VMM process runs in, modelled on Firecracker's jailer and
//! E2B's per-sandbox network namespaces. Per VM, one *slot* names it all:
//! - uid and gid `uid_base + 1 + slot`, no capabilities, `no_new_privs`;
//! - a private mount namespace whose root is an empty tmpfs holding only
//!   the VM's own files (its directory, its kernel, initramfs and base
//!   image read-only) plus read-only `/usr`, at their host paths; a clone
//!   of a template gets the template's RAM as a sealed descriptor, named
//!   through a `/proc` that shows it only itself;
//! - a network namespace `hearth-<slot>` whose only way out is a veth
//!   that the host filters with nftables: never to the host, other
//!   sandboxes, private, link-local or multicast ranges;
//! - a cgroup with memory, CPU and pids limits.
//!
//! The QEMU driver adds `-sandbox` (seccomp) on top. Without root (a
//! developer's plain user), the jail cannot be built: VMs then run
//! unjailed and without any network, and the driver says so once.

mod cgroup;
mod dns;
mod mounts;
mod netns;
mod nft;
pub mod policy;
mod preexec;
mod record;

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub use policy::EgressPolicy;
pub use preexec::PreExec;
pub use record::JailRecord;

/// Where the jail roots are mounted (each in its own mount namespace, so
/// one empty directory serves every VM).
const JAIL_ROOT: &str = "/run/hearth/jail";
/// Per-VM `resolv.conf` files handed to QEMU's user-mode DNS.
const RESOLV_DIR: &str = "/run/hearth/resolv";

/// Slot `slot`'s `resolv.conf`.
pub(crate) fn resolv_conf(slot: u32) -> PathBuf {
    Path::new(RESOLV_DIR).join(format!("{slot}.conf"))
}

/// The `[vmm.qemu.jail]` table of the server config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JailConfig {
    /// On, off, or (unset) on when the driver runs as root.
    pub enabled: Option<bool>,
    /// VM uids and gids are `uid_base + 1 + slot`.
    pub uid_base: u32,
    /// Host-side addressing of the per-VM veth pairs (a /30 each). Must not
    /// overlap a network the host uses.
    pub subnet: String,
    /// Resolvers the guest's DNS is relayed to; empty: the host's own
    /// (`/etc/resolv.conf`).
    pub dns_servers: Vec<SocketAddr>,
    /// VMM memory on top of guest RAM before the cgroup's OOM killer acts.
    pub memory_overhead_mb: u32,
    /// Extra CPU beyond one core per vCPU, in percent of a core, for the
    /// VMM's own threads (I/O, migration).
    pub cpu_overhead_percent: u32,
    pub pids_max: u32,
    /// Root of the cgroup filesystem.
    pub cgroup_root: PathBuf,
    /// With the jail off, keep QEMU's user-mode network, which reaches the
    /// host's loopback and every network the host does. For benchmark
    /// baselines only: no config file can set it.
    #[serde(skip)]
    pub unfiltered_network_unjailed: bool,
}

impl Default for JailConfig {
    fn default() -> Self {
        JailConfig {
            enabled: None,
            uid_base: 1_500_000_000,
            subnet: "10.213.0.0/16".into(),
            dns_servers: Vec::new(),
            memory_overhead_mb: 384,
            cpu_overhead_percent: 50,
            pids_max: 512,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            unfiltered_network_unjailed: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("run {tool}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool}: {detail}")]
    Tool { tool: &'static str, detail: String },
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no free network slot (all {capacity} in use)")]
    NoSlot { capacity: u32 },
    #[error("invalid jail config: {0}")]
    Config(String),
    #[error("invalid egress policy: {}", .0.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; "))]
    Policy(Vec<(String, String)>),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> JailError {
    let path = path.to_path_buf();
    move |source| JailError::Io { what, path, source }
}

/// What a VM needs from the host, for [`Jailer::prepare`].
#[derive(Debug)]
pub struct JailSpec<'a> {
    pub dir: &'a Path,
    /// Read-only files (kernel, initramfs, base image).
    pub read_only: Vec<&'a Path>,
    /// Read-write files outside `dir` (a disk elsewhere).
    pub read_write: Vec<&'a Path>,
    /// A descriptor the VMM inherits, at the same number, and names as
    /// `/proc/self/fd/N`: a template's sealed RAM (`qemu::sealed_ram`).
    /// The jail then has a `/proc` that shows the VMM only itself.
    pub inherit: Option<RawFd>,
    /// The guest's disk (handed to the VM's uid).
    pub disk: &'a Path,
    pub egress: bool,
    /// What the VM may reach of what the base rules leave (none: all).
    pub policy: Option<&'a EgressPolicy>,
    pub vcpus: u32,
    pub memory_mb: u32,
    /// `/dev/kvm` goes into the jail.
    pub kvm: bool,
}

/// Builds and tears down jails. One per driver.
#[derive(Debug)]
pub struct Jailer {
    config: JailConfig,
    enabled: bool,
    subnet: Ipv4Net,
    upstreams: Vec<SocketAddr>,
    cgroups: Option<cgroup::Hierarchy>,
    base: tokio::sync::OnceCell<()>,
    reaped: tokio::sync::OnceCell<()>,
    next_slot: AtomicU32,
}

/// A VM's jail while it lives: released by [`JailHandle::release`].
#[derive(Debug)]
pub struct JailHandle {
    record: JailRecord,
    dns: Option<tokio::task::JoinHandle<()>>,
    /// The hostname sets of the policy in force (shared with the DNS
    /// forwarder).
    hosts: dns::HostSets,
    upstreams: Vec<SocketAddr>,
}

impl Jailer {
    pub fn new(config: JailConfig) -> Result<Jailer, JailError> {
        let subnet: Ipv4Net = config
            .subnet
            .parse()
            .map_err(|e| JailError::Config(format!("subnet {:?}: {e}", config.subnet)))?;
        if subnet.prefix_len() > 30 {
            return Err(JailError::Config(format!(
                "subnet {subnet} is smaller than one /30"
            )));
        }
        if config.uid_base == 0
            || config
                .uid_base
                .checked_add(netns::capacity(subnet))
                .is_none()
        {
            return Err(JailError::Config(format!(
                "uid_base {} leaves no room for {} VM uids",
                config.uid_base,
                netns::capacity(subnet)
            )));
        }
        let root = nix::unistd::geteuid().is_root();
        let enabled = config.enabled.unwrap_or(root);
        if enabled && !root {
            return Err(JailError::Config(
                "the jail needs root (set enabled = false to run VMs unjailed and offline)".into(),
            ));
        }
        let upstreams = if config.dns_servers.is_empty() {
            dns::system_resolvers()
        } else {
            config.dns_servers.clone()
        };
        let cgroups = cgroup::Hierarchy::detect(&config.cgroup_root);
        if enabled && cgroups.is_none() {
            tracing::warn!(root = %config.cgroup_root.display(), "no usable cgroup hierarchy: VMs run without resource limits");
        }
        if !enabled {
            tracing::warn!(
                "VM jail off (not root): VMMs run unconfined and every VM runs without network"
            );
        }
        Ok(Jailer {
            config,
            enabled,
            subnet,
            upstreams,
            cgroups,
            base: tokio::sync::OnceCell::new(),
            reaped: tokio::sync::OnceCell::new(),
            next_slot: AtomicU32::new(0),
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn config(&self) -> &JailConfig {
        &self.config
    }

    /// The table and base chains, and IPv4 forwarding: once per driver.
    async fn ensure_base(&self) -> Result<(), JailError> {
        self.base
            .get_or_try_init(|| async {
                let host_nets = nft::host_networks().await;
                if let Some(clash) = host_nets.iter().find(|n| {
                    n.contains(&self.subnet.network()) || self.subnet.contains(&n.network())
                }) {
                    return Err(JailError::Config(format!(
                        "subnet {} overlaps the host network {clash}",
                        self.subnet
                    )));
                }
                nft::apply(&nft::base_ruleset(self.subnet, &host_nets)).await?;
                let fwd = Path::new("/proc/sys/net/ipv4/ip_forward");
                if std::fs::read_to_string(fwd).map(|s| s.trim() != "1").unwrap_or(true) {
                    std::fs::write(fwd, "1").map_err(io_err("enable", fwd))?;
                    tracing::info!("enabled IPv4 forwarding for VM egress (filtered by table inet hearth)");
                }
                tracing::info!(subnet = %self.subnet, lans = ?host_nets, "vm packet filter installed");
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Builds a jail for one VM: slot, network, cgroup, file ownership and
    /// the plan its child process applies. `None` when the jail is off.
    pub async fn prepare(
        &self,
        spec: &JailSpec<'_>,
    ) -> Result<Option<(JailHandle, PreExec)>, JailError> {
        if !self.enabled {
            return Ok(None);
        }
        // Jails a crashed server left go first: the host's networks are
        // then judged without their links half torn down.
        self.reaped
            .get_or_init(|| async { self.reap_stale().await })
            .await;
        if spec.egress {
            self.ensure_base().await?;
        }
        let capacity = netns::capacity(self.subnet);
        let slot = netns::claim(self.next_slot.load(Ordering::Relaxed), capacity).await?;
        self.next_slot
            .store((slot + 1) % capacity, Ordering::Relaxed);
        let uid = self.config.uid_base + 1 + slot;
        let mut handle = JailHandle {
            record: JailRecord {
                slot,
                uid,
                gid: uid,
                connected: spec.egress,
                cgroups: Vec::new(),
            },
            dns: None,
            hosts: dns::open_hosts(),
            upstreams: self.upstreams.clone(),
        };
        match self.build(spec, &mut handle).await {
            Ok(pre) => Ok(Some((handle, pre))),
            Err(e) => {
                handle.release().await;
                Err(e)
            }
        }
    }

    async fn build(&self, spec: &JailSpec<'_>, h: &mut JailHandle) -> Result<PreExec, JailError> {
        let slot = h.record.slot;
        let resolv = resolv_conf(slot);
        std::fs::create_dir_all(RESOLV_DIR).map_err(io_err("create", Path::new(RESOLV_DIR)))?;
        // First: its age tells the reaper this slot is being set up.
        std::fs::write(&resolv, "").map_err(io_err("write", &resolv))?;
        if spec.egress {
            let (host, guest) = netns::addresses(self.subnet, slot).ok_or(JailError::NoSlot {
                capacity: netns::capacity(self.subnet),
            })?;
            // The filter matches the interface by name: it can go in while
            // the interface is being made.
            let (linked, policed) = tokio::join!(
                netns::connect(slot, self.subnet),
                h.apply_policy(spec.policy, false)
            );
            linked?;
            policed?;
            // A host DNS server bound to every address on port 53 keeps the
            // forwarder from binding: the VM then starts without DNS (its
            // network works by address), which beats not starting.
            match dns::serve(host, guest, self.upstreams.clone(), h.hosts.clone()).await {
                Ok(task) => {
                    h.dns = Some(task);
                    std::fs::write(&resolv, format!("nameserver {host}\n"))
                        .map_err(io_err("write", &resolv))?;
                }
                Err(e) => tracing::warn!(
                    slot,
                    error = %e,
                    "no DNS for this VM: the forwarder cannot bind {host}:53"
                ),
            }
        } else {
            netns::loopback_only(slot).await?;
        }

        if let Some(h2) = &self.cgroups {
            let overhead = u64::from(self.config.memory_overhead_mb);
            let limits = cgroup::Limits {
                memory_bytes: (u64::from(spec.memory_mb) + overhead) << 20,
                cpu_quota_us: (u64::from(spec.vcpus) * 100
                    + u64::from(self.config.cpu_overhead_percent))
                    * 1000,
                pids: self.config.pids_max,
            };
            let name = format!("vm-{slot}");
            h.record.cgroups = h2.dirs(&name);
            h2.create(&name, limits)
                .map_err(io_err("create cgroup", &h.record.cgroups[0]))?;
        }

        // Files: the VM directory is root's, group-writable by the VM
        // (sticky: it may add its sockets and logs, never replace the
        // driver's records); its disk is the VM's.
        let (uid, gid) = (h.record.uid, h.record.gid);
        let own = |p: &Path, u: u32, g: u32, mode: u32| -> Result<(), JailError> {
            nix::unistd::chown(
                p,
                Some(nix::unistd::Uid::from_raw(u)),
                Some(nix::unistd::Gid::from_raw(g)),
            )
            .map_err(std::io::Error::from)
            .map_err(io_err("chown", p))?;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                .map_err(io_err("chmod", p))
        };
        own(spec.dir, 0, gid, 0o1770)?;
        own(spec.disk, uid, gid, 0o600)?;

        let root = Path::new(JAIL_ROOT);
        std::fs::create_dir_all(root).map_err(io_err("create", root))?;
        let mut plan = mounts::PlanBuilder::new(root);
        let plan_err = |p: &Path| io_err("put into the jail", p);
        plan.bind(Path::new("/usr"), mounts::Access::ReadOnly)
            .map_err(plan_err(Path::new("/usr")))?;
        for top in ["/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"] {
            plan.mirror_top_level(Path::new(top))
                .map_err(plan_err(Path::new(top)))?;
        }
        for f in ["/etc/ld.so.cache", "/etc/localtime"] {
            if Path::new(f).exists() {
                plan.bind(Path::new(f), mounts::Access::ReadOnly)
                    .map_err(plan_err(Path::new(f)))?;
            }
        }
        plan.bind_as(
            &resolv,
            Path::new("/etc/resolv.conf"),
            mounts::Access::ReadOnly,
        )
        .map_err(plan_err(&resolv))?;
        let mut devices = vec![
            "/dev/null",
            "/dev/zero",
            "/dev/full",
            "/dev/random",
            "/dev/urandom",
        ];
        if spec.kvm {
            devices.push("/dev/kvm");
        }
        for d in devices {
            plan.bind(Path::new(d), mounts::Access::Device)
                .map_err(plan_err(Path::new(d)))?;
        }
        for p in &spec.read_only {
            plan.bind(p, mounts::Access::ReadOnly)
                .map_err(plan_err(p))?;
        }
        plan.bind(spec.dir, mounts::Access::ReadWrite)
            .map_err(plan_err(spec.dir))?;
        plan.bind(spec.disk, mounts::Access::ReadWrite)
            .map_err(plan_err(spec.disk))?;
        for p in &spec.read_write {
            plan.bind(p, mounts::Access::ReadWrite)
                .map_err(plan_err(p))?;
        }
        if spec.inherit.is_some() {
            plan.proc_of_self_only();
        }
        let mounts = plan.build().map_err(plan_err(root))?;

        let ns_path = netns::ns_path(slot);
        let netns: OwnedFd = File::open(&ns_path)
            .map_err(io_err("open", &ns_path))?
            .into();
        let cgroup_procs = cgroup::open_procs(&h.record.cgroups)
            .map_err(io_err(
                "open cgroup.procs in",
                &h.record.cgroups.first().cloned().unwrap_or_default(),
            ))?
            .into_iter()
            .map(OwnedFd::from)
            .collect();
        let mut groups = Vec::new();
        if spec.kvm {
            use std::os::unix::fs::MetadataExt;
            if let Ok(m) = std::fs::metadata("/dev/kvm") {
                groups.push(nix::unistd::Gid::from_raw(m.gid()));
            }
        }
        Ok(PreExec {
            netns,
            cgroup_procs,
            mounts,
            uid,
            gid,
            groups,
            inherit: spec.inherit,
        })
    }

    /// Releases the slots of VMs that died without their driver cleaning
    /// up (a crashed server, a killed test): namespaces no process is in
    /// whose setup is older than [`STALE_AFTER`]. A slot being set up right
    /// now by another driver has a fresh `resolv.conf` and is left alone.
    pub async fn reap_stale(&self) {
        let slots = netns::claimed();
        if slots.is_empty() {
            return;
        }
        let in_use = namespaces_in_use();
        for slot in slots {
            use std::os::unix::fs::MetadataExt;
            let Ok(ns) = std::fs::metadata(netns::ns_path(slot)) else {
                continue;
            };
            if in_use.contains(&ns.ino()) {
                continue;
            }
            let resolv = resolv_conf(slot);
            let old = std::fs::metadata(&resolv)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > STALE_AFTER);
            if !old {
                continue;
            }
            let cgroups = self
                .cgroups
                .as_ref()
                .map(|c| c.dirs(&format!("vm-{slot}")))
                .unwrap_or_default();
            tracing::info!(slot, "releasing the jail of a vm that is gone");
            JailHandle {
                record: JailRecord {
                    slot,
                    uid: self.config.uid_base + 1 + slot,
                    gid: self.config.uid_base + 1 + slot,
                    connected: true,
                    cgroups,
                },
                dns: None,
                hosts: dns::open_hosts(),
                upstreams: Vec::new(),
            }
            .release()
            .await;
        }
    }

    /// The handle of a VM started by an earlier driver: its DNS forwarder
    /// runs again from here.
    pub async fn adopt(&self, record: JailRecord) -> JailHandle {
        let mut h = JailHandle {
            record,
            dns: None,
            hosts: dns::open_hosts(),
            upstreams: self.upstreams.clone(),
        };
        if h.record.connected {
            if let Some((host, guest)) = netns::addresses(self.subnet, h.record.slot) {
                match dns::serve(host, guest, self.upstreams.clone(), h.hosts.clone()).await {
                    Ok(task) => h.dns = Some(task),
                    Err(e) => {
                        tracing::warn!(slot = h.record.slot, error = %e, "restart dns forwarder")
                    }
                }
            }
        }
        h
    }
}

impl JailHandle {
    pub fn record(&self) -> &JailRecord {
        &self.record
    }

    /// Puts `policy` (none: allow what the base rules leave) in force at
    /// once, in one nftables transaction. Hostname rules start with the
    /// addresses the VM's resolvers give now (waited for, at most
    /// [`PRE_RESOLVE_WITHIN`]: a guest may hold addresses it resolved under
    /// the old policy), and follow its DNS answers. A VM without network
    /// has nothing to change.
    pub async fn set_policy(&self, policy: Option<&EgressPolicy>) -> Result<(), JailError> {
        self.apply_policy(policy, true).await
    }

    /// [`Self::set_policy`]; a VM that is starting has resolved nothing
    /// yet, so its start does not wait for DNS (`resolve_now` false): the
    /// first addresses are looked up in the background.
    async fn apply_policy(
        &self,
        policy: Option<&EgressPolicy>,
        resolve_now: bool,
    ) -> Result<(), JailError> {
        if !self.record.connected {
            return Ok(());
        }
        let compiled = match policy {
            Some(p) => p.compile(self.record.slot).map_err(JailError::Policy)?,
            None => policy::allow_all(),
        };
        let old: Vec<String> = self
            .hosts
            .read()
            .host_rules
            .iter()
            .map(|r| r.set.clone())
            .collect();
        let mut script = nft::vm_policy(self.record.slot, &compiled, &old);
        let names: Vec<(String, String)> = compiled
            .host_rules
            .iter()
            .filter_map(|r| match &r.dest {
                policy::Destination::Host(n) if !n.starts_with("*.") => {
                    Some((r.set.clone(), n.clone()))
                }
                _ => None,
            })
            .collect();
        if resolve_now {
            script.push_str(&pre_resolve(names, self.upstreams.clone()).await);
        } else if !names.is_empty() {
            let ups = self.upstreams.clone();
            tokio::spawn(async move {
                let add = pre_resolve(names, ups).await;
                // The VM may be gone by now: then its sets are too.
                if !add.is_empty() {
                    let _ = nft::apply(&add).await;
                }
            });
        }
        nft::apply(&script).await?;
        *self.hosts.write() = compiled;
        Ok(())
    }

    /// Removes the network namespace, filter chain, cgroup and DNS
    /// forwarder. Call once the VMM has exited; repeating it is harmless.
    pub async fn release(&mut self) {
        if let Some(task) = self.dns.take() {
            task.abort();
        }
        let slot = self.record.slot;
        if self.record.connected {
            let sets: Vec<String> = self
                .hosts
                .read()
                .host_rules
                .iter()
                .map(|r| r.set.clone())
                .collect();
            if let Err(e) = nft::apply(&nft::remove_vm_chain(slot, &sets)).await {
                tracing::debug!(slot, error = %e, "remove vm filter chain");
            }
        }
        netns::remove(slot).await;
        cgroup::remove(&self.record.cgroups).await;
        let _ = std::fs::remove_file(resolv_conf(slot));
    }
}

/// The longest a policy change waits for its hostnames' first addresses.
const PRE_RESOLVE_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Looks every `(set, hostname)` up at once, for at most
/// [`PRE_RESOLVE_WITHIN`] in all, and returns the nft commands adding what
/// was answered; names not answered by then follow the guest's lookups.
async fn pre_resolve(names: Vec<(String, String)>, upstreams: Vec<SocketAddr>) -> String {
    let mut lookups = tokio::task::JoinSet::new();
    for (set, name) in names {
        let ups = upstreams.clone();
        lookups.spawn(async move { (set, dns::resolve(&name, &ups).await) });
    }
    let mut script = String::new();
    let _ = tokio::time::timeout(PRE_RESOLVE_WITHIN, async {
        while let Some(Ok((set, addrs))) = lookups.join_next().await {
            if !addrs.is_empty() {
                script.push_str(&nft::add_addresses(&[set], &addrs));
            }
        }
    })
    .await;
    lookups.abort_all();
    script
}

/// How old an unused slot's setup must be before it counts as leaked.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// Inodes of every network namespace some process is in.
fn namespaces_in_use() -> std::collections::HashSet<u64> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Default::default();
    };
    rd.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| {
            let link = std::fs::read_link(e.path().join("ns/net")).ok()?;
            link.to_str()?
                .strip_prefix("net:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Addresses of a slot for tests and diagnostics: (host side, namespace side).
pub fn slot_addresses(config: &JailConfig, slot: u32) -> Option<(Ipv4Addr, Ipv4Addr)> {
    netns::addresses(config.subnet.parse().ok()?, slot)
}
