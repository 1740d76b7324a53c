//! Templates built from a BuildSpec. A build boots a VM (RAM in a file)
//! from the spec's base image, installs its packages, runs its steps with
//! their output in the build log, starts `start_cmd`, waits until
//! `ready_cmd` succeeds, and writes the VM as a template snapshot: that
//! snapshot is the template's next version, in
//! `<data>/templates/<tpl_id>/v<n>/<shape>/`. Versions never change; the
//! template's name points at its latest ready one. A sandbox of a custom
//! template is a clone of that snapshot (its files and its running
//! `start_cmd` included), never a cold boot.
//!
//! Builds run one at a time (each is a VM that may compile or download for
//! minutes); later ones wait `queued`, each tenant in its own line, and the
//! slot goes to the tenants in turn (`queue.rs`).

pub mod log;
mod queue;
mod run;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex as SyncMutex;

use crate::error::{Error, Result};
use crate::ids::new_id;
use crate::keys::Caller;
use crate::model::{BuildRecord, BuildSpec, BuildState, TemplateRecord};
use crate::store::StoreError;
use crate::templates::{ResolvedTemplate, TemplateError};
use crate::warm::Shape;
use crate::Core;
use log::{BuildLog, LogLimits};

/// Running builds' logs, and the one build slot (taken in turn by
/// tenants, see [`queue`]).
#[derive(Debug)]
pub struct Builds {
    logs: SyncMutex<HashMap<String, Arc<BuildLog>>>,
    slot: Arc<queue::FairQueue>,
}

impl Default for Builds {
    fn default() -> Self {
        Builds {
            logs: SyncMutex::default(),
            slot: queue::FairQueue::new(1),
        }
    }
}

/// A custom template and its builds, newest first.
#[derive(Debug, Clone)]
pub struct TemplateInfo {
    pub template: TemplateRecord,
    pub builds: Vec<BuildRecord>,
}

impl TemplateInfo {
    /// The version sandboxes get: the newest ready build.
    pub fn latest_ready(&self) -> Option<&BuildRecord> {
        self.builds.iter().find(|b| b.state == BuildState::Ready)
    }
}

/// `s` as one single-quoted shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The snapshot shape of a build: its template, version and VM size.
pub fn build_shape(template_id: &str, version: u32, spec: &BuildSpec) -> Shape {
    Shape {
        template_id: template_id.to_string(),
        version: format!("v{version}"),
        cpu_count: spec.cpu_count,
        memory_mb: spec.memory_mb,
        disk_size_mb: spec.disk_size_mb,
    }
}

