//! What a VM is made of ([`VmSpec`]) and where its files live in its
//! directory ([`RunLayout`]). Validation happens here, before any process
//! starts; nothing from a spec reaches a command line unchecked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::HostInfo;
use crate::VmmError;

/// Longest Unix socket path the kernel accepts (`sun_path` minus the NUL).
const MAX_SOCKET_PATH: usize = 107;
/// Smallest guest the Debian kernel plus agent boots in.
pub const MIN_MEMORY_MB: u32 = 128;
/// Memory the host keeps for itself beyond what `MemAvailable` reports.
const HOST_RESERVE_MB: u64 = 256;
/// Default deadline from spawn to the agent's first answer.
pub const DEFAULT_BOOT_TIMEOUT_MS: u64 = 60_000;

/// Where the guest's RAM lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryBacking {
    /// Anonymous memory (the default).
    #[default]
    Anonymous,
    /// A file in the VM directory mapped shared (`memory.ram`). Needed to
    /// take a [`crate::SnapshotKind::Template`] snapshot: the file becomes
    /// the RAM every fast clone maps copy-on-write.
    SharedFile,
}

/// Everything needed to start one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Sandbox id: `[a-z0-9][a-z0-9_-]{0,62}`.
    pub id: String,
    pub vcpus: u32,
    pub memory_mb: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Base image, `vda`, attached read-only.
    pub base_image: PathBuf,
    /// The sandbox's own disk, `vdb`, read-write.
    pub disk: PathBuf,
    /// Outbound network access; off means `restrict=on` (no path out at all).
    pub egress: bool,
    /// What egress may reach of what the jail's base rules leave (none:
    /// all of it). Changed on a running VM by [`crate::Vm::set_egress_policy`].
    #[serde(default)]
    pub egress_policy: Option<crate::jail::EgressPolicy>,
    /// Directory for sockets, pidfile, logs (`sandboxes/<id>/`).
    pub dir: PathBuf,
    #[serde(default)]
    pub memory: MemoryBacking,
    /// Extra kernel command line words (appended after the driver's own).
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// Hostname handed to the agent; default: the id.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Env the agent applies to every command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names whose value the guest keeps when `env` does not carry them:
    /// secrets the host holds only in memory, so a restore after a host
    /// restart leaves the guest's copy in place.
    #[serde(default)]
    pub keep_env: Vec<String>,
    /// Deadline from spawn to the agent's first answer.
    #[serde(default = "default_boot_timeout")]
    pub boot_timeout_ms: u64,
}

fn default_boot_timeout() -> u64 {
    DEFAULT_BOOT_TIMEOUT_MS
}

impl VmSpec {
    /// A 1 vCPU, 256 MiB spec with egress on, living in `sandboxes/<id>/`
    /// with its disk at `sandboxes/<id>/disk.ext4`.
    pub fn new(
        id: impl Into<String>,
        sandboxes_dir: &Path,
        kernel: impl Into<PathBuf>,
        initrd: impl Into<PathBuf>,
        base_image: impl Into<PathBuf>,
    ) -> VmSpec {
        let id = id.into();
        let dir = sandboxes_dir.join(&id);
        VmSpec {
            disk: dir.join("disk.ext4"),
            dir,
            id,
            vcpus: 1,
            memory_mb: 256,
            kernel: kernel.into(),
            initrd: initrd.into(),
            base_image: base_image.into(),
            egress: true,
            egress_policy: None,
            memory: MemoryBacking::Anonymous,
            kernel_args: Vec::new(),
            hostname: None,
            env: BTreeMap::new(),
            keep_env: Vec::new(),
            boot_timeout_ms: DEFAULT_BOOT_TIMEOUT_MS,
        }
    }

    pub fn layout(&self) -> RunLayout {
        RunLayout::new(&self.dir)
    }

    pub fn hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(&self.id)
    }

    /// Checks the spec on its own (not the host). Every problem at once.
    pub fn validate(&self) -> Result<(), VmmError> {
        let mut bad = Vec::new();
        if !valid_id(&self.id) {
            bad.push(format!(
                "id {:?} must match [a-z0-9][a-z0-9_-]{{0,62}}",
                self.id
            ));
        }
        if self.vcpus == 0 || self.vcpus > 255 {
            bad.push(format!("vcpus {} must be 1..=255", self.vcpus));
        }
        if self.memory_mb < MIN_MEMORY_MB {
            bad.push(format!(
                "memory_mb {} is below the minimum {MIN_MEMORY_MB}",
                self.memory_mb
            ));
        }
        for (name, path, must_exist) in [
            ("kernel", &self.kernel, true),
            ("initrd", &self.initrd, true),
            ("base_image", &self.base_image, true),
            ("disk", &self.disk, false),
            ("dir", &self.dir, false),
        ] {
            if let Err(e) = check_path(path) {
                bad.push(format!("{name} {}: {e}", path.display()));
            } else if must_exist && !path.is_file() {
                bad.push(format!("{name} {} is not a file", path.display()));
            }
        }
        // Drivers check their own sockets too (all in `dir`).
        check_socket_path(&self.layout().agent_socket, &mut bad);
        for word in &self.kernel_args {
            if word.is_empty() || word.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bad.push(format!("kernel arg {word:?} must be one non-empty word"));
            }
        }
        if let Some(h) = &self.hostname {
            if !valid_hostname(h) {
                bad.push(format!("hostname {h:?} is not a valid hostname"));
            }
        }
        if self.boot_timeout_ms == 0 {
            bad.push("boot_timeout_ms must be positive".into());
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(VmmError::InvalidSpec(bad))
        }
    }

    /// Checks the spec fits the host: vCPUs and memory.
    pub fn check_host(&self, host: &HostInfo) -> Result<(), VmmError> {
        let mut reasons = Vec::new();
        if self.vcpus > host.cpus {
            reasons.push(format!(
                "{} vcpus requested, host has {}",
                self.vcpus, host.cpus
            ));
        }
        let usable = host.mem_available_mb.saturating_sub(HOST_RESERVE_MB);
        if u64::from(self.memory_mb) > usable {
            reasons.push(format!(
                "{} MiB memory requested, host has {} MiB available ({} MiB kept for the host)",
                self.memory_mb, host.mem_available_mb, HOST_RESERVE_MB
            ));
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(VmmError::Resources {
                id: self.id.clone(),
                reason: reasons.join("; "),
            })
        }
    }
}

