//! Root filesystem images (`vda`): built from a recipe into a directory tree,
//! packed with `mkfs.ext4 -d`, and stored content-addressed by the recipe's
//! description as `<data>/images/<sha256>.ext4` with a `<sha256>.json`
//! manifest. A recipe is rebuilt only when its description changes.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::cmd;
use crate::deb;
use crate::error::{CommandError, ImageError};
use crate::progress::Step;
use crate::staging::{lock_artifact, Staging};
use crate::util::{image_size_mb, rfc3339, sha256_file, sha256_hex, tree_usage};
use crate::Layout;

/// The uid/gid of the `sandbox` user in every rootfs.
pub const SANDBOX_UID: u32 = 1000;
/// The DNS server of QEMU's user-mode network.
pub const GUEST_NAMESERVER: &str = "10.0.2.3";

const DEBIAN_SUITE: &str = "bookworm";
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
const DEBIAN_SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";
const DEBIAN_PACKAGES: &[&str] = &[
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

/// A way of building a root filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recipe {
    /// busybox-static and the agent; builds offline in seconds.
    Minimal,
    /// debootstrap bookworm with Python (`/opt/venv`), git, curl, Node.js.
    Debian,
}

impl Recipe {
    pub const ALL: [Recipe; 2] = [Recipe::Minimal, Recipe::Debian];

    pub fn name(self) -> &'static str {
        match self {
            Recipe::Minimal => "minimal",
            Recipe::Debian => "debian",
        }
    }

    /// Bumped whenever the build steps change, so cached images are rebuilt.
    fn version(self) -> &'static str {
        match self {
            Recipe::Minimal => "1",
            Recipe::Debian => "2 bookworm minbase+apt",
        }
    }

    fn packages(self) -> Vec<String> {
        let list: &[&str] = match self {
            Recipe::Minimal => &["busybox-static"],
            Recipe::Debian => DEBIAN_PACKAGES,
        };
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn label(self) -> &'static str {
        match self {
            Recipe::Minimal => "hearth-minimal",
            Recipe::Debian => "hearth-debian",
        }
    }
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name is not a known recipe.
#[derive(Debug, thiserror::Error)]
#[error("unknown rootfs recipe {0:?} (known: minimal, debian)")]
pub struct UnknownRecipe(pub String);

impl FromStr for Recipe {
    type Err = UnknownRecipe;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "minimal" => Ok(Recipe::Minimal),
            // The default template; `miosa-sandbox` is the MIOSA API's name for it.
            "debian" | "default" | "miosa-sandbox" => Ok(Recipe::Debian),
            other => Err(UnknownRecipe(other.to_owned())),
        }
    }
}

/// Everything an image's content depends on; its hash names the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipeDescription {
    pub recipe: String,
    pub recipe_version: String,
    pub packages: Vec<String>,
    /// Input file name -> SHA-256 of its contents.
    pub inputs: BTreeMap<String, String>,
}

impl RecipeDescription {
    fn new(recipe: Recipe, inputs: BTreeMap<String, String>) -> Self {
        Self {
            recipe: recipe.name().to_owned(),
            recipe_version: recipe.version().to_owned(),
            packages: recipe.packages(),
            inputs,
        }
    }

    /// Hex SHA-256 over a canonical encoding (fixed field order, sorted inputs).
    pub fn digest(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("a description always serializes");
        sha256_hex(&canonical)
    }
}

/// `<sha256>.json` next to each image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageManifest {
    pub digest: String,
    pub recipe: RecipeDescription,
    pub created_at: String,
    pub size_bytes: u64,
    pub build_seconds: f64,
}

pub(crate) fn ensure(layout: &Layout, recipe: Recipe, agent: &Path) -> Result<PathBuf, ImageError> {
    match recipe {
        Recipe::Minimal => ensure_minimal(layout, agent),
        Recipe::Debian => ensure_debian(layout),
    }
}

/// Looks up a finished image; `None` when it must be built.
fn cached(layout: &Layout, digest: &str) -> Option<PathBuf> {
    let path = layout.images().join(format!("{digest}.ext4"));
    path.is_file().then_some(path)
}

enum Cached {
    Found(PathBuf),
    /// Not built yet: the lock that makes this builder the only one.
    Build(nix::fcntl::Flock<std::fs::File>),
}

