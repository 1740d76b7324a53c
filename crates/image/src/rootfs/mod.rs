//! Root filesystem images (`vda`): built from a recipe into a directory tree,
//! packed with `mkfs.ext4 -d`, and stored content-addressed by the recipe's
//! description as `<data>/images/<sha256>.ext4` with a `<sha256>.json`
//! manifest. A recipe is rebuilt only when its description changes.
//!
//! This module holds the store side (lookup, the build lock, publishing);
//! `recipe` says what an image is made of, `minimal` and `debian` build
//! their trees, and `tree` has the helpers both use to lay files down.

mod debian;
mod minimal;
mod recipe;
mod tree;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use crate::cmd;
use crate::error::ImageError;
use crate::progress::Step;
use crate::staging::{lock_artifact, Staging};
use crate::util::{image_size_mb, rfc3339, tree_usage};
use crate::Layout;
pub use recipe::{ImageManifest, Recipe, RecipeDescription, UnknownRecipe};
use tree::set_mode;

/// The uid/gid of the `sandbox` user in every rootfs.
pub const SANDBOX_UID: u32 = 1000;
/// The DNS server of QEMU's user-mode network.
pub const GUEST_NAMESERVER: &str = "10.0.2.3";

pub(crate) fn ensure(layout: &Layout, recipe: Recipe, agent: &Path) -> Result<PathBuf, ImageError> {
    match recipe {
        Recipe::Minimal => minimal::ensure_minimal(layout, agent),
        Recipe::Debian => debian::ensure_debian(layout),
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

/// The current Debian recipe's image exists.
pub(crate) fn debian_cached(layout: &Layout) -> bool {
    let digest = RecipeDescription::new(Recipe::Debian, BTreeMap::new()).digest();
    cached(layout, &digest).is_some()
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
