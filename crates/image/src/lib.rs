//! Hearth's image builder: the guest kernel, the initramfs that boots it into
//! the agent, root filesystem images and sandbox disks, kept in a
//! content-addressed store under the data directory:
//!
//! ```text
//! kernels/<ver>/vmlinuz, modules/, initramfs-<hash>.cpio.gz
//! images/<sha256>.ext4, <sha256>.json
//! cache/debs/, cache/debootstrap/   downloaded packages
//! tmp/                              in-progress builds (never read as artifacts)
//! ```
//!
//! Every artifact is built in its own directory under `tmp/` and renamed into
//! place only when complete. All calls block; async callers use
//! `spawn_blocking`. Building needs root (ownership in images comes from the
//! build tree; debootstrap and chroot need it anyway).

mod agent;
mod cmd;
pub mod cpio;
mod deb;
mod disk;
mod error;
mod initramfs;
mod kernel;
pub mod modules;
mod progress;
mod rootfs;
mod staging;
mod util;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

pub use agent::{static_agent_binary, AGENT_ENV};
pub use disk::{
    copy_data_extents, create_sparse_ext4, data_extents, sparse_copy, SANDBOX_DISK_LABEL,
};
pub use error::{CommandError, ImageError};
pub use initramfs::{KERNEL_VERSION_FILE, MODULES_LIST};
pub use kernel::{Kernel, KERNEL_METAPACKAGE};
pub use rootfs::{
    ImageManifest, Recipe, RecipeDescription, UnknownRecipe, GUEST_NAMESERVER, SANDBOX_UID,
};

/// Where things live under the data directory.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub(crate) fn kernels(&self) -> PathBuf {
        self.root.join("kernels")
    }
    pub(crate) fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    pub(crate) fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    pub(crate) fn locks(&self) -> PathBuf {
        self.tmp().join(staging::LOCKS_DIR)
    }
    pub(crate) fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub(crate) fn deb_cache(&self) -> PathBuf {
        self.root.join("cache/debs")
    }
    pub(crate) fn debootstrap_cache(&self) -> PathBuf {
        self.root.join("cache/debootstrap")
    }
}

/// The artifact store in a data directory. Clones share their memo of
/// artifacts already found, so repeated calls (one per sandbox boot) cost a
/// `stat`, not a package index query or hashing the agent again.
#[derive(Debug, Clone)]
pub struct ImageStore {
    layout: Layout,
    reaped: Arc<AtomicBool>,
    kernel: Arc<Mutex<Option<Kernel>>>,
    /// Input fingerprint (paths, sizes, mtimes) -> artifact.
    found: Arc<Mutex<HashMap<String, PathBuf>>>,
}

