//! Managing a deployment after publish: rename, metadata and scale; its
//! environment; stop and redeploy; and reading its instances'
//! start-command output.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Rollout, HEALTH_DEADLINE};
use crate::error::{Error, Kind, Result};
use crate::keys::Caller;
use crate::model::{DeploymentRecord, DeploymentVersionRecord, SandboxRecord};
use crate::store::StoreError;
use crate::Core;

/// The name of the start command's process in an instance.
pub const PROCESS_NAME: &str = "deployment";

impl Core {
    /// Renames a deployment, replaces its metadata, and/or scales it to
    /// `replicas` instances (new ones healthy before they serve; extra
    /// ones drained).
    pub async fn patch_deployment(
        self: &Arc<Core>,
        caller: &Caller,
        id: &str,
        name: Option<String>,
        metadata: Option<serde_json::Map<String, serde_json::Value>>,
        replicas: Option<u32>,
    ) -> Result<DeploymentRecord> {
        let _one_at_a_time = self.deploy_locks.lock(id).await;
        let mut d = self.get_deployment(caller, id).await?;
        if let Some(n) = replicas {
            self.check_replicas(&d.tenant_id, n).await?;
        }
        if let Some(n) = name {
            d.name = n;
        }
        if let Some(m) = metadata {
            d.metadata = m;
        }
        d.updated_at = self.now_ms();
        match self.store.put_deployment(&d).await {
            Err(StoreError::Duplicate(_)) => {
                return Err(Error::conflict(
                    "conflict",
                    format!("a deployment named {} exists", d.name),
                ))
            }
            r => r?,
        }
        match replicas {
            Some(n) if n != d.replicas => self.scale(caller, d, n).await,
            _ => Ok(d),
        }
    }

    /// Runs `n` instances: more are started and healthy before they join;
    /// the newest extra ones leave the rotation and drain. A deployment
    /// that serves nothing only records the count.
    async fn scale(
        self: &Arc<Core>,
        caller: &Caller,
        mut d: DeploymentRecord,
        n: u32,
    ) -> Result<DeploymentRecord> {
        let before = d.replicas;
        d.replicas = n;
        let serving = d.state == "running" && d.active_version_id.is_some();
        let have = u32::try_from(d.instances.len()).unwrap_or(u32::MAX);
        if !serving || have == n {
            self.save_deployment(&d).await?;
            return Ok(d);
        }
        if have > n {
            let extra = d.instances.split_off(n as usize);
            self.save_deployment(&d).await?;
            self.drain(caller, extra);
            return Ok(d);
        }
        let vid = d.active_version_id.clone().unwrap_or_default();
        let v = self
            .version_of(&d.id, &vid)
            .await?
            .ok_or_else(|| Error::conflict("invalid_state", "the active version is gone"))?;
        let grow = Rollout::Grow { count: n - have };
        let (mut d, _, grown) = self.roll_out(caller, d, v, grow, HEALTH_DEADLINE).await?;
        if !grown {
            d.replicas = before;
            self.save_deployment(&d).await?;
            return Err(Error::new(
                Kind::Unavailable,
                "scale_failed",
                format!(
                    "the new instances did not become healthy; {} still serve",
                    d.instances.len()
                ),
            ));
        }
        Ok(d)
    }

    /// The environment the start command gets.
    pub async fn deployment_env(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<BTreeMap<String, String>> {
        Ok(self.get_deployment(caller, id).await?.env)
    }

    /// Replaces the start command's environment; instances started from
    /// now on (a publish, redeploy, scale or replacement) get it.
    pub async fn put_deployment_env(
        &self,
        caller: &Caller,
        id: &str,
        env: BTreeMap<String, String>,
    ) -> Result<DeploymentRecord> {
        let _one_at_a_time = self.deploy_locks.lock(id).await;
        let mut d = self.get_deployment(caller, id).await?;
        d.env = env;
        d.updated_at = self.now_ms();
        self.save_deployment(&d).await?;
        Ok(d)
    }

    /// Stops serving: the instances go, the URL answers 404 until a
    /// redeploy or a new publish; versions are kept.
    pub async fn stop_deployment(&self, caller: &Caller, id: &str) -> Result<DeploymentRecord> {
        let _one_at_a_time = self.deploy_locks.lock(id).await;
        let mut d = self.get_deployment(caller, id).await?;
        for inst in self.deployment_instances(caller, id).await? {
            self.destroy_sandbox(caller, &inst.id).await?;
        }
        d.instances.clear();
        d.state = "stopped".into();
        d.updated_at = self.now_ms();
        self.save_deployment(&d).await?;
        Ok(d)
    }

    /// Fresh instances of the active version, healthy before they serve
    /// (after a stop, to restart the app, or to apply a new env); the
    /// version is kept whatever happens.
    pub async fn redeploy(
        self: &Arc<Core>,
        caller: &Caller,
        id: &str,
    ) -> Result<(DeploymentRecord, DeploymentVersionRecord, bool)> {
        let _one_at_a_time = self.deploy_locks.lock(id).await;
        let d = self.get_deployment(caller, id).await?;
        let vid = d.active_version_id.clone().ok_or_else(|| {
            Error::conflict(
                "invalid_state",
                "the deployment has no version to serve yet",
            )
        })?;
        let v = self
            .version_of(id, &vid)
            .await?
            .ok_or_else(|| Error::conflict("invalid_state", "the active version is gone"))?;
        self.roll_out(caller, d, v, Rollout::Restart, HEALTH_DEADLINE)
            .await
    }

    /// One version of one of the caller's deployments.
    pub async fn get_version(
        &self,
        caller: &Caller,
        id: &str,
        vid: &str,
    ) -> Result<DeploymentVersionRecord> {
        self.get_deployment(caller, id).await?;
        self.version_of(id, vid).await?.ok_or_else(|| {
            Error::new(
                Kind::NotFound,
                "version_not_found",
                format!("version {vid} not found"),
            )
        })
    }

    /// One runtime instance of one of the caller's deployments.
    pub async fn get_instance(
        &self,
        caller: &Caller,
        id: &str,
        iid: &str,
    ) -> Result<SandboxRecord> {
        self.deployment_instances(caller, id)
            .await?
            .into_iter()
            .find(|s| s.id == iid)
            .ok_or_else(|| {
                Error::new(
                    Kind::NotFound,
                    "instance_not_found",
                    format!("instance {iid} not found"),
                )
            })
    }

    /// The last `lines` lines the start command wrote in instance `iid`
    /// (the first serving one when `None`), stdout and stderr, masked with
    /// the vault's values.
    pub async fn deployment_logs(
        self: &Arc<Core>,
        caller: &Caller,
        id: &str,
        iid: Option<&str>,
        lines: usize,
    ) -> Result<(String, String)> {
        let d = self.get_deployment(caller, id).await?;
        let inst = match iid {
            Some(i) => self.get_instance(caller, id, i).await?.id,
            None => d.instances.first().cloned().ok_or_else(|| {
                Error::conflict("invalid_state", "the deployment has no serving instance")
            })?,
        };
        let guest = self.guest(caller, &inst, false).await?;
        let Some(p) = guest
            .process_list()
            .await?
            .into_iter()
            .find(|p| p.name.as_deref() == Some(PROCESS_NAME))
        else {
            return Ok((String::new(), String::new()));
        };
        let logs = guest.process_logs(p.pid).await?;
        let tail = |b: &[u8]| {
            let text = String::from_utf8_lossy(b);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        };
        Ok((tail(&logs.stdout.0), tail(&logs.stderr.0)))
    }
}
