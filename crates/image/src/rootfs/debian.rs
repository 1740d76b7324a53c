//! The `debian` recipe: debootstrap bookworm minbase, then apt inside the
//! tree for the packages, the sandbox user and the Python venv. Every
//! command's output goes to a build log that is kept when the build fails.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

use super::tree::{clear_dir, mkdir, replace, write};
use super::{cached_or_lock, publish, Cached, Recipe, RecipeDescription};
use super::{GUEST_NAMESERVER, SANDBOX_UID};
use crate::cmd;
use crate::error::{CommandError, ImageError};
use crate::progress::Step;
use crate::staging::Staging;
use crate::util::rfc3339;
use crate::Layout;

const DEBIAN_SUITE: &str = "bookworm";
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
const DEBIAN_SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";
pub(super) const DEBIAN_PACKAGES: &[&str] = &[
    "python3",
    "python3-venv",
    "git",
    "curl",
    "ca-certificates",
    "nodejs",
    "npm",
    "procps",
    "iproute2",
];

pub(super) fn ensure_debian(layout: &Layout) -> Result<PathBuf, ImageError> {
    let description = RecipeDescription::new(Recipe::Debian, BTreeMap::new());
    let digest = description.digest();
    let _lock = match cached_or_lock(layout, &digest)? {
        Cached::Found(path) => return Ok(path),
        Cached::Build(lock) => lock,
    };

    let step = Step::start("building debian rootfs");
    let started = Instant::now();
    let staging = Staging::new(&layout.tmp(), "rootfs-debian")?;
    let tree = staging.join("tree");
    let log = staging.join("build.log");
    if let Err(e) = populate_debian(layout, &tree, &log, &step) {
        return Err(keep_log(layout, &digest, &tree, &log, e));
    }
    let path = publish(
        layout,
        &staging,
        &tree,
        Recipe::Debian,
        &description,
        started,
        &step,
    )?;
    step.done();
    Ok(path)
}

/// debootstrap's own resolver cannot install npm (its dependencies go through
/// virtual packages it does not follow), so debootstrap lays down minbase
/// and apt, inside the tree, installs the rest and the security updates.
fn populate_debian(
    layout: &Layout,
    tree: &Path,
    log: &Path,
    step: &Step,
) -> Result<(), ImageError> {
    let cache = layout.debootstrap_cache();
    fs::create_dir_all(&cache).map_err(ImageError::io(&cache))?;
    // debootstrap refuses a relative cache directory (`--data-dir data`).
    let cache = fs::canonicalize(&cache).map_err(ImageError::io(&cache))?;
    step.set_message("debootstrap");
    let debootstrap = run_logged(
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--cache-dir={}", cache.display()))
            .arg(DEBIAN_SUITE)
            .arg(tree)
            .arg(DEBIAN_MIRROR),
        log,
        step,
    );
    if let Err(source) = debootstrap {
        let inner =
            fs::read_to_string(tree.join("debootstrap/debootstrap.log")).unwrap_or_default();
        // The output goes into `log_tail`; the source keeps only the status.
        let (mut log_tail, source) = match source {
            CommandError::Failed {
                program,
                status,
                output_tail,
            } => (
                output_tail,
                CommandError::Failed {
                    program,
                    status,
                    output_tail: String::new(),
                },
            ),
            other => (String::new(), other),
        };
        if !inner.is_empty() {
            log_tail.push_str("\n--- debootstrap/debootstrap.log ---\n");
            log_tail.push_str(&cmd::tail(&inner, 30));
        }
        return Err(ImageError::Debootstrap {
            log: log.to_owned(),
            log_tail,
            source,
        });
    }

    write(
        tree,
        "etc/apt/sources.list",
        &format!(
            "deb {DEBIAN_MIRROR} {DEBIAN_SUITE} main\n\
         deb {DEBIAN_MIRROR} {DEBIAN_SUITE}-updates main\n\
         deb {DEBIAN_SECURITY_MIRROR} {DEBIAN_SUITE}-security main\n"
        ),
        0o644,
    )?;
    // debootstrap copied the host's resolv.conf, which apt needs right now.
    chroot_logged(
        tree,
        "apt-get update",
        &["apt-get", "-q", "update"],
        log,
        step,
    )?;
    let mut install = vec!["apt-get", "-q", "-y", "--no-install-recommends", "install"];
    install.extend_from_slice(DEBIAN_PACKAGES);
    chroot_logged(tree, "apt-get install", &install, log, step)?;
    chroot_logged(
        tree,
        "apt-get dist-upgrade",
        &[
            "apt-get",
            "-q",
            "-y",
            "--no-install-recommends",
            "dist-upgrade",
        ],
        log,
        step,
    )?;

    step.set_message("creating user sandbox");
    chroot(
        tree,
        "create group sandbox",
        &["groupadd", "--gid", "1000", "sandbox"],
    )?;
    chroot(
        tree,
        "create user sandbox",
        &[
            "useradd",
            "--uid",
            "1000",
            "--gid",
            "1000",
            "--create-home",
            "--home-dir",
            "/home/sandbox",
            "--shell",
            "/bin/bash",
            "sandbox",
        ],
    )?;
    let workspace = tree.join("workspace");
    mkdir(&workspace, 0o755)?;
    chown(&workspace, Some(SANDBOX_UID), Some(SANDBOX_UID)).map_err(ImageError::io(&workspace))?;

    step.set_message("python3 -m venv /opt/venv");
    chroot(
        tree,
        "create /opt/venv",
        &["python3", "-m", "venv", "/opt/venv"],
    )?;
    // Commands run as `sandbox`, and `pip install` must work without root.
    chroot(
        tree,
        "chown /opt/venv",
        &["chown", "-R", "1000:1000", "/opt/venv"],
    )?;

    step.set_message("configuring");
    write(tree, "etc/profile.d/hearth.sh", "# Hearth: the sandbox's Python venv comes first.\nexport VIRTUAL_ENV=/opt/venv\nexport PATH=\"/opt/venv/bin:$PATH\"\n", 0o644)?;
    replace(
        tree,
        "etc/resolv.conf",
        &format!("nameserver {GUEST_NAMESERVER}\n"),
    )?;
    replace(tree, "etc/hostname", "sandbox\n")?;
    replace(
        tree,
        "etc/hosts",
        "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )?;

    step.set_message("cleaning apt caches");
    chroot(tree, "apt-get clean", &["apt-get", "clean"])?;
    clear_dir(&tree.join("var/cache/apt/archives"), |name| {
        name.ends_with(".deb")
    })?;
    clear_dir(&tree.join("var/cache/apt"), |name| name.ends_with(".bin"))?;
    clear_dir(&tree.join("var/lib/apt/lists"), |name| {
        name != "partial" && name != "lock"
    })?;
    Ok(())
}

/// Runs `cmd` with stdout and stderr appended to `log`, showing its latest
/// line on the step's spinner. A failure carries the last lines printed.
fn run_logged(cmd: &mut Command, log: &Path, step: &Step) -> Result<(), CommandError> {
    let program = cmd::describe(cmd);
    let spawn_err = |source| CommandError::Spawn {
        program: program.clone(),
        source,
    };
    let mut log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(spawn_err)?;
    let _ = writeln!(log_file, "$ {cmd:?}");
    // Close-on-exec, so builds on other threads do not inherit the write end.
    let (reader, writer) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| spawn_err(e.into()))?;
    let writer2 = writer.try_clone().map_err(spawn_err)?;
    tracing::debug!(command = ?cmd, "running");
    let mut child = cmd
        .env("LC_ALL", "C")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2))
        .spawn()
        .map_err(spawn_err)?;
    // `cmd` still holds the write ends; once they are gone only the child
    // has them, and the read loop ends when it exits.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let bar = step.bar();
    let mut last = std::collections::VecDeque::with_capacity(20);
    for line in BufReader::new(File::from(reader)).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(log_file, "{line}");
        let shown: String = line.trim().chars().take(100).collect();
        if !shown.is_empty() {
            bar.set_message(shown);
        }
        if last.len() == 20 {
            last.pop_front();
        }
        last.push_back(line);
    }
    let status = child.wait().map_err(spawn_err)?;
    if status.success() {
        Ok(())
    } else {
        Err(CommandError::Failed {
            program,
            status,
            output_tail: Vec::from(last).join("\n"),
        })
    }
}