/// The image if it exists; else the artifact lock, after looking once more
/// (another builder may have finished while this one waited for the lock).
fn cached_or_lock(layout: &Layout, digest: &str) -> Result<Cached, ImageError> {
    if let Some(path) = cached(layout, digest) {
        return Ok(Cached::Found(path));
    }
    let lock = lock_artifact(&layout.locks(), &format!("image-{digest}"))?;
    Ok(match cached(layout, digest) {
        Some(path) => Cached::Found(path),
        None => Cached::Build(lock),
    })
}

fn ensure_minimal(layout: &Layout, agent: &Path) -> Result<PathBuf, ImageError> {
    if !agent.is_file() {
        return Err(ImageError::AgentMissing {
            path: agent.to_owned(),
        });
    }
    let deb = deb::fetch(layout, "busybox-static")?;
    let staging = Staging::new(&layout.tmp(), "rootfs-minimal")?;
    let unpacked = staging.join("busybox-deb");
    deb::unpack(&deb, &unpacked)?;
    let busybox = unpacked.join("bin/busybox");
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

/// The current Debian recipe's image exists.
pub(crate) fn debian_cached(layout: &Layout) -> bool {
    let digest = RecipeDescription::new(Recipe::Debian, BTreeMap::new()).digest();
    cached(layout, &digest).is_some()
}

fn ensure_debian(layout: &Layout) -> Result<PathBuf, ImageError> {
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

/// Packs `tree` into an ext4 image and moves image and manifest into
/// `<data>/images/`, the image last: its presence means complete.
fn publish(
    layout: &Layout,
    staging: &Staging,
    tree: &Path,
    recipe: Recipe,
    description: &RecipeDescription,
    started: Instant,
    step: &Step,
) -> Result<PathBuf, ImageError> {
    step.set_message("mkfs.ext4");
    let image = staging.join("image.ext4");
    let size_bytes = make_ext4(tree, &image, recipe.label())?;
    let digest = description.digest();
    let manifest = ImageManifest {
        digest: digest.clone(),
        recipe: description.clone(),
        created_at: rfc3339(SystemTime::now()),
        size_bytes,
        build_seconds: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    };
    let manifest_tmp = staging.join("manifest.json");
    let json = serde_json::to_vec_pretty(&manifest).map_err(|source| ImageError::Manifest {
        path: manifest_tmp.clone(),
        source,
    })?;
    fs::write(&manifest_tmp, json).map_err(ImageError::io(&manifest_tmp))?;

    let images = layout.images();
    fs::create_dir_all(&images).map_err(ImageError::io(&images))?;
    let dest = images.join(format!("{digest}.ext4"));
    let manifest_dest = images.join(format!("{digest}.json"));
    fs::rename(&manifest_tmp, &manifest_dest).map_err(ImageError::io(&manifest_dest))?;
    fs::rename(&image, &dest).map_err(ImageError::io(&dest))?;
    Ok(dest)
}

/// `mkfs.ext4 -d`: no loop device, no mount. Ownership and modes come from
/// the tree. Sized at content * 1.3 + 64 MiB, with enough inodes for the
/// tree's many small files. Returns the image size in bytes.
pub(crate) fn make_ext4(tree: &Path, image: &Path, label: &str) -> Result<u64, ImageError> {
    let usage = tree_usage(tree).map_err(ImageError::io(tree))?;
    let size = image_size_mb(usage) << 20;
    let inodes = usage.inodes + usage.inodes / 4 + 4096;
    let file = File::create(image).map_err(ImageError::io(image))?;
    file.set_len(size).map_err(ImageError::io(image))?;
    drop(file);
    cmd::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-m", "0", "-L", label])
            .arg("-N")
            .arg(inodes.to_string())
            .arg("-d")
            .arg(tree)
            .arg(image),
    )
    .map_err(|source| ImageError::Mkfs {
        path: image.to_owned(),
        source,
    })?;
    // Base images are shared read-only by every sandbox of a template.
    set_mode(image, 0o444)?;
    Ok(size)
}

/// Creates `path` and missing parents (0755), then gives `path` `mode`.
fn mkdir(path: &Path, mode: u32) -> Result<(), ImageError> {
    fs::create_dir_all(path).map_err(ImageError::io(path))?;
    set_mode(path, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ImageError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(ImageError::io(path))
}

fn copy_executable(src: &Path, dst: &Path) -> Result<(), ImageError> {
    fs::copy(src, dst).map_err(|source| ImageError::Copy {
        src: src.to_owned(),
        dst: dst.to_owned(),
        source,
    })?;
    set_mode(dst, 0o755)
}

fn write(tree: &Path, relative: &str, contents: &str, mode: u32) -> Result<(), ImageError> {
    let path = tree.join(relative);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(ImageError::io(parent))?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(ImageError::io(&path))?;
    file.write_all(contents.as_bytes())
        .map_err(ImageError::io(&path))?;
    set_mode(&path, mode)
}

/// Writes a file that may exist as a symlink (resolv.conf often is), replacing
/// the link rather than following it out of the tree.
fn replace(tree: &Path, relative: &str, contents: &str) -> Result<(), ImageError> {
    let path = tree.join(relative);
    match fs::symlink_metadata(&path) {
        Ok(meta) if !meta.is_file() => fs::remove_file(&path).map_err(ImageError::io(&path))?,
        _ => {}
    }
    write(tree, relative, contents, 0o644)
}

/// Removes the entries of `dir` whose names match `remove`.
fn clear_dir(dir: &Path, remove: impl Fn(&str) -> bool) -> Result<(), ImageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ImageError::io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(ImageError::io(dir))?;
        let name = entry.file_name();
        if !remove(&name.to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        let result = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        result.map_err(ImageError::io(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal(busybox: &str, agent: &str) -> RecipeDescription {
        RecipeDescription::new(
            Recipe::Minimal,
            BTreeMap::from([
                ("busybox".to_owned(), busybox.to_owned()),
                ("hearth-agent".to_owned(), agent.to_owned()),
            ]),
        )
    }

    #[test]
    fn recipe_digest_is_stable() {
        let a = minimal("aa", "bb");
        assert_eq!(a.digest(), minimal("aa", "bb").digest());
        assert_eq!(a.digest().len(), 64);
        // Pinned: changing the encoding would silently orphan every cached image.
        let pinned = sha256_hex(
            br#"{"recipe":"minimal","recipe_version":"1","packages":["busybox-static"],"inputs":{"busybox":"aa","hearth-agent":"bb"}}"#,
        );
        assert_eq!(a.digest(), pinned);
    }

    #[test]
    fn recipe_digest_changes_with_any_input() {
        let base = minimal("aa", "bb").digest();
        assert_ne!(base, minimal("ab", "bb").digest());
        assert_ne!(base, minimal("aa", "bc").digest());
        let mut other_version = minimal("aa", "bb");
        other_version.recipe_version = "2".into();
        assert_ne!(base, other_version.digest());
        let debian = RecipeDescription::new(Recipe::Debian, BTreeMap::new());
        assert_ne!(base, debian.digest());
        assert!(debian.packages.contains(&"python3-venv".to_owned()));
    }

    #[test]
    fn recipe_names_parse() {
        assert_eq!("minimal".parse::<Recipe>().unwrap(), Recipe::Minimal);
        assert_eq!("debian".parse::<Recipe>().unwrap(), Recipe::Debian);
        assert_eq!("miosa-sandbox".parse::<Recipe>().unwrap(), Recipe::Debian);
        assert!("alpine".parse::<Recipe>().is_err());
        for recipe in Recipe::ALL {
            assert_eq!(recipe.to_string().parse::<Recipe>().unwrap(), recipe);
            assert!(recipe.label().len() <= 16, "ext4 labels hold 16 bytes");
        }
    }

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

    #[test]
    fn replace_swaps_a_symlink_for_a_file() {
        let tree = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("resolv.conf");
        fs::write(&target, "host\n").unwrap();
        fs::create_dir(tree.path().join("etc")).unwrap();
        symlink(&target, tree.path().join("etc/resolv.conf")).unwrap();
        replace(tree.path(), "etc/resolv.conf", "nameserver 10.0.2.3\n").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "host\n");
        assert_eq!(
            fs::read_to_string(tree.path().join("etc/resolv.conf")).unwrap(),
            "nameserver 10.0.2.3\n"
        );
    }
}
