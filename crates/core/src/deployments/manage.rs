//! Managing a deployment after publish: rename and metadata, stop and
//! redeploy, and reading its active instance's start-command output.

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
    /// Renames a deployment and/or replaces its metadata.
    pub async fn patch_deployment(
        &self,
        caller: &Caller,
        id: &str,
        name: Option<String>,
        metadata: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<DeploymentRecord> {
        let _one_at_a_time = self.deploy_locks.lock(id).await;
        let mut d = self.get_deployment(caller, id).await?;
        if let Some(n) = name {
            d.name = n;
        }
        if let Some(m) = metadata {
            d.metadata = m;
        }
        d.updated_at = self.now_ms();
        match self.store.put_deployment(&d).await {
            Err(StoreError::Duplicate(_)) => Err(Error::conflict(
                "conflict",
                format!("a deployment named {} exists", d.name),
            )),
            r => Ok(r.map(|()| d)?),
        }
    }

    /// Stops serving: the instances go, the URL answers 404 until a
    /// redeploy or a new publish; versions are kept.
    pub async fn stop_deployment(&self, caller: &Caller, id: &str) -> Result<DeploymentRecord> {
        let _one_at_a_time = self.deploy_locks.lock(id).await;
        let mut d = self.get_deployment(caller, id).await?;
        for inst in self.deployment_instances(caller, id).await? {
            self.destroy_sandbox(caller, &inst.id).await?;
        }
        d.active_instance_id = None;
        d.state = "stopped".into();
        d.updated_at = self.now_ms();
        self.store.put_deployment(&d).await?;
        Ok(d)
    }

    /// A fresh instance of the active version, healthy before it serves
    /// (after a stop, or to restart the app); the version is kept whatever
    /// happens.
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
        self.roll_out(caller, d, v, Rollout::Replace, HEALTH_DEADLINE)
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
    /// (the active one when `None`), stdout and stderr, masked with the
    /// vault's values.
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
            None => d.active_instance_id.clone().ok_or_else(|| {
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
