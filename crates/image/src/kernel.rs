//! The guest kernel: Debian's cloud kernel package, unpacked (never installed)
//! into `<data>/kernels/<version>/` with `vmlinuz` and its module tree, whose
//! `modules.dep` is generated here with `depmod`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::cmd;
use crate::deb;
use crate::error::ImageError;
use crate::modules::{ModuleIndex, GUEST_MODULES};
use crate::progress::Step;
use crate::staging::{lock_artifact, Staging};
use crate::util::rfc3339;
use crate::Layout;

/// The metapackage that always points at the current cloud kernel.
pub const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";

/// An unpacked guest kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// `uname -r` of the kernel, e.g. `6.1.0-48-cloud-amd64`.
    pub version: String,
    /// `<data>/kernels/<version>/vmlinuz`.
    pub vmlinuz: PathBuf,
    /// The kernel's `/lib/modules/<version>/` tree, with `modules.dep`.
    pub modules_dir: PathBuf,
}

impl Kernel {
    /// A kernel already stored in `dir` (`<data>/kernels/<version>/`).
    fn at(dir: &Path, version: &str) -> Option<Self> {
        let kernel = Self {
            version: version.to_owned(),
            vmlinuz: dir.join("vmlinuz"),
            modules_dir: dir.join("modules"),
        };
        (kernel.vmlinuz.is_file() && kernel.modules_dir.join("modules.dep").is_file())
            .then_some(kernel)
    }

    /// The module files the guest loads, relative to `modules_dir`, each
    /// after its dependencies ([`GUEST_MODULES`] plus what they need).
    pub fn guest_modules(&self) -> Result<Vec<String>, ImageError> {
        ModuleIndex::load(&self.modules_dir)?.load_order(GUEST_MODULES, &self.version)
    }
}

#[derive(Debug, Serialize)]
struct KernelManifest<'a> {
    version: &'a str,
    package: &'a str,
    deb: String,
    created_at: String,
}

/// The current cloud kernel, fetched and unpacked when missing. When the
/// package index cannot be consulted (offline), the newest stored kernel is
/// used instead.
pub(crate) fn ensure(layout: &Layout) -> Result<Kernel, ImageError> {
    let package = match deb::resolve_dependency(KERNEL_METAPACKAGE, "linux-image-") {
        Ok(package) => package,
        Err(e) => match newest_stored(layout) {
            Some(kernel) => {
                tracing::warn!(error = %e, version = %kernel.version, "cannot resolve the kernel package; using the stored kernel");
                return Ok(kernel);
            }
            None => return Err(e),
        },
    };
    let version = package.trim_start_matches("linux-image-").to_owned();
    let dir = layout.kernels().join(&version);
    if let Some(kernel) = Kernel::at(&dir, &version) {
        return Ok(kernel);
    }
    let _lock = lock_artifact(&layout.locks(), &format!("kernel-{version}"))?;
    if let Some(kernel) = Kernel::at(&dir, &version) {
        return Ok(kernel);
    }

    let deb = deb::fetch(layout, &package)?;
    let step = Step::start(format!("unpacking kernel {version}"));
    let staging = Staging::new(&layout.tmp(), "kernel")?;
    let root = staging.join("pkg");
    deb::unpack(&deb, &root)?;

    let boot_image = root.join("boot").join(format!("vmlinuz-{version}"));
    if !boot_image.is_file() {
        return Err(ImageError::KernelLayout {
            package,
            what: format!("boot/vmlinuz-{version}"),
        });
    }
    let tree = [
        root.join("lib/modules").join(&version),
        root.join("usr/lib/modules").join(&version),
    ]
    .into_iter()
    .find(|p| p.is_dir())
    .ok_or_else(|| ImageError::KernelLayout {
        package: package.clone(),
        what: format!("lib/modules/{version}"),
    })?;
    // depmod -b wants <base>/lib/modules/<version>; move a usr-merged tree there.
    let canonical = root.join("lib/modules").join(&version);
    if tree != canonical {
        fs::create_dir_all(root.join("lib/modules")).map_err(ImageError::io(&root))?;
        fs::rename(&tree, &canonical).map_err(ImageError::io(&canonical))?;
    }
    step.set_message("depmod");
    cmd::run(Command::new("depmod").arg("-b").arg(&root).arg(&version)).map_err(|source| {
        ImageError::Depmod {
            version: version.clone(),
            source,
        }
    })?;

    let out = staging.join("out");
    fs::create_dir(&out).map_err(ImageError::io(&out))?;
    fs::rename(&boot_image, out.join("vmlinuz")).map_err(ImageError::io(&boot_image))?;
    fs::rename(&canonical, out.join("modules")).map_err(ImageError::io(&canonical))?;
    let config = root.join("boot").join(format!("config-{version}"));
    if config.is_file() {
        fs::rename(&config, out.join("config")).map_err(ImageError::io(&config))?;
    }
    let manifest = KernelManifest {
        version: &version,
        package: &package,
        deb: deb
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        created_at: rfc3339(std::time::SystemTime::now()),
    };
    let manifest_path = out.join("kernel.json");
    let json = serde_json::to_vec_pretty(&manifest).map_err(|source| ImageError::Manifest {
        path: manifest_path.clone(),
        source,
    })?;
    fs::write(&manifest_path, json).map_err(ImageError::io(&manifest_path))?;
    // Check the module set resolves before publishing the kernel.
    let staged = Kernel {
        version: version.clone(),
        vmlinuz: out.join("vmlinuz"),
        modules_dir: out.join("modules"),
    };
    staged.guest_modules()?;

    fs::create_dir_all(layout.kernels()).map_err(ImageError::io(layout.kernels()))?;
    fs::rename(&out, &dir).map_err(ImageError::io(&dir))?;
    drop(staging);
    step.done();
    Kernel::at(&dir, &version).ok_or_else(|| ImageError::KernelLayout {
        package,
        what: "vmlinuz or modules.dep after install".into(),
    })
}

/// The stored kernel with the highest version, if any.
fn newest_stored(layout: &Layout) -> Option<Kernel> {
    let mut kernels: Vec<Kernel> = fs::read_dir(layout.kernels())
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().into_owned();
            Kernel::at(&e.path(), &version)
        })
        .collect();
    kernels.sort_by_key(|k| version_key(&k.version));
    kernels.pop()
}

/// Orders `6.1.0-48-cloud-amd64` after `6.1.0-9-cloud-amd64`.
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_version_order() {
        assert!(version_key("6.1.0-48-cloud-amd64") > version_key("6.1.0-9-cloud-amd64"));
        assert!(version_key("6.10.0-1-cloud-amd64") > version_key("6.9.0-30-cloud-amd64"));
    }
}
