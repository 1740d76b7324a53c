//! Deployments: a sandbox published as a long-lived service. Publishing
//! takes a snapshot of the source sandbox (a version, immutable: the
//! source can change or go), starts a runtime instance from it (a sandbox
//! the deployment owns, always on, not in the tenant's listing), runs the
//! start command, and waits for its health check (`GET
//! health_check_path` answered 2xx/3xx) before the deployment's URL
//! (`<slug>.apps.<domain>`, served by the preview proxy) switches to it.
//! The old instance then stops after a grace for requests in flight. A
//! version that never becomes healthy is `failed` with its reason, and the
//! URL stays on the old one. Rollback and promotion of an older version
//! go through the same start-check-switch.
//!
//! A deployment runs `replicas` instances of its active version; the proxy
//! spreads requests across those that are healthy ([`routing`]). A
//! `build_command` runs once at publish in a clone of the source
//! ([`build`]); verified custom domains serve it too ([`domains`]).

mod build;
pub mod domains;
mod health;
mod manage;
pub mod records;
pub mod routing;
pub(crate) mod supervise;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::error::{Error, Kind, Result};
use crate::ids::{new_id, new_slug};
use crate::keys::Caller;
use crate::model::{
    DeploymentFilter, DeploymentRecord, DeploymentVersionRecord, Page, SandboxFilter,
    SandboxRecord, SandboxState,
};
use crate::store::StoreError;
use crate::Core;

/// How long a new instance has to pass its health check, by default and
/// at most.
pub const HEALTH_DEADLINE: Duration = Duration::from_secs(90);
pub const MAX_HEALTH_DEADLINE: Duration = Duration::from_secs(600);
/// How long requests in flight on a replaced instance get before it stops.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// The most instances one deployment runs (a tenant's `replicas` quota
/// may be lower).
pub const MAX_REPLICAS: u32 = 20;
/// The tail of a build's output kept with its version.
pub const MAX_BUILD_LOG: usize = 64 * 1024;

/// What a publish asks for (fields checked by the API layer).
#[derive(Debug, Clone)]
pub struct DeployParams {
    /// A new deployment of this name...
    pub name: Option<String>,
    /// ...or a new version of this one.
    pub deployment_id: Option<String>,
    pub port: u16,
    pub run_command: String,
    pub health_check_path: String,
    /// Run once in a clone of the source before the snapshot is taken.
    pub build_command: Option<String>,
    /// The directory the start command runs in.
    pub output_path: Option<String>,
    /// Instances to run (a new deployment: default 1; a new version: the
    /// deployment's count unless given).
    pub replicas: Option<u32>,
    /// A new deployment's external ids (default: the source sandbox's).
    pub external: Externals,
    /// A new deployment's slug (`<slug>.apps.<domain>`; default random).
    pub slug: Option<String>,
    /// A custom domain to add (pending until verified), unless it has it.
    pub custom_domain: Option<String>,
    /// The instances' shape asked for: it must be the source's.
    pub resources: Option<Shape>,
    /// Switch the URL to the new version once healthy (default).
    pub promote: bool,
    /// Answer once the version serves or failed (default); else at once,
    /// with the build and roll-out going on (the version `building`).
    pub wait: bool,
    /// How long the new instance has to pass its health check.
    pub health_deadline: Duration,
}

/// A sandbox's shape, as a publish may name it (each part optional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    pub cpu_count: Option<u32>,
    pub memory_mb: Option<u32>,
    pub disk_size_mb: Option<u32>,
}

impl Shape {
    /// Why `source` cannot serve this shape: instances restore the
    /// version's memory snapshot, which fixes its vCPUs, memory and disk.
    fn refused_by(&self, source: &SandboxRecord) -> Option<Error> {
        let parts = [
            ("cpu_count", self.cpu_count, source.cpu_count),
            ("memory_mb", self.memory_mb, source.memory_mb),
            ("disk_size_mb", self.disk_size_mb, source.disk_size_mb),
        ];
        let bad: Vec<_> = parts
            .iter()
            .filter(|(_, want, have)| want.is_some_and(|w| w != *have))
            .map(|(name, _, have)| {
                crate::error::FieldError::new(
                    format!("resources.{name}"),
                    format!(
                        "instances restore the sandbox's memory snapshot and take its shape ({name} {have}); \
                         publish a sandbox created with the shape you want"
                    ),
                )
            })
            .collect();
        (!bad.is_empty()).then(|| Error::validation(bad))
    }
}