/// Files a running VM keeps in its directory, whatever its driver (a
/// driver adds its own, e.g. QEMU's control socket, privately).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLayout {
    pub dir: PathBuf,
    /// The host end of the guest agent's channel.
    pub agent_socket: PathBuf,
    pub pidfile: PathBuf,
    /// The newest part of the console output (capped, see `qemu::console`).
    pub console_log: PathBuf,
    /// The part before it.
    pub console_log_old: PathBuf,
    /// The VMM process's own stdout/stderr.
    pub vmm_log: PathBuf,
    /// Spec, exact arguments, pid: what a new driver instance re-adopts from.
    pub record: PathBuf,
    /// RAM of a [`MemoryBacking::SharedFile`] VM.
    pub memory_file: PathBuf,
}

impl RunLayout {
    pub fn new(dir: &Path) -> RunLayout {
        RunLayout {
            dir: dir.to_path_buf(),
            agent_socket: dir.join("agent.sock"),
            pidfile: dir.join("vmm.pid"),
            console_log: dir.join("console.log"),
            console_log_old: dir.join("console.log.1"),
            vmm_log: dir.join("vmm.log"),
            record: dir.join("vm.json"),
            memory_file: dir.join("memory.ram"),
        }
    }

    /// Every file of this layout a driver creates in the directory.
    pub fn run_files(&self) -> [&Path; 7] {
        [
            &self.agent_socket,
            &self.pidfile,
            &self.console_log,
            &self.console_log_old,
            &self.vmm_log,
            &self.record,
            &self.memory_file,
        ]
    }
}

/// Adds a complaint to `bad` when `sock` is too long for a Unix socket.
pub(crate) fn check_socket_path(sock: &Path, bad: &mut Vec<String>) {
    let len = sock.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        bad.push(format!(
            "socket path {} is {len} bytes, longer than {MAX_SOCKET_PATH}",
            sock.display()
        ));
    }
}

pub(crate) fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && h.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        && !h.starts_with('-')
}

/// Paths go into QEMU option strings (`,` separates options) and shell-free
/// argument vectors; they must be absolute, UTF-8, and free of `,`, quotes
/// and control characters.
pub(crate) fn check_path(p: &Path) -> Result<(), &'static str> {
    let s = p.to_str().ok_or("is not UTF-8")?;
    if !p.is_absolute() {
        return Err("is not absolute");
    }
    if s.chars()
        .any(|c| c == ',' || c == '\'' || c == '"' || c.is_control())
    {
        return Err("contains ',', a quote or a control character");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        // /proc/self/exe stands in for kernel/initrd/base: it is a file.
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        VmSpec::new("sb-1", Path::new("/tmp/hearth-t"), &exe, &exe, &exe)
    }

    #[test]
    fn default_layout_is_sandboxes_id() {
        let s = spec();
        assert_eq!(s.dir, Path::new("/tmp/hearth-t/sb-1"));
        assert_eq!(s.disk, Path::new("/tmp/hearth-t/sb-1/disk.ext4"));
        let l = s.layout();
        assert_eq!(l.agent_socket, Path::new("/tmp/hearth-t/sb-1/agent.sock"));
        assert_eq!(l.pidfile, Path::new("/tmp/hearth-t/sb-1/vmm.pid"));
        assert_eq!(l.console_log, Path::new("/tmp/hearth-t/sb-1/console.log"));
        s.validate().unwrap();
    }

    #[test]
    fn validate_reports_every_bad_field() {
        let mut s = spec();
        s.id = "../etc".into();
        s.vcpus = 0;
        s.memory_mb = 16;
        s.kernel = "relative/vmlinuz".into();
        s.disk = "/tmp/a,b".into();
        let Err(VmmError::InvalidSpec(bad)) = s.validate() else {
            panic!("expected InvalidSpec");
        };
        assert_eq!(bad.len(), 5, "{bad:?}");
    }

    #[test]
    fn long_socket_dir_rejected() {
        let mut s = spec();
        s.dir = PathBuf::from(format!("/tmp/{}", "d".repeat(120)));
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("socket path"), "{err}");
    }

    #[test]
    fn host_check_names_cpus_and_memory() {
        let mut s = spec();
        s.vcpus = 4;
        s.memory_mb = 4096;
        let host = HostInfo {
            cpus: 2,
            mem_available_mb: 1024,
            kvm_usable: false,
        };
        let err = s.check_host(&host).unwrap_err().to_string();
        assert!(err.contains("4 vcpus requested, host has 2"), "{err}");
        assert!(err.contains("4096 MiB"), "{err}");
        s.vcpus = 1;
        s.memory_mb = 256;
        s.check_host(&host).unwrap();
    }

    #[test]
    fn ids_are_strict() {
        for ok in ["a", "sb-1", "0abc_d"] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", "-a", "A", "a/b", "a.b", &"a".repeat(64)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
