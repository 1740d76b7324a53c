//! The initramfs: the static agent as `/init` plus the kernel modules it loads
//! before mounting the disks. The layout is a contract with the agent's init
//! mode:
//!
//! - `/init`: the agent, 0755
//! - `/lib/modules/<version>/<path>.ko`: each needed module, 0644
//! - `/etc/hearth/modules`: module paths relative to `/lib/modules/<version>/`,
//!   one per line, dependencies first
//! - `/etc/hearth/kernel-version`: the version, no trailing newline
//! - `/dev`, `/proc`, `/sys`, `/mnt`, `/newroot`, `/etc`, `/etc/hearth`,
//!   `/lib`, `/lib/modules` (0755) and `/dev/console` (char 5:1, 0600)
//!
//! Stored as `<data>/kernels/<version>/initramfs-<hash>.cpio.gz`, the hash
//! covering every input, so a new agent build gets a new file.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::cpio::NewcWriter;
use crate::error::ImageError;
use crate::kernel::Kernel;
use crate::progress::Step;
use crate::staging::{lock_artifact, Staging};
use crate::util::{sha256_file, sha256_hex};
use crate::Layout;

/// Bumped when the archive layout changes, so old archives are not reused.
const FORMAT: &str = "hearth-initramfs 1";
/// Length of the hash prefix in the file name.
const HASH_PREFIX: usize = 16;

pub const MODULES_LIST: &str = "etc/hearth/modules";
pub const KERNEL_VERSION_FILE: &str = "etc/hearth/kernel-version";

const DIRS: &[&str] = &[
    "dev",
    "proc",
    "sys",
    "mnt",
    "newroot",
    "etc",
    "etc/hearth",
    "lib",
    "lib/modules",
];

pub(crate) fn ensure(
    layout: &Layout,
    kernel: &Kernel,
    agent: &Path,
) -> Result<PathBuf, ImageError> {
    if !agent.is_file() {
        return Err(ImageError::AgentMissing {
            path: agent.to_owned(),
        });
    }
    let modules = kernel.guest_modules()?;
    let mut inputs = format!(
        "{FORMAT}\nkernel {}\nagent {}\n",
        kernel.version,
        sha256_file(agent)?
    );
    for module in &modules {
        let hash = sha256_file(&kernel.modules_dir.join(module))?;
        inputs.push_str(&format!("module {module} {hash}\n"));
    }
    let hash = sha256_hex(inputs.as_bytes());
    let dir = kernel
        .vmlinuz
        .parent()
        .expect("vmlinuz lives in the kernel directory")
        .to_owned();
    let dest = dir.join(format!("initramfs-{}.cpio.gz", &hash[..HASH_PREFIX]));
    if dest.is_file() {
        return Ok(dest);
    }
    let _lock = lock_artifact(
        &layout.locks(),
        &format!("initramfs-{}", &hash[..HASH_PREFIX]),
    )?;
    if dest.is_file() {
        return Ok(dest);
    }

    let step = Step::start(format!("building initramfs for {}", kernel.version));
    let staging = Staging::new(&layout.tmp(), "initramfs")?;
    let tmp = staging.join("initramfs.cpio.gz");
    let file = File::create(&tmp).map_err(ImageError::io(&tmp))?;
    let gz = GzEncoder::new(BufWriter::new(file), Compression::default());
    let file = write_archive(gz, kernel, agent, &modules)
        .and_then(|gz| gz.finish())
        .and_then(|buf| buf.into_inner().map_err(|e| e.into_error()))
        .map_err(ImageError::io(&tmp))?;
    file.sync_all().map_err(ImageError::io(&tmp))?;
    fs::rename(&tmp, &dest).map_err(ImageError::io(&dest))?;
    step.done();
    Ok(dest)
}

fn write_archive<W: Write>(
    out: W,
    kernel: &Kernel,
    agent: &Path,
    modules: &[String],
) -> std::io::Result<W> {
    let mut cpio = NewcWriter::new(out);
    for dir in DIRS {
        cpio.dir(dir, 0o755)?;
    }
    cpio.char_device("dev/console", 0o600, 5, 1)?;
    add_file(&mut cpio, "init", 0o755, agent)?;
    let base = format!("lib/modules/{}", kernel.version);
    cpio.dir(&base, 0o755)?;
    for module in modules {
        add_file(
            &mut cpio,
            &format!("{base}/{module}"),
            0o644,
            &kernel.modules_dir.join(module),
        )?;
    }
    let mut list = modules.join("\n");
    list.push('\n');
    cpio.file(MODULES_LIST, 0o644, list.as_bytes())?;
    cpio.file(KERNEL_VERSION_FILE, 0o644, kernel.version.as_bytes())?;
    cpio.finish()
}

fn add_file<W: Write>(
    cpio: &mut NewcWriter<W>,
    name: &str,
    mode: u32,
    path: &Path,
) -> std::io::Result<()> {
    let mut file = File::open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let len = file.metadata()?.len();
    cpio.file_from_reader(name, mode, len, &mut file)
}