/// The caller's own ids a deployment carries (filters of its listing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Externals {
    pub workspace_id: Option<String>,
    pub user_id: Option<String>,
    pub project_id: Option<String>,
}

/// What a publish did.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub deployment: DeploymentRecord,
    pub version: DeploymentVersionRecord,
    pub promoted: bool,
    /// The custom domain the publish asked for.
    pub domain: Option<crate::model::DomainRecord>,
}

/// Why instances are being started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rollout {
    /// A new version (or an older one again), `replicas` instances in
    /// place of all serving: it fails for good if they never get healthy;
    /// `promote: false` only checks one.
    Publish { promote: bool },
    /// Fresh instances of the active version in place of all serving
    /// (a redeploy): a failure leaves everything as it was.
    Restart,
    /// One new instance of the active version in place of `old` (dead or
    /// unhealthy): a failure leaves the version as it is.
    Replace { old: String },
    /// `count` more instances of the active version (scaling up).
    Grow { count: u32 },
}

fn deployment_not_found(id: &str) -> Error {
    Error::new(
        Kind::NotFound,
        "deployment_not_found",
        format!("deployment {id} not found"),
    )
}

impl Core {
    /// The URL a deployment is served at.
    pub fn app_url(&self, slug: &str) -> String {
        self.proxied_url("apps", slug)
    }

    /// One of the caller's deployments.
    pub async fn get_deployment(&self, caller: &Caller, id: &str) -> Result<DeploymentRecord> {
        if caller.scope.is_some() {
            return Err(deployment_not_found(id));
        }
        self.store
            .get_deployment(id)
            .await?
            .filter(|d| d.tenant_id == caller.tenant_id)
            .ok_or_else(|| deployment_not_found(id))
    }

    pub async fn list_deployments(
        &self,
        caller: &Caller,
        filter: &crate::model::DeploymentListFilter,
    ) -> Result<Vec<DeploymentRecord>> {
        if caller.scope.is_some() {
            return Ok(Vec::new());
        }
        Ok(self
            .store
            .list_deployments(&caller.tenant_id, filter)
            .await?)
    }