impl Core {
    /// The caller's custom template `id_or_name` (an id `tpl_...` or a
    /// name) with its builds.
    pub async fn find_template(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<Option<TemplateInfo>> {
        let t = if id_or_name.starts_with("tpl_") {
            self.store.get_template(id_or_name).await?
        } else {
            self.store
                .template_by_name(&caller.tenant_id, id_or_name)
                .await?
        };
        let Some(template) = t.filter(|t| t.tenant_id == caller.tenant_id) else {
            return Ok(None);
        };
        let builds = self.store.list_builds(&template.id).await?;
        Ok(Some(TemplateInfo { template, builds }))
    }

    pub async fn list_custom_templates(&self, caller: &Caller) -> Result<Vec<TemplateInfo>> {
        let mut out = Vec::new();
        for template in self.store.list_templates(&caller.tenant_id).await? {
            let builds = self.store.list_builds(&template.id).await?;
            out.push(TemplateInfo { template, builds });
        }
        Ok(out)
    }

    /// Creates template `name` and queues its first build.
    pub async fn create_template(
        self: &Arc<Core>,
        caller: &Caller,
        name: &str,
        spec: BuildSpec,
        shape_given: bool,
    ) -> Result<(TemplateInfo, BuildRecord)> {
        if self.templates.canonical(name).is_some() || name.starts_with("tpl_") {
            return Err(Error::field(
                "name",
                format!("{name:?} is a built-in template or a template id"),
            ));
        }
        let spec = self.check_from(caller, spec, shape_given).await?;
        let template = TemplateRecord {
            id: new_id("tpl"),
            tenant_id: caller.tenant_id.clone(),
            name: name.to_string(),
            created_at: self.now_ms(),
        };
        match self.store.insert_template(&template).await {
            Err(StoreError::Duplicate(_)) => {
                return Err(Error::conflict(
                    "conflict",
                    format!("a template named {name:?} already exists"),
                ))
            }
            r => r?,
        }
        let build = self.queue_build(&template, spec).await?;
        let info = TemplateInfo {
            template,
            builds: vec![build.clone()],
        };
        Ok((info, build))
    }

    /// Queues a new build (the next version) of a custom template, with
    /// `spec` or else the spec of its newest build.
    pub async fn rebuild_template(
        self: &Arc<Core>,
        caller: &Caller,
        id_or_name: &str,
        spec: Option<(BuildSpec, bool)>,
    ) -> Result<BuildRecord> {
        let info = self
            .find_template(caller, id_or_name)
            .await?
            .ok_or_else(|| Error::not_found("template"))?;
        let spec = match spec {
            Some((s, shape_given)) => self.check_from(caller, s, shape_given).await?,
            None => info
                .builds
                .first()
                .map(|b| b.spec.clone())
                .ok_or_else(|| Error::field("build_spec", "the template has no build yet"))?,
        };
        self.queue_build(&info.template, spec).await
    }

    /// A build of the caller's.
    pub async fn get_build(&self, caller: &Caller, id: &str) -> Result<BuildRecord> {
        self.store
            .get_build(id)
            .await?
            .filter(|b| b.tenant_id == caller.tenant_id)
            .ok_or_else(|| Error::not_found("template build"))
    }

    /// The log of `b`: live while it runs, from its file afterwards (its
    /// tail, within `[builds]`' limits).
    pub fn build_log(&self, b: &BuildRecord) -> Arc<BuildLog> {
        if let Some(l) = self.builds.logs.lock().get(&b.id) {
            return l.clone();
        }
        Arc::new(BuildLog::load(
            &self.build_log_path(b),
            LogLimits::from(&self.config.builds),
        ))
    }

    fn build_log_path(&self, b: &BuildRecord) -> PathBuf {
        self.data_dir()
            .join("templates")
            .join(&b.template_id)
            .join("builds")
            .join(format!("{}.log", b.id))
    }

    /// Any template id to what its sandboxes boot from: a built-in one, or
    /// a custom template's newest ready version.
    ///
    /// A built-in template's version also names what its guests depend on
    /// on this host ([`hearth_vmm::Vmm::guest_clock_tag`]: under TCG, the
    /// TSC rate they are told): its snapshots are written on demand, so
    /// one written for another rate (another host sharing the image
    /// directory, or one from before the rate was measured) is left alone
    /// and a new one written, not cloned into guests whose clocks would
    /// run fast or slow.
    pub async fn resolve_template(&self, id: &str) -> Result<ResolvedTemplate, TemplateError> {
        if !id.starts_with("tpl_") {
            let mut tpl = self.templates.resolve(id).await?;
            if let Some(tag) = self.vmm.guest_clock_tag() {
                tpl.version = format!("{}-{tag}", tpl.version);
            }
            return Ok(tpl);
        }
        let unknown = || TemplateError::Unknown(id.to_string());
        let builds = self
            .store
            .list_builds(id)
            .await
            .map_err(|e| TemplateError::Build {
                id: id.to_string(),
                source: e.into(),
            })?;
        let b = builds
            .iter()
            .find(|b| b.state == BuildState::Ready)
            .ok_or_else(unknown)?;
        let base = Box::pin(self.resolve_template(&b.spec.from)).await?;
        Ok(ResolvedTemplate {
            id: id.to_string(),
            version: format!("v{}", b.version),
            custom: true,
            ..base
        })
    }

    /// Resolves `spec.from`: a built-in template's canonical id, or one of
    /// the caller's custom templates, pinned to its newest ready version,
    /// whose size and env the build inherits (a size given must match).
    pub async fn check_from(
        &self,
        caller: &Caller,
        mut spec: BuildSpec,
        shape_given: bool,
    ) -> Result<BuildSpec> {
        if let Some(c) = self.templates.canonical(&spec.from) {
            if c == "minimal" && !spec.packages.is_empty() {
                return Err(Error::field(
                    "build_spec.packages",
                    "packages need a Debian base (from: \"debian\"); minimal has no apt",
                ));
            }
            spec.from = c;
            spec.from_version = None;
            return Ok(spec);
        }
        let info = self
            .find_template(caller, &spec.from)
            .await?
            .ok_or_else(|| {
                Error::field(
                    "build_spec.from",
                    format!(
                        "{:?} is neither minimal, debian nor one of your templates",
                        spec.from
                    ),
                )
            })?;
        let parent = info.latest_ready().ok_or_else(|| {
            Error::field(
                "build_spec.from",
                format!("template {:?} has no ready version yet", info.template.name),
            )
        })?;
        let want = (
            parent.spec.cpu_count,
            parent.spec.memory_mb,
            parent.spec.disk_size_mb,
        );
        if shape_given && (spec.cpu_count, spec.memory_mb, spec.disk_size_mb) != want {
            return Err(Error::field(
                "build_spec.cpu_count",
                format!(
                    "template {:?} is built for {} vCPU, {} MiB memory and {} MiB disk; \
                     a build on it has that size",
                    info.template.name, want.0, want.1, want.2
                ),
            ));
        }
        if !spec.packages.is_empty() && self.root_base(parent).await? == "minimal" {
            return Err(Error::field(
                "build_spec.packages",
                "packages need a Debian base; this template is built on minimal",
            ));
        }
        (spec.cpu_count, spec.memory_mb, spec.disk_size_mb) = want;
        let mut env = parent.spec.env.clone();
        env.extend(std::mem::take(&mut spec.env));
        spec.env = env;
        spec.from_version = Some(parent.version);
        spec.from = info.template.id.clone();
        Ok(spec)
    }

    /// The built-in template at the bottom of `b`'s chain of bases.
    async fn root_base(&self, b: &BuildRecord) -> Result<String> {
        let mut spec = b.spec.clone();
        // Each base is an older version, so the chain ends; the bound only
        // guards against a corrupt store.
        for _ in 0..64 {
            if !spec.from.starts_with("tpl_") {
                return Ok(spec.from);
            }
            let builds = self.store.list_builds(&spec.from).await?;
            let Some(next) = builds
                .into_iter()
                .find(|x| Some(x.version) == spec.from_version)
            else {
                break;
            };
            spec = next.spec;
        }
        Err(Error::internal(anyhow::anyhow!(
            "template chain of {} does not end in a built-in template",
            b.template_id
        )))
    }
}