impl ImageStore {
    /// A store in `data_dir`; nothing is touched until something is built.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            layout: Layout {
                root: data_dir.into(),
            },
            reaped: Arc::new(AtomicBool::new(false)),
            kernel: Arc::default(),
            found: Arc::default(),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.layout.root
    }

    /// The current Debian cloud kernel, downloaded and unpacked if missing.
    /// The package index is consulted once per store; later calls return the
    /// same kernel while its files exist.
    pub fn kernel(&self) -> Result<Kernel, ImageError> {
        let mut memo = self.kernel.lock();
        if let Some(kernel) = memo.as_ref().filter(|k| k.vmlinuz.is_file()) {
            return Ok(kernel.clone());
        }
        self.prepare();
        let kernel = kernel::ensure(&self.layout)?;
        *memo = Some(kernel.clone());
        Ok(kernel)
    }

    /// The initramfs for `kernel` with `agent_binary` as `/init` (see the
    /// `initramfs` module for the layout), built if missing.
    pub fn initramfs(&self, kernel: &Kernel, agent_binary: &Path) -> Result<PathBuf, ImageError> {
        let key = format!(
            "initramfs {} {}",
            kernel.vmlinuz.display(),
            fingerprint(agent_binary)
        );
        self.memoized(key, || {
            self.prepare();
            initramfs::ensure(&self.layout, kernel, agent_binary)
        })
    }

    /// The ext4 image of `recipe`, built if its recipe changed. The agent is
    /// an input of `Minimal` only (at `/usr/local/bin/hearth-agent`); `Debian`
    /// ignores it, so a new agent does not cost a multi-minute rebuild (the
    /// agent runs from the initramfs anyway).
    pub fn rootfs(&self, recipe: Recipe, agent_binary: &Path) -> Result<PathBuf, ImageError> {
        let key = format!("rootfs {recipe} {}", fingerprint(agent_binary));
        self.memoized(key, || {
            self.prepare();
            rootfs::ensure(&self.layout, recipe, agent_binary)
        })
    }

    /// Whether the Debian image of the current recipe is built, without
    /// building it (`hearth up` checks this before asking for root: only a
    /// build runs debootstrap).
    pub fn debian_is_built(&self) -> bool {
        rootfs::debian_cached(&self.layout)
    }

    fn memoized(
        &self,
        key: String,
        build: impl FnOnce() -> Result<PathBuf, ImageError>,
    ) -> Result<PathBuf, ImageError> {
        if let Some(path) = self.found.lock().get(&key).filter(|p| p.is_file()) {
            return Ok(path.clone());
        }
        let path = build()?;
        self.found.lock().insert(key, path.clone());
        Ok(path)
    }

    /// The manifest stored next to a rootfs image.
    pub fn manifest(&self, image: &Path) -> Result<ImageManifest, ImageError> {
        let path = image.with_extension("json");
        let text = std::fs::read(&path).map_err(ImageError::io(&path))?;
        serde_json::from_slice(&text).map_err(|source| ImageError::Manifest { path, source })
    }

    /// Builds what `target` names (whatever is missing) and returns the
    /// resulting artifacts. `agent` defaults to [`static_agent_binary`].
    pub fn build(
        &self,
        target: BuildTarget,
        agent: Option<&Path>,
    ) -> Result<Vec<Artifact>, ImageError> {
        let agent = || -> Result<PathBuf, ImageError> {
            match agent {
                Some(path) => Ok(path.to_owned()),
                None => static_agent_binary(),
            }
        };
        let mut out = Vec::new();
        if matches!(
            target,
            BuildTarget::Kernel | BuildTarget::Initramfs | BuildTarget::All
        ) {
            let kernel = self.kernel()?;
            out.push(Artifact::new("kernel", &kernel.vmlinuz));
            out.push(Artifact::new("modules", &kernel.modules_dir));
            if target != BuildTarget::Kernel {
                let path = self.initramfs(&kernel, &agent()?)?;
                out.push(Artifact::new("initramfs", path));
            }
        }
        for recipe in Recipe::ALL {
            let wanted = match target {
                BuildTarget::All => true,
                BuildTarget::Minimal => recipe == Recipe::Minimal,
                BuildTarget::Debian => recipe == Recipe::Debian,
                BuildTarget::Kernel | BuildTarget::Initramfs => false,
            };
            if wanted {
                let path = self.rootfs(recipe, &agent()?)?;
                out.push(Artifact::new(recipe.name(), path));
            }
        }
        Ok(out)
    }

    /// Removes build directories left by crashed builds, once per store.
    fn prepare(&self) {
        if !self.reaped.swap(true, Ordering::SeqCst) {
            staging::reap_stale(&self.layout.tmp());
        }
    }
}

/// Identifies a file's current contents cheaply (path, size, mtime), so a
/// rebuilt agent is noticed without hashing it.
fn fingerprint(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => format!(
            "{}:{}:{}.{}:{}",
            path.display(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ino()
        ),
        Err(_) => format!("{}:missing", path.display()),
    }
}

/// What `ImageStore::build` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildTarget {
    Kernel,
    Initramfs,
    Minimal,
    Debian,
    All,
}

impl FromStr for BuildTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "kernel" => Self::Kernel,
            "initramfs" => Self::Initramfs,
            "minimal" => Self::Minimal,
            "debian" => Self::Debian,
            "all" => Self::All,
            other => return Err(format!("unknown build target {other:?}")),
        })
    }
}

/// One built (or found) artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub kind: &'static str,
    pub path: PathBuf,
}

impl Artifact {
    fn new(kind: &'static str, path: impl Into<PathBuf>) -> Self {
        Self {
            kind,
            path: path.into(),
        }
    }
}

impl fmt::Display for Artifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\t{}", self.kind, self.path.display())
    }
}
