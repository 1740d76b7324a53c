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

mod health;
mod manage;
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
    /// Switch the URL to the new version once healthy (default).
    pub promote: bool,
    /// How long the new instance has to pass its health check.
    pub health_deadline: Duration,
}

/// What a publish did.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub deployment: DeploymentRecord,
    pub version: DeploymentVersionRecord,
    pub promoted: bool,
}

/// Why an instance is being started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rollout {
    /// A new version (or an older one again): it fails for good if it
    /// never gets healthy; `promote: false` only checks it.
    Publish { promote: bool },
    /// A new instance of the active version in place of a dead or
    /// unhealthy one: a failure leaves the version as it is.
    Replace,
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
        state: Option<&str>,
    ) -> Result<Vec<DeploymentRecord>> {
        Ok(self
            .store
            .list_deployments(&caller.tenant_id, state)
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
        let mut dep = match (&p.deployment_id, &p.name) {
            (Some(id), _) => self.get_deployment(caller, id).await?,
            (None, Some(name)) => self.new_deployment(caller, name).await?,
            (None, None) => {
                return Err(Error::validation(vec![crate::error::FieldError::new(
                    "name",
                    "name a new deployment, or give deployment_id",
                )]))
            }
        };
        let _one_at_a_time = self.deploy_locks.lock(&dep.id).await;
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
                error: None,
                promoted_at: None,
                created_at: self.now_ms(),
            })
            .await?;
        if dep.active_version_id.is_none() {
            dep.state = "building".into();
            dep.updated_at = self.now_ms();
            self.store.put_deployment(&dep).await?;
        }
        let mode = Rollout::Publish { promote: p.promote };
        let (deployment, version, promoted) = self
            .roll_out(caller, dep, version, mode, p.health_deadline)
            .await?;
        Ok(Deployed {
            deployment,
            version,
            promoted,
        })
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
                if let Err(e) = self
                    .delete_snapshot(caller, &v.source_sandbox_id, snap)
                    .await
                {
                    tracing::warn!(snapshot_id = %snap, error = %e, "deployment snapshot not deleted");
                }
            }
        }
        self.store.delete_deployment(id).await?;
        Ok(dep)
    }

    /// Where the proxy sends a request for `<slug>.apps.<domain>`: the
    /// deployment and its serving instance and port.
    pub async fn app_route(&self, slug: &str) -> Result<Option<(DeploymentRecord, String, u16)>> {
        let Some(dep) = self
            .store
            .deployment_by_slug(&slug.to_ascii_lowercase())
            .await?
        else {
            return Ok(None);
        };
        let (Some(inst), Some(vid)) = (&dep.active_instance_id, &dep.active_version_id) else {
            return Ok(None);
        };
        let port = self
            .store
            .list_versions(&dep.id)
            .await?
            .into_iter()
            .find(|v| &v.id == vid)
            .map(|v| v.runtime_port);
        Ok(port.map(|p| (dep.clone(), inst.clone(), p)))
    }

    /// Version `vid` of deployment `id`.
    pub(crate) async fn version_of(
        &self,
        id: &str,
        vid: &str,
    ) -> Result<Option<DeploymentVersionRecord>> {
        Ok(self
            .store
            .list_versions(id)
            .await?
            .into_iter()
            .find(|v| v.id == vid))
    }

    async fn new_deployment(&self, caller: &Caller, name: &str) -> Result<DeploymentRecord> {
        let now = self.now_ms();
        let d = DeploymentRecord {
            id: new_id("dep"),
            tenant_id: caller.tenant_id.clone(),
            name: name.to_string(),
            slug: new_slug(),
            state: "pending".into(),
            active_version_id: None,
            active_instance_id: None,
            metadata: serde_json::Map::new(),
            created_at: now,
            updated_at: now,
        };
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

    /// Starts an instance of `version`, waits for its health check, and
    /// (with `promote`) switches the deployment to it and stops the old
    /// instance after [`DRAIN_GRACE`]. A version that never becomes
    /// healthy is `failed`; the deployment keeps what it served.
    async fn roll_out(
        self: &Arc<Core>,
        caller: &Caller,
        mut dep: DeploymentRecord,
        mut version: DeploymentVersionRecord,
        mode: Rollout,
        deadline: Duration,
    ) -> Result<(DeploymentRecord, DeploymentVersionRecord, bool)> {
        let started = self.start_instance(caller, &dep, &version).await;
        let healthy = match &started {
            Ok(inst) => {
                self.wait_healthy(caller, &inst.id, &version, deadline)
                    .await
            }
            Err(e) => Err(format!("the instance did not start: {}", e.message)),
        };
        if let Err(why) = healthy {
            if let Ok(inst) = &started {
                let _ = self.destroy_sandbox(caller, &inst.id).await;
            }
            if mode == Rollout::Replace {
                tracing::warn!(deployment_id = %dep.id, %why, "replacement instance not healthy");
                return Ok((dep, version, false));
            }
            version.state = "failed".into();
            version.error = Some(why.clone());
            self.store.update_version(&version).await?;
            if dep.active_version_id.is_none() {
                dep.state = "failed".into();
                dep.updated_at = self.now_ms();
                self.store.put_deployment(&dep).await?;
            }
            self.events
                .emit_logged(
                    &dep.tenant_id,
                    None,
                    crate::events::EventKind::DeploymentFailed,
                    json!({ "deployment_id": dep.id, "version_id": version.id, "error": why }),
                )
                .await;
            return Ok((dep, version, false));
        }
        let inst = started?;
        if mode == (Rollout::Publish { promote: false }) {
            version.state = "ready".into();
            self.store.update_version(&version).await?;
            let _ = self.destroy_sandbox(caller, &inst.id).await;
            return Ok((dep, version, false));
        }
        let old_instance = dep.active_instance_id.replace(inst.id.clone());
        let old_version = dep.active_version_id.replace(version.id.clone());
        dep.state = "running".into();
        dep.updated_at = self.now_ms();
        self.store.put_deployment(&dep).await?;
        version.state = "active".into();
        version.promoted_at = Some(self.now_ms());
        self.store.update_version(&version).await?;
        if let Some(old) = old_version.filter(|o| *o != version.id) {
            if let Some(mut v) = self
                .store
                .list_versions(&dep.id)
                .await?
                .into_iter()
                .find(|v| v.id == old)
            {
                v.state = "retired".into();
                self.store.update_version(&v).await?;
            }
        }
        self.events
            .emit_logged(
                &dep.tenant_id,
                None,
                crate::events::EventKind::DeploymentPromoted,
                json!({ "deployment_id": dep.id, "version_id": version.id, "instance_id": inst.id }),
            )
            .await;
        if let Some(old) = old_instance.filter(|o| *o != inst.id) {
            // New requests go to the new instance from now on; those in
            // flight on the old one get a grace before it stops.
            let (core, caller) = (self.clone(), caller.clone());
            tokio::spawn(async move {
                tokio::time::sleep(DRAIN_GRACE).await;
                if let Err(e) = core.destroy_sandbox(&caller, &old).await {
                    tracing::warn!(instance = %old, error = %e, "old deployment instance not stopped");
                }
            });
        }
        Ok((dep, version, true))
    }

    /// A new runtime instance of `version`: its source's shape, restored
    /// from the version's snapshot, always on, owned by the deployment;
    /// the start command runs in it.
    async fn start_instance(
        self: &Arc<Core>,
        caller: &Caller,
        dep: &DeploymentRecord,
        version: &DeploymentVersionRecord,
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
        rec.always_on = true;
        rec.persistent = false;
        rec.idle_timeout_sec = 0;
        rec.deployment_id = Some(dep.id.clone());
        rec.tags = Vec::new();
        rec.metadata = serde_json::Map::new();
        rec.metadata.insert("deployment_id".into(), json!(dep.id));
        rec.metadata.insert("version_id".into(), json!(version.id));
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
        let guest = self.guest(caller, &inst.id, true).await?;
        guest
            .process_start(&hearth_agent_protocol::StartProcessRequest {
                command: version.runtime_command.clone(),
                name: Some(manage::PROCESS_NAME.into()),
                cwd: None,
                env: Default::default(),
                user: None,
            })
            .await?;
        Ok(inst)
    }
}