    pub async fn list_versions(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Vec<DeploymentVersionRecord>> {
        self.get_deployment(caller, id).await?;
        Ok(self.store.list_versions(id).await?)
    }

    /// The deployment's runtime instances (its sandboxes not destroyed).
    pub async fn deployment_instances(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Vec<SandboxRecord>> {
        self.get_deployment(caller, id).await?;
        let filter = SandboxFilter {
            deployment: Some(DeploymentFilter::Of(id.to_string())),
            ..Default::default()
        };
        let page = Page {
            page: 1,
            page_size: 100,
        };
        let (list, _) = self
            .store
            .list_sandboxes(&caller.tenant_id, &filter, page)
            .await?;
        Ok(list
            .into_iter()
            .map(|r| self.handle(&r.id).map(|h| h.record()).unwrap_or(r))
            .filter(|r| r.state != SandboxState::Destroyed)
            .collect())
    }

    /// Publishes sandbox `source_id`: a new deployment (`name`) or a new
    /// version of one (`deployment_id`), promoted once healthy.
    pub async fn deploy(
        self: &Arc<Core>,
        caller: &Caller,
        source_id: &str,
        p: DeployParams,
    ) -> Result<Deployed> {
        let source = self.get_sandbox(caller, source_id).await?;
        if !source.state.can_exec() {
            return Err(Error::not_running(source_id, source.state));
        }
        if source.deployment_id.is_some() {
            return Err(Error::invalid_state(
                source_id,
                source.state,
                "deploy a runtime instance of",
            ));
        }
        if let Some(e) = p.resources.and_then(|r| r.refused_by(&source)) {
            return Err(e);
        }
        let mut dep = match (&p.deployment_id, &p.name) {
            (Some(id), _) => self.get_deployment(caller, id).await?,
            (None, Some(name)) => self.new_deployment(caller, name, &source, &p).await?,
            (None, None) => {
                return Err(Error::validation(vec![crate::error::FieldError::new(
                    "name",
                    "name a new deployment, or give deployment_id",
                )]))
            }
        };
        let domain = match &p.custom_domain {
            Some(name) => Some(self.ensure_domain(caller, &dep.id, name).await?),
            None => None,
        };
        let _one_at_a_time = self.deploy_locks.lock(&dep.id).await;
        // Re-read under the lock: a roll-out that held it moved it on.
        dep = self.get_deployment(caller, &dep.id).await?;
        if let Some(n) = p.replicas.filter(|n| *n != dep.replicas) {
            self.check_replicas(&dep.tenant_id, n).await?;
            dep.replicas = n;
        }
        let snap = self
            .create_snapshot(caller, source_id, Some(format!("deployment {}", dep.id)))
            .await?;
        let version = self
            .store
            .insert_version(&DeploymentVersionRecord {
                id: new_id("dpv"),
                deployment_id: dep.id.clone(),
                tenant_id: dep.tenant_id.clone(),
                version_number: 0,
                state: "building".into(),
                source_sandbox_id: source_id.to_string(),
                snapshot_id: Some(snap.id.clone()),
                runtime_command: p.run_command,
                runtime_port: p.port,
                health_check_path: p.health_check_path,
                build_command: p.build_command,
                build_log: None,
                output_path: p.output_path,
                error: None,
                promoted_at: None,
                created_at: self.now_ms(),
            })
            .await?;
        if dep.active_version_id.is_none() {
            dep.state = "building".into();
        }
        dep.updated_at = self.now_ms();
        self.save_deployment(&dep).await?;
        let (promote, deadline) = (p.promote, p.health_deadline);
        if !p.wait {
            // The snapshot is taken: the source may change from here on.
            // The build and roll-out go on, holding the deployment's lock.
            let (core, caller) = (self.clone(), caller.clone());
            let answer = Deployed {
                deployment: dep.clone(),
                version: version.clone(),
                promoted: false,
                domain,
            };
            tokio::spawn(async move {
                let _held = _one_at_a_time;
                if let Err(e) = core
                    .build_and_roll_out(&caller, dep, version, promote, deadline)
                    .await
                {
                    tracing::warn!(error = %e, "a publish in the background failed");
                }
            });
            return Ok(answer);
        }
        let (deployment, version, promoted) = self
            .build_and_roll_out(caller, dep, version, promote, deadline)
            .await?;
        Ok(Deployed {
            deployment,
            version,
            promoted,
            domain,
        })
    }

    /// A new version's build (when it has one), then its roll-out.
    async fn build_and_roll_out(
        self: &Arc<Core>,
        caller: &Caller,
        dep: DeploymentRecord,
        mut version: DeploymentVersionRecord,
        promote: bool,
        deadline: Duration,
    ) -> Result<(DeploymentRecord, DeploymentVersionRecord, bool)> {
        if version.build_command.is_some() {
            if let Err(why) = self.build_version(caller, &dep, &mut version).await {
                let dep = self.fail_version(dep, version.clone(), why).await?;
                let version = self
                    .version_of(&dep.id, &version.id)
                    .await?
                    .unwrap_or(version);
                return Ok((dep, version, false));
            }
        }
        let mode = Rollout::Publish { promote };
        self.roll_out(caller, dep, version, mode, deadline).await
    }

    /// Switches the deployment to `version_id` (an older version: a
    /// rollback), or to the one before the active one when `None`.
    pub async fn rollback_deployment(
        self: &Arc<Core>,
        caller: &Caller,
        id: &str,
        version_id: Option<&str>,
    ) -> Result<Deployed> {
        let dep = self.get_deployment(caller, id).await?;
        let _one_at_a_time = self.deploy_locks.lock(&dep.id).await;
        let dep = self.get_deployment(caller, id).await?;
        let versions = self.store.list_versions(id).await?;
        let target = match version_id {
            Some(v) => versions.iter().find(|x| x.id == v),
            None => {
                let active = dep.active_version_id.as_deref();
                let active_n = versions
                    .iter()
                    .find(|x| Some(x.id.as_str()) == active)
                    .map_or(i64::MAX, |x| x.version_number);
                versions
                    .iter()
                    .filter(|x| x.version_number < active_n && x.promoted_at.is_some())
                    .max_by_key(|x| x.version_number)
            }
        };
        let Some(target) = target.cloned() else {
            return Err(Error::new(
                Kind::NotFound,
                "version_not_found",
                match version_id {
                    Some(v) => format!("version {v} not found"),
                    None => "no earlier promoted version to roll back to".into(),
                },
            ));
        };
        if target.state == "failed" {
            return Err(Error::conflict(
                "invalid_state",
                format!("version {} failed and cannot be promoted", target.id),
            ));
        }
        let mode = Rollout::Publish { promote: true };
        let (deployment, version, promoted) = self
            .roll_out(caller, dep, target, mode, HEALTH_DEADLINE)
            .await?;
        Ok(Deployed {
            deployment,
            version,
            promoted,
            domain: None,
        })
    }

    /// Destroys the deployment's instances and forgets it and its versions
    /// (their snapshots go too).
    pub async fn delete_deployment(&self, caller: &Caller, id: &str) -> Result<DeploymentRecord> {
        let dep = self.get_deployment(caller, id).await?;
        let _one_at_a_time = self.deploy_locks.lock(&dep.id).await;
        for inst in self.deployment_instances(caller, id).await? {
            self.destroy_sandbox(caller, &inst.id).await?;
        }
        for v in self.store.list_versions(id).await? {
            if let Some(snap) = &v.snapshot_id {
                self.drop_snapshot(caller, snap).await;
            }
        }
        self.store.delete_deployment(id).await?;
        self.routes_changed().await;
        Ok(dep)
    }

    /// Version `vid` of deployment `id`.
    pub async fn version_of(&self, id: &str, vid: &str) -> Result<Option<DeploymentVersionRecord>> {
        Ok(self
            .store
            .list_versions(id)
            .await?
            .into_iter()
            .find(|v| v.id == vid))
    }

    async fn new_deployment(
        &self,
        caller: &Caller,
        name: &str,
        source: &SandboxRecord,
        p: &DeployParams,
    ) -> Result<DeploymentRecord> {
        let replicas = p.replicas.unwrap_or(1);
        self.check_replicas(&caller.tenant_id, replicas).await?;
        let now = self.now_ms();
        let d = DeploymentRecord {
            id: new_id("dep"),
            tenant_id: caller.tenant_id.clone(),
            name: name.to_string(),
            slug: p.slug.clone().unwrap_or_else(new_slug),
            state: "pending".into(),
            active_version_id: None,
            instances: Vec::new(),
            replicas,
            env: Default::default(),
            metadata: serde_json::Map::new(),
            external_workspace_id: p
                .external
                .workspace_id
                .clone()
                .or_else(|| source.external_workspace_id.clone()),
            external_user_id: p
                .external
                .user_id
                .clone()
                .or_else(|| source.external_user_id.clone()),
            external_project_id: p
                .external
                .project_id
                .clone()
                .or_else(|| source.external_project_id.clone()),
            created_at: now,
            updated_at: now,
        };
        if let Some(slug) = &p.slug {
            if self.store.deployment_by_slug(slug).await?.is_some() {
                return Err(Error::conflict(
                    "conflict",
                    format!("the domain {slug} is taken; choose another"),
                ));
            }
        }
        match self.store.put_deployment(&d).await {
            Err(StoreError::Duplicate(_)) => Err(Error::conflict(
                "conflict",
                format!(
                    "a deployment named {name} exists; pass its deployment_id for a new version"
                ),
            )),
            r => Ok(r.map(|()| d)?),
        }
    }

    /// Stores a deployment and drops the proxy's routes (they are read
    /// again on the next request).
    pub(crate) async fn save_deployment(&self, d: &DeploymentRecord) -> Result<()> {
        self.store.put_deployment(d).await?;
        self.routes_changed().await;
        Ok(())
    }

    /// Whether `tenant` may run `n` instances of one deployment.
    pub(crate) async fn check_replicas(&self, tenant: &str, n: u32) -> Result<()> {
        let limit = self.quota_limits(tenant).await?.replicas;
        if n == 0 || n > MAX_REPLICAS {
            return Err(Error::validation(vec![crate::error::FieldError::new(
                "replicas",
                format!("must be between 1 and {MAX_REPLICAS}"),
            )]));
        }
        if u64::from(n) > limit {
            return Err(crate::quotas::exceeded("replicas", 0, limit, u64::from(n)));
        }
        Ok(())
    }

    /// Deletes a snapshot a version held, wherever it was taken.
    async fn drop_snapshot(&self, caller: &Caller, snap: &str) {
        let owner = match self.store.get_snapshot(snap).await {
            Ok(Some(s)) => s.sandbox_id,
            _ => return,
        };
        if let Err(e) = self.delete_snapshot(caller, &owner, snap).await {
            tracing::warn!(snapshot_id = %snap, error = %e, "deployment snapshot not deleted");
        }
    }

    /// Marks `version` failed with `why` (the deployment too when it never
    /// served), and records the event; the deployment.
    async fn fail_version(
        &self,
        mut dep: DeploymentRecord,
        mut version: DeploymentVersionRecord,
        why: String,
    ) -> Result<DeploymentRecord> {
        version.state = "failed".into();
        version.error = Some(why.clone());
        self.store.update_version(&version).await?;
        if dep.active_version_id.is_none() {
            dep.state = "failed".into();
            dep.updated_at = self.now_ms();
            self.save_deployment(&dep).await?;
        }
        self.events
            .emit_logged(
                &dep.tenant_id,
                None,
                crate::events::EventKind::DeploymentFailed,
                json!({ "deployment_id": dep.id, "version_id": version.id, "error": why }),
            )
            .await;
        Ok(dep)
    }

    /// Starts instances of `version` (as `mode` says how many), waits for
    /// their health checks, then puts them in the deployment's serving set
    /// and stops those they replace after [`DRAIN_GRACE`]. A version that
    /// never becomes healthy on a publish is `failed`; the deployment keeps
    /// what it served. The answer's flag: whether the set changed.
    async fn roll_out(
        self: &Arc<Core>,
        caller: &Caller,
        mut dep: DeploymentRecord,
        mut version: DeploymentVersionRecord,
        mode: Rollout,
        deadline: Duration,
    ) -> Result<(DeploymentRecord, DeploymentVersionRecord, bool)> {
        let count = match &mode {
            Rollout::Publish { promote: false } | Rollout::Replace { .. } => 1,
            Rollout::Grow { count } => *count,
            Rollout::Publish { promote: true } | Rollout::Restart => dep.replicas.max(1),
        };
        let started = futures_util::future::join_all(
            (0..count).map(|_| self.start_healthy(caller, &dep, &version, deadline)),
        )
        .await;
        let (up, failed): (Vec<_>, Vec<_>) = started.into_iter().partition(|r| r.is_ok());
        let up: Vec<SandboxRecord> = up.into_iter().filter_map(|r| r.ok()).collect();
        if let Some(Err(why)) = failed.into_iter().next() {
            for inst in &up {
                let _ = self.destroy_sandbox(caller, &inst.id).await;
            }
            if matches!(mode, Rollout::Publish { .. }) {
                let dep = self.fail_version(dep, version.clone(), why.clone()).await?;
                version.state = "failed".into();
                version.error = Some(why);
                return Ok((dep, version, false));
            }
            tracing::warn!(deployment_id = %dep.id, %why, "new instances not healthy");
            return Ok((dep, version, false));
        }
        let new_ids: Vec<String> = up.iter().map(|s| s.id.clone()).collect();
        let retired = match &mode {
            Rollout::Publish { promote: false } => {
                version.state = "ready".into();
                self.store.update_version(&version).await?;
                for id in &new_ids {
                    let _ = self.destroy_sandbox(caller, id).await;
                }
                return Ok((dep, version, false));
            }
            Rollout::Publish { promote: true } | Rollout::Restart => {
                std::mem::replace(&mut dep.instances, new_ids.clone())
            }
            Rollout::Replace { old } => {
                match dep.instances.iter().position(|i| i == old) {
                    Some(at) => dep.instances[at] = new_ids[0].clone(),
                    None => dep.instances.push(new_ids[0].clone()),
                }
                vec![old.clone()]
            }
            Rollout::Grow { .. } => {
                dep.instances.extend(new_ids.iter().cloned());
                Vec::new()
            }
        };
        let old_version = dep.active_version_id.replace(version.id.clone());
        dep.state = "running".into();
        dep.updated_at = self.now_ms();
        self.save_deployment(&dep).await?;
        if mode == (Rollout::Publish { promote: true }) {
            version.state = "active".into();
            version.promoted_at = Some(self.now_ms());
            self.store.update_version(&version).await?;
            if let Some(old) = old_version.filter(|o| *o != version.id) {
                if let Some(mut v) = self.version_of(&dep.id, &old).await? {
                    v.state = "retired".into();
                    self.store.update_version(&v).await?;
                }
            }
            self.events
                .emit_logged(
                    &dep.tenant_id,
                    None,
                    crate::events::EventKind::DeploymentPromoted,
                    json!({ "deployment_id": dep.id, "version_id": version.id, "instance_ids": new_ids }),
                )
                .await;
        }
        self.drain(
            caller,
            retired
                .into_iter()
                .filter(|o| !new_ids.contains(o))
                .collect(),
        );
        Ok((dep, version, true))
    }

    /// Stops `instances` after [`DRAIN_GRACE`]: new requests already go
    /// elsewhere; those in flight get the grace to finish.
    pub(crate) fn drain(self: &Arc<Core>, caller: &Caller, instances: Vec<String>) {
        if instances.is_empty() {
            return;
        }
        let (core, caller) = (self.clone(), caller.clone());
        tokio::spawn(async move {
            tokio::time::sleep(DRAIN_GRACE).await;
            for old in instances {
                if let Err(e) = core.destroy_sandbox(&caller, &old).await {
                    tracing::warn!(instance = %old, error = %e, "old deployment instance not stopped");
                }
            }
        });
    }

    /// One instance of `version`, started and healthy within `deadline`;
    /// why not otherwise (the instance is gone then).
    async fn start_healthy(
        self: &Arc<Core>,
        caller: &Caller,
        dep: &DeploymentRecord,
        version: &DeploymentVersionRecord,
        deadline: Duration,
    ) -> std::result::Result<SandboxRecord, String> {
        let inst = self
            .start_instance(caller, dep, version)
            .await
            .map_err(|e| format!("the instance did not start: {}", e.message))?;
        match self.wait_healthy(caller, &inst.id, version, deadline).await {
            Ok(()) => Ok(inst),
            Err(why) => {
                let _ = self.destroy_sandbox(caller, &inst.id).await;
                Err(why)
            }
        }
    }

    /// A new runtime instance of `version`: its source's shape, restored
    /// from the version's snapshot, always on, owned by the deployment;
    /// the start command runs in it with the deployment's env, in the
    /// version's `output_path`.
    async fn start_instance(
        self: &Arc<Core>,
        caller: &Caller,
        dep: &DeploymentRecord,
        version: &DeploymentVersionRecord,
    ) -> Result<SandboxRecord> {
        let inst = self.boot_from_version(dep, version, "instance").await?;
        let guest = self.guest(caller, &inst.id, true).await?;
        let started = guest
            .process_start(&hearth_agent_protocol::StartProcessRequest {
                command: version.runtime_command.clone(),
                name: Some(manage::PROCESS_NAME.into()),
                cwd: version.output_path.clone(),
                env: dep.env.clone(),
                user: None,
            })
            .await;
        if let Err(e) = started {
            let _ = self.destroy_sandbox(caller, &inst.id).await;
            return Err(e);
        }
        Ok(inst)
    }

    /// A sandbox the deployment owns (not in the tenant's listing),
    /// restored from `version`'s snapshot in its source's shape; `role`
    /// (`instance` or `build`) is in its metadata.
    async fn boot_from_version(
        self: &Arc<Core>,
        dep: &DeploymentRecord,
        version: &DeploymentVersionRecord,
        role: &str,
    ) -> Result<SandboxRecord> {
        let snap = version
            .snapshot_id
            .as_deref()
            .ok_or_else(|| Error::conflict("invalid_state", "the version has no snapshot"))?;
        let mut rec = self
            .store
            .get_sandbox(&version.source_sandbox_id)
            .await?
            .ok_or_else(|| Error::sandbox_not_found(&version.source_sandbox_id))?;
        let now = self.now_ms();
        rec.id = new_id("sbx");
        rec.name = None;
        rec.state = SandboxState::Provisioning;
        rec.always_on = role == "instance";
        if role == "build" {
            // Outlives the build's own limit, whatever the source's was.
            let limit = self
                .config
                .deployments
                .build_timeout_sec
                .saturating_add(300);
            rec.timeout_sec = u32::try_from(limit).unwrap_or(u32::MAX);
        }
        rec.persistent = false;
        rec.idle_timeout_sec = 0;
        rec.deployment_id = Some(dep.id.clone());
        rec.tags = Vec::new();
        rec.metadata = serde_json::Map::new();
        rec.metadata.insert("deployment_id".into(), json!(dep.id));
        rec.metadata.insert("version_id".into(), json!(version.id));
        rec.metadata.insert("role".into(), json!(role));
        rec.boot_ms = None;
        rec.boot_path = None;
        rec.created_at = now;
        rec.started_at = None;
        rec.paused_at = None;
        rec.destroyed_at = None;
        rec.deadline_at = None;
        rec.last_activity_at = now;
        let inst = self.start_new(rec, Some(self.snapshot_dir(snap))).await?;
        if inst.state != SandboxState::Running {
            return Err(Error::not_running(&inst.id, inst.state));
        }
        Ok(inst)
    }
}
