//! A sandbox's egress policy: stored with the sandbox and put in force on
//! its VM by the sandbox's actor (so a change never interleaves with a
//! boot, pause or restore). The filtering itself is the VMM jail's.

use hearth_vmm::Vm;
/// The policy's shape (MIOSA's) is the jail's, which enforces it.
pub use hearth_vmm::{Destination, Effect, EgressPolicy, EgressRule};
use serde_json::json;

use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::keys::Caller;
use crate::model::SandboxRecord;
use crate::sandboxes::actor::{Op, SandboxHandle};
use crate::Core;

impl Core {
    /// Replaces (or with `None` removes) the sandbox's egress policy; a
    /// running VM gets it at once, a paused one when it resumes.
    pub async fn set_egress_policy(
        &self,
        caller: &Caller,
        id: &str,
        policy: Option<EgressPolicy>,
    ) -> Result<SandboxRecord> {
        let Some(h) = self.live(caller, id) else {
            let rec = self.get_sandbox(caller, id).await?;
            return Err(Error::invalid_state(
                id,
                rec.state,
                "change the network policy of",
            ));
        };
        h.call(|reply| Op::SetEgressPolicy {
            policy,
            reply: Some(reply),
        })
        .await
    }
}

/// Applies `policy` to the running VM (if any), then stores it; a store
/// failure puts the VM's previous policy back.
pub(super) async fn apply(
    core: &Core,
    h: &SandboxHandle,
    vm: Option<&dyn Vm>,
    policy: Option<EgressPolicy>,
) -> Result<SandboxRecord> {
    let old = h.record().egress_policy;
    if let Some(v) = vm {
        v.set_egress_policy(policy.as_ref()).await.map_err(|e| {
            Error::internal(anyhow::anyhow!(hearth_agent_protocol::error_chain(&e)))
        })?;
    }
    if old == policy {
        return Ok(h.record());
    }
    let now = core.now_ms();
    let committed = core
        .commit(h, |r| {
            r.egress_policy = policy.clone();
            r.egress_policy_updated_at = Some(now);
        })
        .await;
    match committed {
        Ok(rec) => {
            core.events
                .emit_logged(
                    &h.tenant_id,
                    Some(&h.id),
                    EventKind::NetworkPolicyUpdated,
                    json!({
                        "default_effect": policy
                            .as_ref()
                            .map_or(hearth_vmm::Effect::Allow, |p| p.default_effect),
                        "rules": policy.as_ref().map_or(0, |p| p.rules.len()),
                    }),
                )
                .await;
            Ok(rec)
        }
        Err(e) => {
            if let Some(v) = vm {
                let _ = v.set_egress_policy(old.as_ref()).await;
            }
            Err(e)
        }
    }
}
