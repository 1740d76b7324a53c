//! What the host offers VMs: accelerator, CPUs, memory. Read once per check
//! from `/dev/kvm` and `/proc`, so specs are refused before anything starts.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// How guest code is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of the host's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    pub cpus: u32,
    /// `MemAvailable` from `/proc/meminfo`, MiB.
    pub mem_available_mb: u64,
    pub kvm_usable: bool,
}

impl HostInfo {
    pub fn probe() -> HostInfo {
        HostInfo {
            cpus: host_cpus(),
            mem_available_mb: mem_available_mb().unwrap_or(0),
            kvm_usable: kvm_usable(),
        }
    }
}

/// CPUs this process may run on.
pub fn host_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// `MemAvailable` in MiB.
pub fn mem_available_mb() -> std::io::Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    parse_meminfo_available(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no MemAvailable in /proc/meminfo",
        )
    })
}

fn parse_meminfo_available(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// KVM is usable only when `/dev/kvm` opens *and* the CPU advertises
/// hardware virtualization: some hosts expose a `/dev/kvm` that cannot run a
/// standard guest.
pub fn kvm_usable() -> bool {
    kvm_usable_at(Path::new("/dev/kvm"), Path::new("/proc/cpuinfo"))
}

fn kvm_usable_at(dev: &Path, cpuinfo: &Path) -> bool {
    let opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .is_ok();
    opens
        && std::fs::read_to_string(cpuinfo)
            .map(|t| cpu_has_virt_flags(&t))
            .unwrap_or(false)
}

fn cpu_has_virt_flags(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// True while `pid` exists and is not a zombie (read from `/proc`).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesized command name, which may hold spaces.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virt_flags_need_vmx_or_svm_as_whole_words() {
        assert!(cpu_has_virt_flags("flags\t: fpu vme vmx sse\n"));
        assert!(cpu_has_virt_flags("flags\t: fpu svm\n"));
        assert!(!cpu_has_virt_flags("flags\t: fpu vmxnot hypervisor\n"));
        assert!(!cpu_has_virt_flags("model name: vmx\n"));
    }

    #[test]
    fn meminfo_available_in_mib() {
        let t = "MemTotal:       24683520 kB\nMemAvailable:   20480000 kB\n";
        assert_eq!(parse_meminfo_available(t), Some(20000));
        assert_eq!(parse_meminfo_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn kvm_not_usable_without_device() {
        assert!(!kvm_usable_at(
            Path::new("/nonexistent/kvm"),
            Path::new("/proc/cpuinfo")
        ));
    }
}