/// Saves a failed build's log outside the build directory, together with
/// debootstrap's detailed log inside the tree (where package configuration
/// errors end up), and points a debootstrap error at the saved copy.
fn keep_log(
    layout: &Layout,
    digest: &str,
    tree: &Path,
    log: &Path,
    error: ImageError,
) -> ImageError {
    let outer = fs::read_to_string(log).unwrap_or_default();
    let inner = fs::read_to_string(tree.join("debootstrap/debootstrap.log")).unwrap_or_default();
    let kept = layout.logs().join(format!(
        "debian-{}-{}.log",
        &digest[..12],
        rfc3339(SystemTime::now())
    ));
    let combined = format!("{outer}\n--- debootstrap/debootstrap.log ---\n{inner}");
    let saved = fs::create_dir_all(layout.logs()).and_then(|()| fs::write(&kept, combined));
    match &saved {
        Ok(()) => tracing::warn!(log = %kept.display(), "debian rootfs build failed; log kept"),
        Err(e) => tracing::warn!(error = %e, "could not keep the failed build's log"),
    }
    match error {
        ImageError::Debootstrap {
            log_tail, source, ..
        } if saved.is_ok() => ImageError::Debootstrap {
            log: kept,
            log_tail,
            source,
        },
        other => other,
    }
}

fn chroot(tree: &Path, step: &str, args: &[&str]) -> Result<(), ImageError> {
    cmd::run(&mut chroot_command(tree, args))
        .map(drop)
        .map_err(|source| ImageError::Customize {
            step: step.to_owned(),
            source,
        })
}

fn chroot_logged(
    tree: &Path,
    name: &str,
    args: &[&str],
    log: &Path,
    step: &Step,
) -> Result<(), ImageError> {
    step.set_message(name.to_owned());
    run_logged(&mut chroot_command(tree, args), log, step).map_err(|source| ImageError::Customize {
        step: name.to_owned(),
        source,
    })
}

fn chroot_command(tree: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("chroot");
    command
        .arg(tree)
        .args(args)
        .env("LC_ALL", "C")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("HOME", "/root")
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_command_output_goes_to_log_and_error_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("build.log");
        let step = Step::start("test step");
        run_logged(
            Command::new("sh").args(["-c", "echo one; echo two >&2"]),
            &log,
            &step,
        )
        .unwrap();
        let err = run_logged(
            Command::new("sh").args(["-c", "echo three; echo four >&2; exit 2"]),
            &log,
            &step,
        )
        .unwrap_err();
        step.done();
        match err {
            CommandError::Failed {
                status,
                output_tail,
                ..
            } => {
                assert_eq!(status.code(), Some(2));
                assert_eq!(output_tail, "three\nfour");
            }
            other => panic!("unexpected {other:?}"),
        }
        let text = fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("$ ")).collect();
        assert_eq!(lines, ["one", "two", "three", "four"]);
        assert_eq!(text.lines().filter(|l| l.starts_with("$ ")).count(), 2);
    }
}
