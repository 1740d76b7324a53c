//! Built-in template ids to the files a VM boots from: `minimal`, or
//! `default` (the Debian image; `debian` and `miosa-sandbox` are aliases).
//! Artifacts are built on first use and cached by the image store. Custom
//! templates (built from a BuildSpec) live in `builds`, on top of these.

pub mod builds;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use hearth_image::{ImageStore, Recipe};
use tokio::sync::OnceCell;

/// What a sandbox of a template boots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTemplate {
    /// Canonical id (`default`, `minimal`).
    pub id: String,
    /// Content version: digest prefixes of the root filesystem and the
    /// initramfs (and, through `Core::resolve_template`, the driver's
    /// guest clock tag); `v<n>` for a custom template.
    pub version: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub base_image: PathBuf,
    /// Built from a BuildSpec: its sandboxes only ever restore the
    /// version's snapshot (booting the base image would miss the build).
    pub custom: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template {0:?} not found")]
    Unknown(String),
    #[error("build template {id}")]
    Build {
        id: String,
        #[source]
        source: anyhow::Error,
    },
}

#[async_trait]
pub trait Templates: Send + Sync + std::fmt::Debug {
    /// The canonical id of `id`, if it names a template (no build).
    fn canonical(&self, id: &str) -> Option<String>;
    /// The files of `id`, built if missing (may take minutes the first time).
    async fn resolve(&self, id: &str) -> Result<ResolvedTemplate, TemplateError>;

    /// Whether [`Templates::resolve`] of `id` takes seconds, not the
    /// minutes of an image build: what the server warms at start unasked.
    fn is_quick(&self, _id: &str) -> bool {
        true
    }
}

/// Templates backed by the image store's built-in recipes.
#[derive(Debug)]
pub struct ImageTemplates {
    store: Arc<ImageStore>,
    boot: OnceCell<(PathBuf, PathBuf, PathBuf)>,
    minimal: OnceCell<PathBuf>,
    debian: OnceCell<PathBuf>,
}

impl ImageTemplates {
    pub fn new(data_dir: &Path) -> ImageTemplates {
        ImageTemplates {
            store: Arc::new(ImageStore::new(data_dir)),
            boot: OnceCell::new(),
            minimal: OnceCell::new(),
            debian: OnceCell::new(),
        }
    }

    fn recipe(id: &str) -> Option<Recipe> {
        id.parse().ok()
    }

    /// Agent, kernel and initramfs: shared by every template.
    async fn boot_files(&self) -> Result<&(PathBuf, PathBuf, PathBuf), anyhow::Error> {
        self.boot
            .get_or_try_init(|| async {
                let store = self.store.clone();
                tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                    let agent = hearth_image::static_agent_binary()?;
                    let kernel = store.kernel()?;
                    let initrd = store.initramfs(&kernel, &agent)?;
                    Ok((agent, kernel.vmlinuz, initrd))
                })
                .await?
            })
            .await
    }
}

#[async_trait]
impl Templates for ImageTemplates {
    fn canonical(&self, id: &str) -> Option<String> {
        Self::recipe(id).map(|r| match r {
            Recipe::Minimal => "minimal".to_string(),
            _ => "default".to_string(),
        })
    }

    fn is_quick(&self, id: &str) -> bool {
        match Self::recipe(id) {
            Some(Recipe::Minimal) => true,
            Some(_) => self.store.debian_is_built(),
            None => false,
        }
    }

    async fn resolve(&self, id: &str) -> Result<ResolvedTemplate, TemplateError> {
        let recipe = Self::recipe(id).ok_or_else(|| TemplateError::Unknown(id.to_string()))?;
        let canonical = self.canonical(id).unwrap_or_else(|| id.to_string());
        let build_err = |source: anyhow::Error| TemplateError::Build {
            id: canonical.clone(),
            source,
        };
        let (agent, kernel, initrd) = self.boot_files().await.map_err(build_err)?;
        let cell = match recipe {
            Recipe::Minimal => &self.minimal,
            _ => &self.debian,
        };
        let base = cell
            .get_or_try_init(|| async {
                let store = self.store.clone();
                let agent = agent.clone();
                tokio::task::spawn_blocking(move || -> anyhow::Result<PathBuf> {
                    Ok(store.rootfs(recipe, &agent)?)
                })
                .await?
            })
            .await
            .map_err(build_err)?;
        let version = content_version(base, initrd);
        Ok(ResolvedTemplate {
            id: canonical,
            version,
            kernel: kernel.clone(),
            initrd: initrd.clone(),
            base_image: base.clone(),
            custom: false,
        })
    }
}

/// A built-in template's content version: digest prefixes of its root
/// filesystem and of the initramfs (the agent, the guest's modules). A
/// template snapshot holds both in its RAM, so a new agent gets a new
/// version and never restores an old agent (whose protocol may differ).
fn content_version(rootfs: &std::path::Path, initrd: &std::path::Path) -> String {
    let digest = |p: &std::path::Path, strip: &str| -> String {
        p.file_name()
            .and_then(|s| s.to_str())
            .map(|s| s.trim_start_matches(strip).chars().take(12).collect())
            .unwrap_or_else(|| "0".into())
    };
    format!("{}-{}", digest(rootfs, ""), digest(initrd, "initramfs-"))
}

#[cfg(test)]
mod content_version_tests {
    use super::content_version;
    use std::path::Path;

    #[test]
    fn a_new_initramfs_is_a_new_version() {
        let rootfs = Path::new("/d/images/bf9d2a39b77cdc57169d.ext4");
        let a = content_version(
            rootfs,
            Path::new("/d/kernels/k/initramfs-af822febcdf66798.cpio.gz"),
        );
        let b = content_version(
            rootfs,
            Path::new("/d/kernels/k/initramfs-b73100435a3d6f9f.cpio.gz"),
        );
        assert_eq!(a, "bf9d2a39b77c-af822febcdf6");
        assert_ne!(a, b);
    }
}
