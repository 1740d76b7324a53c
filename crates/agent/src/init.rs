//! Init mode: the agent as `/init` of the initramfs. It loads the kernel
//! modules the image builder listed, joins the read-only base disk and the
//! sandbox's own disk with overlayfs, switches root into the result, brings
//! up the network, and then carries on as PID 1 serving the virtio-serial
//! port. No shell, no udev, no busybox: one static binary does it all.
//!
//! Contract with the image builder (`hearth-image`): the initramfs holds
//! `/etc/hearth/kernel-version`, `/etc/hearth/modules` (paths relative to
//! `/lib/modules/<version>/`, dependencies first) and the modules themselves.

use std::ffi::CString;
use std::fs;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Kernel command line options the init reads (all optional):
/// `hearth.base=/dev/vda`, `hearth.disk=/dev/vdb`, `hearth.net=off`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    pub base: String,
    pub disk: String,
    pub net: bool,
}

impl InitOptions {
    pub fn from_cmdline(cmdline: &str) -> Self {
        let mut o = InitOptions {
            base: "/dev/vda".into(),
            disk: "/dev/vdb".into(),
            net: true,
        };
        for word in cmdline.split_whitespace() {
            if let Some(v) = word.strip_prefix("hearth.base=") {
                o.base = v.into();
            } else if let Some(v) = word.strip_prefix("hearth.disk=") {
                o.disk = v.into();
            } else if let Some(v) = word.strip_prefix("hearth.net=") {
                o.net = v != "off";
            }
        }
        o
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("mount {what}")]
    Mount {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("load module {0}")]
    Module(String, #[source] std::io::Error),
    #[error("device {0} did not appear")]
    NoDevice(String),
    #[error("switch root")]
    SwitchRoot(#[source] nix::Error),
    #[error("read {0}")]
    Read(String, #[source] std::io::Error),
}

/// True when this process is the kernel's `/init`.
pub fn is_init_invocation() -> bool {
    std::process::id() == 1 && std::env::args().next().as_deref() == Some("/init")
}

/// Everything between the kernel handing over and the agent serving.
pub fn boot_into_sandbox() -> Result<(), InitError> {
    let started = Instant::now();
    mnt(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    mnt(
        "proc",
        "/proc",
        "proc",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    mnt(
        "sysfs",
        "/sys",
        "sysfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let opts = InitOptions::from_cmdline(&cmdline);
    load_modules()?;
    wait_for_device(&opts.base)?;
    wait_for_device(&opts.disk)?;

    let _ = fs::create_dir_all("/mnt/base");
    let _ = fs::create_dir_all("/mnt/disk");
    let _ = fs::create_dir_all("/newroot");
    mnt(&opts.base, "/mnt/base", "ext4", MsFlags::MS_RDONLY, None)?;
    mnt(&opts.disk, "/mnt/disk", "ext4", MsFlags::MS_NOATIME, None)?;
    for d in ["/mnt/disk/upper", "/mnt/disk/work"] {
        fs::create_dir_all(d).map_err(|e| InitError::Read(d.into(), e))?;
    }
    mnt(
        "overlay",
        "/newroot",
        "overlay",
        MsFlags::empty(),
        Some("lowerdir=/mnt/base,upperdir=/mnt/disk/upper,workdir=/mnt/disk/work"),
    )?;

    // /dev moves into the new root; /proc and /sys are mounted fresh there.
    let _ = fs::create_dir_all("/newroot/dev");
    mount(
        Some("/dev"),
        "/newroot/dev",
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(|source| InitError::Mount {
        what: "move /dev".into(),
        source,
    })?;
    let _ = umount2("/proc", MntFlags::MNT_DETACH);
    let _ = umount2("/sys", MntFlags::MNT_DETACH);
    free_initramfs();
    switch_root("/newroot")?;
    if let Ok(name) = fs::read_to_string("/etc/hostname") {
        let name = name.trim();
        if !name.is_empty() {
            let _ = nix::unistd::sethostname(name);
        }
    }
    crate::pid1::setup_system().map_err(|e| InitError::Mount {
        what: e.to_string(),
        source: nix::Error::EINVAL,
    })?;
    crate::pid1::link_virtio_ports();
    if opts.net {
        if let Err(e) = crate::net::configure_user_net() {
            eprintln!("hearth-agent: network setup failed: {e}");
        }
    }
    eprintln!(
        "hearth-agent: sandbox root ready in {} ms",
        started.elapsed().as_millis()
    );
    Ok(())
}

fn mnt(
    src: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), InitError> {
    let _ = fs::create_dir_all(target);
    mount(Some(src), target, Some(fstype), flags, data).map_err(|source| InitError::Mount {
        what: format!("{src} on {target}"),
        source,
    })
}

fn load_modules() -> Result<(), InitError> {
    let version = fs::read_to_string("/etc/hearth/kernel-version")
        .map_err(|e| InitError::Read("/etc/hearth/kernel-version".into(), e))?;
    let list = fs::read_to_string("/etc/hearth/modules")
        .map_err(|e| InitError::Read("/etc/hearth/modules".into(), e))?;
    let base = Path::new("/lib/modules").join(version.trim());
    let params = CString::default();
    for rel in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = base.join(rel);
        let file = fs::File::open(&path).map_err(|e| InitError::Module(rel.into(), e))?;
        match nix::kmod::finit_module(file.as_fd(), &params, nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(InitError::Module(rel.into(), e.into())),
        }
    }
    Ok(())
}

/// Block devices probe asynchronously after their driver loads.
fn wait_for_device(dev: &str) -> Result<(), InitError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Path::new(dev).exists() {
        if Instant::now() > deadline {
            return Err(InitError::NoDevice(dev.into()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Deletes the initramfs files (they sit in RAM) except the new root and
/// the mount points under `/mnt`, as `switch_root` does.
fn free_initramfs() {
    let root_dev = fs::metadata("/")
        .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
        .ok();
    let Ok(entries) = fs::read_dir("/") else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if matches!(
            p.to_str(),
            Some("/newroot" | "/mnt" | "/dev" | "/proc" | "/sys")
        ) {
            continue;
        }
        let same_dev = fs::symlink_metadata(&p)
            .map(|m| Some(std::os::unix::fs::MetadataExt::dev(&m)) == root_dev)
            .unwrap_or(false);
        if same_dev {
            let _ = if p.is_dir() && !p.is_symlink() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
    }
}

fn switch_root(new_root: &str) -> Result<(), InitError> {
    nix::unistd::chdir(new_root).map_err(InitError::SwitchRoot)?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(InitError::SwitchRoot)?;
    nix::unistd::chroot(".").map_err(InitError::SwitchRoot)?;
    nix::unistd::chdir("/").map_err(InitError::SwitchRoot)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_options_have_defaults_and_overrides() {
        let d = InitOptions::from_cmdline("console=ttyS0 quiet");
        assert_eq!(
            d,
            InitOptions {
                base: "/dev/vda".into(),
                disk: "/dev/vdb".into(),
                net: true
            }
        );
        let o =
            InitOptions::from_cmdline("hearth.base=/dev/vdc hearth.disk=/dev/vdd hearth.net=off");
        assert_eq!(
            o,
            InitOptions {
                base: "/dev/vdc".into(),
                disk: "/dev/vdd".into(),
                net: false
            }
        );
    }
}
