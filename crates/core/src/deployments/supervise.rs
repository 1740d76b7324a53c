//! Keeping deployments up: every [`TICK`], each serving instance of each
//! running deployment is checked. One whose VM is gone (its VMM died, the
//! host lost it) is replaced at once; one that fails a health check leaves
//! the rotation (others serve) until it passes again, and is replaced
//! after [`STRIKES`] failures in a row. A replacement is a new instance of
//! the same version, started and healthy before it joins; one that fails
//! waits a backoff that doubles up to [`MAX_BACKOFF`]. Each replacement is
//! an event (`deployment.replaced`) and an audit entry with the system as
//! actor. A deployment short of its `replicas` (a restart lost some) gets
//! more the same way.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Rollout, HEALTH_DEADLINE};
use crate::keys::Caller;
use crate::model::{DeploymentRecord, NodeRecord, NodeState, SandboxState};
use crate::Core;

/// How often serving instances are checked.
pub const TICK: Duration = Duration::from_secs(2);
/// Failed health checks in a row that get an instance replaced.
pub const STRIKES: u32 = 3;
/// The longest wait between two replacement attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// One health check during supervision.
const CHECK: Duration = Duration::from_secs(5);
/// How long after a switch a replaced instance that still runs is left to
/// its drain (the roll-out stops it; a server restart in between does not).
const STRAY_AFTER: Duration = Duration::from_secs(10);

/// One deployment's supervision: failed checks in a row per instance,
/// and the backoff of its replacements.
#[derive(Debug, Default)]
struct Watch {
    strikes: HashMap<String, u32>,
    backoff: Duration,
    next_try: Option<tokio::time::Instant>,
}

/// After a restart (before the supervisor starts): publishes the last
/// run left unfinished are failed, and their build sandboxes destroyed.
pub(crate) async fn settle_after_restart(core: &Arc<Core>) -> crate::store::StoreResult<()> {
    let why = "the server restarted during the publish; publish again";
    let n = core
        .store
        .settle_interrupted_publishes(why, core.now_ms())
        .await?;
    if n > 0 {
        tracing::warn!(versions = n, "publishes cut short by a restart failed");
    }
    for rec in core.store.live_sandboxes(core.node_id()).await? {
        let build = rec.deployment_id.is_some()
            && rec.metadata.get("role").and_then(|r| r.as_str()) == Some("build");
        if build {
            let caller = Caller::system(&rec.tenant_id, "supervisor");
            if let Err(e) = core.destroy_sandbox(&caller, &rec.id).await {
                tracing::warn!(sandbox_id = %rec.id, error = %e, "a build sandbox left by a restart was not destroyed");
            }
        }
    }
    Ok(())
}

/// Starts the supervisor; it stops with `stop`.
pub(crate) fn spawn(core: Arc<Core>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut watches: HashMap<String, Watch> = HashMap::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let deps = match core.store.running_deployments().await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %hearth_agent_protocol::error_chain(&e), "list deployments");
                    continue;
                }
            };
            watches.retain(|id, _| deps.iter().any(|d| &d.id == id));
            let nodes = core.store.list_nodes().await.unwrap_or_default();
            for dep in deps {
                if !core.supervises(&dep, &nodes).await {
                    continue;
                }
                let w = watches.entry(dep.id.clone()).or_default();
                core.supervise_one(dep, w).await;
            }
        }
    });
}

