//! One cgroup per VM: a memory limit (guest RAM plus the VMM's measured
//! overhead), a CPU quota by vCPU count, and a pids limit. cgroup v2 when
//! the host mounts the unified hierarchy at the root, else the v1 `memory`,
//! `cpu` and `pids` controllers. The VMM joins in its pre-exec step
//! through `cgroup.procs` files opened before `fork`, so it is charged
//! from its first page.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// CFS period the CPU quota is expressed in.
const CPU_PERIOD_US: u64 = 100_000;

/// Which hierarchy the host has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hierarchy {
    V2(PathBuf),
    /// Mount points of the `memory`, `cpu` and `pids` controllers.
    V1 {
        memory: PathBuf,
        cpu: PathBuf,
        pids: PathBuf,
    },
}

/// Limits of one VM's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub memory_bytes: u64,
    /// CPU time per period, in microseconds.
    pub cpu_quota_us: u64,
    pub pids: u32,
}

impl Hierarchy {
    /// The hierarchy under `root` (usually `/sys/fs/cgroup`), or `None`
    /// when neither a v2 root nor the three v1 controllers are mounted.
    pub(crate) fn detect(root: &Path) -> Option<Hierarchy> {
        if root.join("cgroup.controllers").is_file() {
            return Some(Hierarchy::V2(root.to_path_buf()));
        }
        let ctrl = |name: &str| {
            let p = root.join(name);
            p.join("cgroup.procs").is_file().then_some(p)
        };
        Some(Hierarchy::V1 {
            memory: ctrl("memory")?,
            cpu: ctrl("cpu").or_else(|| ctrl("cpu,cpuacct"))?,
            pids: ctrl("pids")?,
        })
    }

    /// Directories of the cgroup named `name` under `hearth/`.
    pub(crate) fn dirs(&self, name: &str) -> Vec<PathBuf> {
        match self {
            Hierarchy::V2(root) => vec![root.join("hearth").join(name)],
            Hierarchy::V1 { memory, cpu, pids } => [memory, cpu, pids]
                .iter()
                .map(|c| c.join("hearth").join(name))
                .collect(),
        }
    }

    /// Creates (or reuses, when a dead VM left it) the cgroup and sets its
    /// limits.
    pub(crate) fn create(&self, name: &str, limits: Limits) -> io::Result<Vec<PathBuf>> {
        let dirs = self.dirs(name);
        if let Hierarchy::V2(root) = self {
            // Controllers must be enabled on the way down.
            let hearth = root.join("hearth");
            std::fs::create_dir_all(&hearth)?;
            for parent in [root.as_path(), hearth.as_path()] {
                write(&parent.join("cgroup.subtree_control"), "+memory +cpu +pids")?;
            }
        }
        for d in &dirs {
            std::fs::create_dir_all(d)?;
        }
        match self {
            Hierarchy::V2(_) => {
                let d = &dirs[0];
                write(&d.join("memory.max"), &limits.memory_bytes.to_string())?;
                // No swap: a VM's RAM is its own problem, not the host's disk's.
                let _ = write(&d.join("memory.swap.max"), "0");
                write(
                    &d.join("cpu.max"),
                    &format!("{} {CPU_PERIOD_US}", limits.cpu_quota_us),
                )?;
                write(&d.join("pids.max"), &limits.pids.to_string())?;
            }
            Hierarchy::V1 { .. } => {
                let (mem, cpu, pids) = (&dirs[0], &dirs[1], &dirs[2]);
                write(
                    &mem.join("memory.limit_in_bytes"),
                    &limits.memory_bytes.to_string(),
                )?;
                write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(
                    &cpu.join("cpu.cfs_quota_us"),
                    &limits.cpu_quota_us.to_string(),
                )?;
                write(&pids.join("pids.max"), &limits.pids.to_string())?;
            }
        }
        Ok(dirs)
    }
}

/// `cgroup.procs` of each directory, opened for the child to write "0".
pub(crate) fn open_procs(dirs: &[PathBuf]) -> io::Result<Vec<File>> {
    dirs.iter()
        .map(|d| OpenOptions::new().write(true).open(d.join("cgroup.procs")))
        .collect()
}

/// Removes the cgroup once its processes are gone (the kernel refuses
/// while any remain; a VMM that just exited may take a moment).
pub(crate) async fn remove(dirs: &[PathBuf]) {
    for d in dirs {
        for attempt in 0..50 {
            match std::fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if attempt == 49 => {
                    tracing::warn!(dir = %d.display(), error = %e, "remove vm cgroup");
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }
}

/// Reads one value (for tests and diagnostics): `memory.max` or
/// `memory.limit_in_bytes`.
pub(crate) fn memory_limit(dirs: &[PathBuf]) -> Option<u64> {
    let d = dirs.first()?;
    ["memory.max", "memory.limit_in_bytes"]
        .iter()
        .find_map(|f| std::fs::read_to_string(d.join(f)).ok())
        .and_then(|s| s.trim().parse().ok())
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("write {value:?} to {}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_v2_and_v1_layouts() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(Hierarchy::detect(t.path()), None);
        for c in ["memory", "cpu", "pids"] {
            std::fs::create_dir_all(t.path().join(c)).unwrap();
            std::fs::write(t.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        let v1 = Hierarchy::detect(t.path()).unwrap();
        assert_eq!(
            v1.dirs("vm-3"),
            vec![
                t.path().join("memory/hearth/vm-3"),
                t.path().join("cpu/hearth/vm-3"),
                t.path().join("pids/hearth/vm-3"),
            ]
        );
        std::fs::write(t.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
        assert_eq!(
            Hierarchy::detect(t.path()),
            Some(Hierarchy::V2(t.path().to_path_buf()))
        );
    }
}
