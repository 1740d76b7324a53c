//! The `minimal` recipe: busybox-static (Debian 13's) and the agent in a hand-made tree;
//! builds offline in seconds.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{chown, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::tree::{copy_executable, mkdir, set_mode, write};
use super::{cached_or_lock, publish, Cached, Recipe, RecipeDescription};
use super::{GUEST_NAMESERVER, SANDBOX_UID};
use crate::cmd;
use crate::deb;
use crate::error::{CommandError, ImageError};
use crate::progress::Step;
use crate::staging::Staging;
use crate::util::sha256_file;
use crate::Layout;

/// Where busybox comes from: Debian 13's static build. Debian 12's
/// (1.35) is built without wget's timeout, so `wget -T` crashes it
/// (`Segmentation fault`) and a connection to a silent address waits
/// forever; the binary is static, so it needs nothing else from trixie.
const BUSYBOX_SOURCE: deb::Source = deb::Source::Suite("trixie");

pub(super) fn ensure_minimal(layout: &Layout, agent: &Path) -> Result<PathBuf, ImageError> {
    if !agent.is_file() {
        return Err(ImageError::AgentMissing {
            path: agent.to_owned(),
        });
    }
    let deb = deb::fetch_from(layout, "busybox-static", BUSYBOX_SOURCE)?;
    let staging = Staging::new(&layout.tmp(), "rootfs-minimal")?;
    let unpacked = staging.join("busybox-deb");
    deb::unpack(&deb, &unpacked)?;
    let busybox = ["usr/bin/busybox", "bin/busybox"]
        .map(|p| unpacked.join(p))
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| unpacked.join("usr/bin/busybox"));
    let inputs = BTreeMap::from([
        ("busybox".to_owned(), sha256_file(&busybox)?),
        ("hearth-agent".to_owned(), sha256_file(agent)?),
    ]);
    let description = RecipeDescription::new(Recipe::Minimal, inputs);
    let digest = description.digest();
    let _lock = match cached_or_lock(layout, &digest)? {
        Cached::Found(path) => return Ok(path),
        Cached::Build(lock) => lock,
    };

    let step = Step::start("building minimal rootfs");
    let started = Instant::now();
    let tree = staging.join("tree");
    step.set_message("populating tree");
    populate_minimal(&tree, &busybox, agent)?;
    let path = publish(
        layout,
        &staging,
        &tree,
        Recipe::Minimal,
        &description,
        started,
        &step,
    )?;
    step.done();
    Ok(path)
}

fn populate_minimal(tree: &Path, busybox: &Path, agent: &Path) -> Result<(), ImageError> {
    mkdir(tree, 0o755)?;
    for dir in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "root",
        "proc",
        "sys",
        "dev",
        "run",
        "mnt",
        "opt",
        "usr/local/bin",
        "var",
        "var/tmp",
        "home",
    ] {
        mkdir(&tree.join(dir), 0o755)?;
    }
    set_mode(&tree.join("root"), 0o700)?;
    mkdir(&tree.join("tmp"), 0o1777)?;
    set_mode(&tree.join("var/tmp"), 0o1777)?;
    for dir in ["workspace", "home/sandbox"] {
        let path = tree.join(dir);
        mkdir(&path, 0o755)?;
        chown(&path, Some(SANDBOX_UID), Some(SANDBOX_UID)).map_err(ImageError::io(&path))?;
    }

    copy_executable(busybox, &tree.join("bin/busybox"))?;
    copy_executable(agent, &tree.join("usr/local/bin/hearth-agent"))?;
    let listing = cmd::stdout(Command::new(busybox).arg("--list-full"))
        .map_err(|source| ImageError::BusyboxApplets { source })?;
    let mut applets: Vec<&str> = listing
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if applets.is_empty() {
        return Err(ImageError::BusyboxApplets {
            source: CommandError::BadOutput {
                program: "busybox --list-full".into(),
                detail: "no applets listed".into(),
            },
        });
    }
    applets.push("bin/sh");
    for applet in applets {
        let relative = applet.trim_start_matches('/');
        if relative == "bin/busybox" || relative.split('/').any(|c| c.is_empty() || c == "..") {
            continue;
        }
        let link = tree.join(relative);
        if fs::symlink_metadata(&link).is_ok() {
            continue;
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(ImageError::io(parent))?;
        }
        symlink("/bin/busybox", &link).map_err(ImageError::io(&link))?;
    }

    write(
        tree,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000:sandbox:/home/sandbox:/bin/sh\n",
        0o644,
    )?;
    write(tree, "etc/group", "root:x:0:\nsandbox:x:1000:\n", 0o644)?;
    write(
        tree,
        "etc/shadow",
        "root:*:19000:0:99999:7:::\nsandbox:*:19000:0:99999:7:::\n",
        0o640,
    )?;
    write(tree, "etc/hostname", "sandbox\n", 0o644)?;
    write(
        tree,
        "etc/hosts",
        "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        0o644,
    )?;
    write(
        tree,
        "etc/resolv.conf",
        &format!("nameserver {GUEST_NAMESERVER}\n"),
        0o644,
    )?;
    write(tree, "etc/profile", "export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin\nexport HOME=\"${HOME:-/root}\"\n", 0o644)?;
    Ok(())
}
