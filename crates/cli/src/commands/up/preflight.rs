//! What `hearth up` checks before it builds anything: the host packages
//! (installed with apt when missing, asking nothing), root where a step
//! needs it, a writable data directory and the free space there. The
//! decision is a pure function of [`Facts`], so every refusal is tested
//! without a machine that lacks root or disk.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Debian packages the server and the image builder run, with the program
/// that shows each is there. The guest kernel and busybox are fetched as
/// `.deb` files (`apt-get download`), never installed on the host.
pub const PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "qemu-system-x86_64"),
    ("e2fsprogs", "mkfs.ext4"),
    ("debootstrap", "debootstrap"),
    ("kmod", "depmod"),
    ("cpio", "cpio"),
    // The VM jail: per-VM network namespaces and veth pairs, and the
    // packet filter that keeps guests off the host and private networks.
    ("iproute2", "ip"),
    ("nftables", "nft"),
];

const GIB: u64 = 1 << 30;

/// Free space `up` wants before a first build: the Debian image (about
/// 0.9 GiB), the kernel and caches, a template snapshot and a few sandbox
/// disks and snapshots.
pub const NEED_FIRST_RUN: u64 = 4 * GIB;
/// Free space wanted once the images are cached: snapshots and disks only.
pub const NEED_CACHED: u64 = GIB;

/// What the machine looks like.
#[derive(Debug, Clone)]
pub struct Facts {
    pub root: bool,
    /// `sudo -n` works (passwordless), so a non-root user can still install.
    pub sudo: bool,
    /// apt-get and dpkg-query exist (a Debian-family host).
    pub apt: bool,
    pub missing: Vec<String>,
    pub data_dir: PathBuf,
    pub data_dir_writable: bool,
    pub free_bytes: u64,
    /// The images are already built (a later run).
    pub images_cached: bool,
    /// The demo template needs debootstrap, which needs root, and its
    /// image is not built yet.
    pub needs_debootstrap: bool,
}

/// What to do before building.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    Ready,
    /// `apt-get install` these, through sudo when not root.
    Install {
        packages: Vec<String>,
        sudo: bool,
    },
}

/// The plan, or what is missing and how to fix it (one message, several
/// lines when several things are wrong).
pub fn plan(f: &Facts) -> Result<Plan, String> {
    let mut problems = Vec::new();
    let mut plan = Plan::Ready;
    if !f.missing.is_empty() {
        let list = f.missing.join(" ");
        if !f.apt {
            problems.push(format!(
                "missing host programs from the packages {list}, and this machine has no apt-get \
                 (Hearth's setup targets Debian 12): install them with your package manager, \
                 then run `hearth up` again"
            ));
        } else if f.root || f.sudo {
            plan = Plan::Install {
                packages: f.missing.clone(),
                sudo: !f.root,
            };
        } else {
            problems.push(format!(
                "missing host packages: {list}. `hearth up` installs them itself when it runs as \
                 root: run `sudo hearth up`, or install them first with \
                 `sudo apt-get install -y {list}`"
            ));
        }
    }
    if f.needs_debootstrap && !f.root {
        problems.push(
            "building the `default` template's Debian image needs root (debootstrap): run \
             `sudo hearth up` once (later runs reuse the image), or try `hearth up --template \
             minimal`"
                .to_string(),
        );
    }
    if !f.data_dir_writable {
        problems.push(format!(
            "cannot write to the data directory {}: run as its owner, or pass --data-dir \
             with a directory you can write",
            f.data_dir.display()
        ));
    } else {
        let need = if f.images_cached {
            NEED_CACHED
        } else {
            NEED_FIRST_RUN
        };
        if f.free_bytes < need {
            problems.push(format!(
                "not enough disk space under {}: {} free, {} needed ({}); free some space, \
                 or pass --data-dir on a larger filesystem",
                f.data_dir.display(),
                gib(f.free_bytes),
                gib(need),
                if f.images_cached {
                    "sandbox disks and snapshots"
                } else {
                    "guest images, a template snapshot, sandbox disks and snapshots"
                }
            ));
        }
    }
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(problems.join("\n  "))
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / GIB as f64)
}

/// Looks at this machine. `data_dir` need not exist yet: the nearest
/// existing parent is what is checked.
pub fn facts(data_dir: &Path, images_cached: bool, needs_debootstrap: bool) -> Facts {
    let root = nix::unistd::geteuid().is_root();
    let apt = which("apt-get") && which("dpkg-query");
    let missing = PACKAGES
        .iter()
        .filter(|(pkg, program)| !(which(program) || (apt && dpkg_installed(pkg))))
        .map(|(pkg, _)| pkg.to_string())
        .collect::<Vec<_>>();
    let sudo = !root
        && !missing.is_empty()
        && Command::new("sudo")
            .args(["-n", "true"])
            .output()
            .is_ok_and(|o| o.status.success());
    let existing = data_dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let data_dir_writable = nix::unistd::access(existing, nix::unistd::AccessFlags::W_OK).is_ok();
    let free_bytes = nix::sys::statvfs::statvfs(existing)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(u64::MAX);
    Facts {
        root,
        sudo,
        apt,
        missing,
        data_dir: data_dir.to_path_buf(),
        data_dir_writable,
        free_bytes,
        images_cached,
        needs_debootstrap: needs_debootstrap && !images_cached,
    }
}