impl Core {
    /// Whether this node supervises `dep`: the node that runs its
    /// instances does (it alone can see them), and when none of them runs
    /// on a live node, the longest-running active node (it starts new
    /// ones). Alone, a node supervises everything.
    async fn supervises(&self, dep: &DeploymentRecord, nodes: &[NodeRecord]) -> bool {
        let live = |id: &str| {
            nodes
                .iter()
                .any(|n| n.id == id && matches!(n.state, NodeState::Active | NodeState::Draining))
        };
        // The usual case, with no store read: an instance runs here.
        if dep.instances.iter().any(|i| self.handle(i).is_some()) {
            return true;
        }
        for inst in &dep.instances {
            if let Ok(Some(rec)) = self.store.get_sandbox(inst).await {
                if let Some(node) = rec.node_id.as_deref().filter(|n| live(n)) {
                    return node == self.node_id();
                }
            }
        }
        let leader = nodes
            .iter()
            .filter(|n| n.state == NodeState::Active)
            .min_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        leader.is_none_or(|n| n.id == self.node_id())
    }

    async fn supervise_one(self: &Arc<Core>, dep: DeploymentRecord, w: &mut Watch) {
        if w.next_try.is_some_and(|t| tokio::time::Instant::now() < t) {
            return;
        }
        let Some(vid) = dep.active_version_id.clone() else {
            return;
        };
        let caller = Caller::system(&dep.tenant_id, "supervisor");
        self.reap_strays(&caller, &dep).await;
        let Ok(Some(version)) = self.version_of(&dep.id, &vid).await else {
            return;
        };
        w.strikes.retain(|i, _| dep.instances.contains(i));
        // Every instance is checked at once (a round of many instances
        // takes one check's time, not their sum).
        let checks = dep.instances.iter().map(|inst| {
            let (caller, version) = (&caller, &version);
            async move {
                let alive = self
                    .handle(inst)
                    .is_some_and(|h| h.state() == SandboxState::Running && h.agent().is_some());
                let check = match alive {
                    true => Some(self.wait_healthy(caller, inst, version, CHECK).await),
                    false => None,
                };
                (inst.clone(), check)
            }
        });
        let mut replace = Vec::new();
        for (inst, check) in futures_util::future::join_all(checks).await {
            let strikes = w.strikes.entry(inst.clone()).or_default();
            match check {
                None => replace.push((inst, "its instance is gone".to_string())),
                Some(Ok(())) => {
                    *strikes = 0;
                    self.app_routes.set_healthy(&inst, true);
                }
                Some(Err(e)) => {
                    *strikes += 1;
                    self.app_routes.set_healthy(&inst, false);
                    if *strikes >= STRIKES {
                        replace.push((inst, format!("{STRIKES} failed health checks: {e}")));
                    }
                }
            }
        }
        let short = (dep.replicas as usize).saturating_sub(dep.instances.len());
        let mut failed = false;
        for (inst, why) in replace {
            tracing::warn!(deployment_id = %dep.id, instance = %inst, %why, "replacing a deployment instance");
            match self.replace_instance(&caller, &dep.id, Some(&inst)).await {
                Ok(None) => {}
                Ok(Some(new)) => {
                    w.strikes.remove(&inst);
                    // Gone from the rotation: nothing to remember of it.
                    self.app_routes.set_healthy(&inst, true);
                    self.record_replacement(&caller, &dep, Some(&inst), &new, &why)
                        .await;
                }
                Err(e) => {
                    failed = true;
                    tracing::warn!(deployment_id = %dep.id, error = %e, "replacement failed");
                }
            }
        }
        for _ in 0..short {
            let why = format!(
                "{} of {} instances serve",
                dep.instances.len(),
                dep.replicas
            );
            match self.replace_instance(&caller, &dep.id, None).await {
                Ok(None) => break,
                Ok(Some(new)) => {
                    self.record_replacement(&caller, &dep, None, &new, &why)
                        .await
                }
                Err(e) => {
                    failed = true;
                    tracing::warn!(deployment_id = %dep.id, error = %e, "a missing instance was not started");
                    break;
                }
            }
        }
        if failed {
            w.backoff = (w.backoff * 2).clamp(TICK, MAX_BACKOFF);
            w.next_try = Some(tokio::time::Instant::now() + w.backoff);
            tracing::warn!(deployment_id = %dep.id, backoff_s = w.backoff.as_secs(), "trying again later");
        } else {
            w.backoff = Duration::ZERO;
            w.next_try = None;
        }
    }

