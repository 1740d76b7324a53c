//! Built-in template ids to the files a VM boots from: `minimal`, or
//! `default` (the Debian image; `debian` and `miosa-sandbox` are aliases).
//! Artifacts are built on first use and cached by the image store. Custom
//! templates (built from a BuildSpec) live in `builds`, on top of these.

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
    /// Content version: the image's digest prefix.
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
        let version = base
            .file_stem()
            .and_then(|s| s.to_str())
            .map(|s| s.chars().take(12).collect())
            .unwrap_or_else(|| "0".into());
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