/// `program` is on PATH (or in /usr/sbin, /sbin, where mkfs and depmod
/// live and a non-root PATH may not reach).
fn which(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .any(|d| d.join(program).is_file())
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// `apt-get update` then `apt-get install` of `packages`, non-interactive,
/// behind a spinner; on failure the error carries apt's last lines.
pub fn install(packages: &[String], sudo: bool) -> anyhow::Result<()> {
    let step = super::progress::Spinner::start(format!("installing {}", packages.join(" ")));
    let apt = |args: &[&str]| -> anyhow::Result<()> {
        let mut cmd = if sudo {
            let mut c = Command::new("sudo");
            c.args(["-n", "apt-get"]);
            c
        } else {
            Command::new("apt-get")
        };
        let out = cmd
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .context("run apt-get")?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout);
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            bail!(
                "apt-get {} failed ({}):\n{}",
                args.first().copied().unwrap_or(""),
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    };
    step.message("apt-get update");
    apt(&["update", "-qq"])?;
    step.message("apt-get install");
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(packages.iter().map(String::as_str));
    apt(&args)?;
    step.done();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Facts {
        Facts {
            root: true,
            sudo: false,
            apt: true,
            missing: vec![],
            data_dir: PathBuf::from("/var/lib/hearth"),
            data_dir_writable: true,
            free_bytes: 50 * GIB,
            images_cached: false,
            needs_debootstrap: true,
        }
    }

    #[test]
    fn a_ready_root_machine_needs_nothing() {
        assert_eq!(plan(&healthy()), Ok(Plan::Ready));
    }

    #[test]
    fn missing_packages_are_installed_as_root_or_through_passwordless_sudo() {
        let mut f = healthy();
        f.missing = vec!["qemu-system-x86".into(), "debootstrap".into()];
        assert_eq!(
            plan(&f),
            Ok(Plan::Install {
                packages: f.missing.clone(),
                sudo: false
            })
        );
        f.root = false;
        f.sudo = true;
        f.needs_debootstrap = false;
        assert_eq!(
            plan(&f),
            Ok(Plan::Install {
                packages: f.missing.clone(),
                sudo: true
            })
        );
    }

    #[test]
    fn without_root_it_names_the_packages_and_both_fixes() {
        let mut f = healthy();
        f.root = false;
        f.needs_debootstrap = false;
        f.missing = vec!["qemu-system-x86".into()];
        let e = plan(&f).expect_err("refused");
        assert!(e.contains("missing host packages: qemu-system-x86"), "{e}");
        assert!(e.contains("sudo hearth up"), "{e}");
        assert!(e.contains("sudo apt-get install -y qemu-system-x86"), "{e}");
    }

    #[test]
    fn the_debian_image_needs_root_only_until_it_is_built() {
        let mut f = healthy();
        f.root = false;
        let e = plan(&f).expect_err("refused");
        assert!(e.contains("needs root (debootstrap)"), "{e}");
        assert!(e.contains("--template minimal"), "{e}");
        f.needs_debootstrap = false;
        assert_eq!(plan(&f), Ok(Plan::Ready));
    }

    #[test]
    fn low_disk_says_how_much_is_free_and_needed() {
        let mut f = healthy();
        f.free_bytes = GIB + GIB / 2;
        let e = plan(&f).expect_err("refused");
        assert!(e.contains("1.5 GiB free, 4.0 GiB needed"), "{e}");
        assert!(e.contains("--data-dir"), "{e}");
        // Once the images are cached, the same space is enough.
        f.images_cached = true;
        assert_eq!(plan(&f), Ok(Plan::Ready));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut f = healthy();
        f.root = false;
        f.missing = vec!["kmod".into()];
        f.data_dir_writable = false;
        let e = plan(&f).expect_err("refused");
        assert_eq!(e.lines().count(), 3, "{e}");
        assert!(e.contains("cannot write to the data directory /var/lib/hearth"));
    }

    #[test]
    fn a_host_without_apt_is_told_to_install_by_hand() {
        let mut f = healthy();
        f.apt = false;
        f.missing = vec!["qemu-system-x86".into()];
        let e = plan(&f).expect_err("refused");
        assert!(e.contains("no apt-get"), "{e}");
        assert!(e.contains("your package manager"), "{e}");
    }

    #[test]
    fn this_machine_is_inspected() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = facts(&dir.path().join("not/yet"), false, false);
        assert!(f.data_dir_writable, "a fresh temp dir's parent is writable");
        assert!(f.free_bytes > 0 && f.free_bytes < u64::MAX);
        // The test machine has every package (scripts/setup installs them).
        assert_eq!(f.missing, Vec::<String>::new());
    }
}