    /// The `deployment.replaced` event and its audit entry.
    async fn record_replacement(
        &self,
        caller: &Caller,
        dep: &DeploymentRecord,
        old: Option<&str>,
        new: &str,
        why: &str,
    ) {
        let details = json!({ "old_instance_id": old, "instance_id": new, "reason": why });
        self.events
            .emit_logged(
                &dep.tenant_id,
                None,
                crate::events::EventKind::DeploymentReplaced,
                json!({ "deployment_id": dep.id, "old_instance_id": old, "instance_id": new, "reason": why }),
            )
            .await;
        self.record_audit(
            caller,
            crate::audit::NewAudit {
                kind: "deployment.replace".into(),
                resource_type: Some("deployment".into()),
                resource_id: Some(dep.id.clone()),
                request_id: None,
                ip: None,
                outcome: "ok",
                error_code: None,
                details,
            },
        )
        .await;
    }

    /// Destroys the deployment's instances that serve nothing: not the
    /// active one, and dead or replaced more than [`STRAY_AFTER`] ago (a
    /// drain a server restart cut short, a replaced instance that died).
    /// Skipped while a roll-out holds the deployment.
    async fn reap_strays(&self, caller: &Caller, dep: &DeploymentRecord) {
        let Some(_held) = self.deploy_locks.try_lock(&dep.id) else {
            return;
        };
        let Ok(instances) = self.deployment_instances(caller, &dep.id).await else {
            return;
        };
        let settled = self.now_ms() - dep.updated_at
            > i64::try_from(STRAY_AFTER.as_millis()).unwrap_or(i64::MAX);
        for inst in instances {
            let active = dep.instances.contains(&inst.id);
            let serving = inst.state == SandboxState::Running;
            if active || (serving && !settled) {
                continue;
            }
            tracing::info!(deployment_id = %dep.id, instance = %inst.id, state = %inst.state, "stopping a stray deployment instance");
            if let Err(e) = self.destroy_sandbox(caller, &inst.id).await {
                tracing::warn!(instance = %inst.id, error = %e, "stray instance not stopped");
            }
        }
    }

    /// Starts a healthy instance of the deployment's active version in
    /// place of `old` (or one more, with `None`), unless someone moved,
    /// stopped or deleted the deployment meanwhile; the new instance's id,
    /// `None` when there was nothing to do.
    async fn replace_instance(
        self: &Arc<Core>,
        caller: &Caller,
        id: &str,
        old: Option<&str>,
    ) -> crate::error::Result<Option<String>> {
        let _one_at_a_time = self.deploy_locks.lock(id).await;
        let dep = match self.get_deployment(caller, id).await {
            Ok(d) if d.state == "running" => d,
            // Deleted or stopped meanwhile: nothing to keep up.
            Ok(_) => return Ok(None),
            Err(e) if e.kind == crate::error::Kind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mode = match old {
            // A publish or rollback already replaced it.
            Some(o) if !dep.instances.iter().any(|i| i == o) => return Ok(None),
            Some(o) => Rollout::Replace { old: o.to_string() },
            None if dep.instances.len() >= dep.replicas as usize => return Ok(None),
            None => Rollout::Grow { count: 1 },
        };
        let vid = dep.active_version_id.clone().unwrap_or_default();
        let version = self
            .version_of(id, &vid)
            .await?
            .ok_or_else(|| crate::error::Error::conflict("invalid_state", "no active version"))?;
        let before = dep.instances.clone();
        let (dep, _, changed) = self
            .roll_out(caller, dep, version, mode, HEALTH_DEADLINE)
            .await?;
        if !changed {
            return Err(crate::error::Error::conflict(
                "invalid_state",
                "the replacement did not become healthy",
            ));
        }
        Ok(dep.instances.into_iter().find(|i| !before.contains(i)))
    }
}
