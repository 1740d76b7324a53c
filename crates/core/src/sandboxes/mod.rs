//! Sandbox operations: create, read, list, update, lifecycle calls that go
//! through the sandbox's actor, and access to its agent for exec and files.
//! Every lookup is scoped to the caller's tenant: another tenant's sandbox
//! is "not found", never "forbidden".

pub mod actor;
pub mod network;
pub mod recovery;
pub mod timers;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;

use super::ids::new_id;
use super::keys::Caller;
use super::Core;
use crate::error::{Error, FieldError, Result};
use crate::events::EventKind;
use crate::model::{SandboxRecord, SandboxState};
use crate::sandboxes::actor::{Op, PauseReason, SandboxHandle};
use crate::store::{Page, SandboxFilter, StoreError};

/// A validated create request.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateParams {
    pub template_id: String,
    /// Any of `size`, `cpu_count`, `memory_mb`, `disk_size_mb` was given.
    pub explicit_shape: bool,
    pub cpu_count: u32,
    pub memory_mb: u32,
    pub disk_size_mb: u32,
    pub timeout_sec: u32,
    pub idle_timeout_sec: u32,
    pub always_on: bool,
    pub persistent: bool,
    pub egress: bool,
    pub egress_policy: Option<hearth_vmm::EgressPolicy>,
    pub env: BTreeMap<String, String>,
    pub secret_env: Vec<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub tags: Vec<String>,
    pub name: Option<String>,
    pub external_workspace_id: Option<String>,
    pub external_user_id: Option<String>,
    pub external_project_id: Option<String>,
    /// The room placement promised this create (`nodes/placement.rs`),
    /// released once its record is stored.
    pub placement: Option<String>,
}

/// A validated PATCH.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatchParams {
    pub name: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    pub timeout_sec: Option<u32>,
    pub idle_timeout_sec: Option<u32>,
    pub always_on: Option<bool>,
}

/// The most JSON a sandbox's metadata may take (at create, and merged
/// after every PATCH).
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// The size of `m` as JSON.
pub fn metadata_size(m: &serde_json::Map<String, serde_json::Value>) -> usize {
    serde_json::to_vec(m).map_or(usize::MAX, |v| v.len())
}

impl Core {
    /// Creates a sandbox and starts booting it. With `wait`, answers once
    /// it runs (or failed); without, at once in `provisioning`.
    pub async fn create_sandbox(
        self: &Arc<Core>,
        caller: &Caller,
        p: CreateParams,
        wait: bool,
    ) -> Result<SandboxRecord> {
        let promise = p.placement.clone();
        let made = self.create_placed(caller, p, wait).await;
        // Released once the record is stored; here too when it never was.
        if let (Err(_), Some(id)) = (&made, promise) {
            self.release_placement(&id).await;
        }
        made
    }

    /// What a create needs of a node, for placement: its shape, the
    /// region asked for, and the template snapshot that would boot it warm.
    pub async fn placement_need(
        &self,
        p: &CreateParams,
        region: Option<String>,
    ) -> crate::nodes::placement::Need {
        let template = match self.templates.canonical(&p.template_id) {
            Some(id) => self.resolve_template(&id).await.ok().map(|t| {
                crate::warm::Shape {
                    template_id: t.id,
                    version: t.version,
                    cpu_count: p.cpu_count,
                    memory_mb: p.memory_mb,
                    disk_size_mb: p.disk_size_mb,
                }
                .key()
            }),
            None => None,
        };
        crate::nodes::placement::Need {
            vcpus: u64::from(p.cpu_count),
            memory_mb: u64::from(p.memory_mb),
            disk_mb: u64::from(p.disk_size_mb),
            region,
            template,
        }
    }

    async fn create_placed(
        self: &Arc<Core>,
        caller: &Caller,
        p: CreateParams,
        wait: bool,
    ) -> Result<SandboxRecord> {
        let mut p = p;
        let promise = p.placement.take();
        // A token's sandboxes carry its user and workspace: what it sees.
        if let Some(t) = &caller.scope {
            p.external_user_id = Some(t.user_id.clone());
            p.external_workspace_id = Some(t.workspace_id.clone());
        }
        let canonical = match self.templates.canonical(&p.template_id) {
            Some(c) => c,
            None => self.custom_template_for(caller, &mut p).await?,
        };
        let caps = self.vmm.capabilities();
        let mut bad = Vec::new();
        if p.cpu_count > caps.max_vcpus {
            bad.push(FieldError::new(
                "cpu_count",
                format!("this host gives at most {} vCPUs", caps.max_vcpus),
            ));
        }
        if u64::from(p.memory_mb) > caps.available_memory_mb {
            bad.push(FieldError::new(
                "memory_mb",
                format!("this host has {} MiB available", caps.available_memory_mb),
            ));
        }
        if !bad.is_empty() {
            return Err(Error::validation(bad));
        }
        let now = self.now_ms();
        let mut rec = SandboxRecord {
            id: new_id("sbx"),
            tenant_id: caller.tenant_id.clone(),
            name: p.name,
            state: SandboxState::Provisioning,
            template_id: canonical,
            template_version: String::new(),
            cpu_count: p.cpu_count,
            memory_mb: p.memory_mb,
            disk_size_mb: p.disk_size_mb,
            timeout_sec: p.timeout_sec,
            idle_timeout_sec: p.idle_timeout_sec,
            always_on: p.always_on,
            persistent: p.persistent,
            egress: p.egress,
            egress_policy_updated_at: p.egress_policy.as_ref().map(|_| now),
            egress_policy: p.egress_policy,
            env: p.env,
            secret_env: p.secret_env,
            metadata: p.metadata,
            tags: p.tags,
            external_workspace_id: p.external_workspace_id,
            external_user_id: p.external_user_id,
            external_project_id: p.external_project_id,
            boot_ms: None,
            boot_path: None,
            created_at: now,
            started_at: None,
            paused_at: None,
            destroyed_at: None,
            deadline_at: None,
            last_activity_at: now,
            deployment_id: None,
            node_id: None,
        };
        let pooled = match wait {
            true => self.pooled_for(&rec).await,
            false => None,
        };
        if let Some(p) = &pooled {
            rec.id = p.id.clone();
        }
        let h = self.register_new(&rec, pooled.map(|p| p.vm)).await?;
        // Its record counts on the node now: the promise goes at once,
        // not after the boot (placements meanwhile would count both).
        if let Some(promise) = &promise {
            self.release_placement(promise).await;
        }
        if !wait {
            h.send(Op::Boot {
                snapshot: None,
                reply: None,
            });
            return Ok(h.record());
        }
        h.call(|tx| Op::Boot {
            snapshot: None,
            reply: Some(tx),
        })
        .await
    }

    /// The id of custom template `p.template_id` (an id or a name), whose
    /// newest ready version gives the VM shape: a create may leave the
    /// shape out, or ask for exactly the template's.
    async fn custom_template_for(&self, caller: &Caller, p: &mut CreateParams) -> Result<String> {
        let unknown = || {
            Error::field(
                "template_id",
                format!("unknown template {:?}", p.template_id),
            )
        };
        let info = self
            .find_template(caller, &p.template_id)
            .await?
            .ok_or_else(unknown)?;
        let Some(build) = info.latest_ready() else {
            let state = info.builds.first().map_or("none", |b| b.state.as_str());
            return Err(Error::field(
                "template_id",
                format!(
                    "template {:?} has no ready version yet (latest build: {state})",
                    info.template.name
                ),
            ));
        };
        let s = &build.spec;
        let want = (s.cpu_count, s.memory_mb, s.disk_size_mb);
        if p.explicit_shape && (p.cpu_count, p.memory_mb, p.disk_size_mb) != want {
            return Err(Error::field(
                "cpu_count",
                format!(
                    "template {:?} is built for {} vCPU, {} MiB memory and {} MiB disk; \
                     leave the size out or rebuild the template with another one",
                    info.template.name, want.0, want.1, want.2
                ),
            ));
        }
        (p.cpu_count, p.memory_mb, p.disk_size_mb) = want;
        // The template's env, under the create's own.
        let mut env = s.env.clone();
        env.extend(std::mem::take(&mut p.env));
        p.env = env;
        Ok(info.template.id)
    }

    /// A warm-pool VM for a create like `rec`, if the pool has one.
    async fn pooled_for(self: &Arc<Core>, rec: &SandboxRecord) -> Option<super::warm::Pooled> {
        if self.config.warm_pool_size == 0 || !self.config.warm_boot || !rec.egress {
            return None;
        }
        let tpl = self.resolve_template(&rec.template_id).await.ok()?;
        let shape = super::warm::Shape {
            template_id: tpl.id.clone(),
            version: tpl.version.clone(),
            cpu_count: rec.cpu_count,
            memory_mb: rec.memory_mb,
            disk_size_mb: rec.disk_size_mb,
        };
        self.take_pooled(&shape, &tpl)
    }

    /// Stores a new sandbox record (run by this node) and starts its actor
    /// (owning `vm`, a warm-pool VM, when given).
    async fn register_new(
        self: &Arc<Core>,
        rec: &SandboxRecord,
        vm: Option<Box<dyn hearth_vmm::Vm>>,
    ) -> Result<Arc<SandboxHandle>> {
        let mut rec = rec.clone();
        rec.node_id = Some(self.node_id().to_string());
        let rec = &rec;
        let need = crate::quotas::Quotas {
            sandboxes: 1,
            vcpus: u64::from(rec.cpu_count),
            memory_mb: u64::from(rec.memory_mb),
            disk_mb: u64::from(rec.disk_size_mb),
            ..Default::default()
        };
        let inserted = match self.reserve(&rec.tenant_id, need).await {
            Ok(_quota) => self.store.insert_sandbox(rec).await.map_err(|e| match e {
                StoreError::Duplicate(_) => Error::conflict(
                    "conflict",
                    format!(
                        "a sandbox named {:?} already exists",
                        rec.name.as_deref().unwrap_or_default()
                    ),
                ),
                e => e.into(),
            }),
            Err(e) => Err(e),
        };
        if let Err(e) = inserted {
            if let Some(vm) = vm.as_ref() {
                let _ = vm.destroy().await;
            }
            return Err(e);
        }
        self.metrics.state_changed(None, SandboxState::Provisioning);
        tracing::info!(sandbox_id = %rec.id, template = %rec.template_id, "sandbox created");
        self.events
            .emit_logged(
                &rec.tenant_id,
                Some(&rec.id),
                EventKind::SandboxCreated,
                json!({ "template_id": rec.template_id }),
            )
            .await;
        Ok(self.spawn_actor(rec.clone(), vm))
    }

    /// Registers a new sandbox and boots it (from `snapshot` when given),
    /// answering once it runs or failed.
    pub(crate) async fn start_new(
        self: &Arc<Core>,
        rec: SandboxRecord,
        snapshot: Option<std::path::PathBuf>,
    ) -> Result<SandboxRecord> {
        let h = self.register_new(&rec, None).await?;
        h.call(|tx| Op::Boot {
            snapshot,
            reply: Some(tx),
        })
        .await
    }

    /// The record of one of the caller's sandboxes (destroyed ones too).
    pub async fn get_sandbox(&self, caller: &Caller, id: &str) -> Result<SandboxRecord> {
        let rec = match self.handle(id) {
            Some(h) => Some(h.record()),
            None => self.store.get_sandbox(id).await?,
        };
        match rec {
            Some(r) if caller.sees(&r) => Ok(r),
            _ => Err(Error::sandbox_not_found(id)),
        }
    }

    pub async fn sandbox_by_name(&self, caller: &Caller, name: &str) -> Result<SandboxRecord> {
        let rec = self
            .store
            .sandbox_by_name(&caller.tenant_id, name)
            .await?
            .ok_or_else(|| Error::sandbox_not_found(name))?;
        // The live copy is fresher than the store's.
        let rec = self.handle(&rec.id).map(|h| h.record()).unwrap_or(rec);
        if !caller.sees(&rec) {
            return Err(Error::sandbox_not_found(name));
        }
        Ok(rec)
    }

    /// Whether the sandbox's guest answers commands now, and its state.
    pub async fn readiness(&self, caller: &Caller, id: &str) -> Result<(bool, SandboxState)> {
        let rec = self.get_sandbox(caller, id).await?;
        let ready = rec.state.can_exec() && self.handle(id).and_then(|h| h.agent()).is_some();
        Ok((ready, rec.state))
    }

    /// Env is read-only while the sandbox exists: it is set at create (and
    /// per exec). A running sandbox's processes would not see a change; a
    /// paused one resumes from memory where every process already holds
    /// its env, so a change there would reach only some of them. Both
    /// answer 409 with that reason.
    pub async fn change_env(&self, caller: &Caller, id: &str) -> Result<()> {
        let rec = self.get_sandbox(caller, id).await?;
        let why = if rec.state.can_resume() {
            "a paused sandbox resumes with the env its processes already hold"
        } else {
            "processes already running would not see the change"
        };
        Err(Error::new(
            crate::error::Kind::InvalidState,
            "invalid_state",
            format!(
                "sandbox {id} is {}: env is set at create and cannot change ({why}); \
                 pass env to each exec instead",
                rec.state
            ),
        ))
    }

    /// The caller's sandboxes that `filter` keeps (a template filter may
    /// name a template by any of its ids), one page, and the total.
    pub async fn list_sandboxes(
        &self,
        caller: &Caller,
        filter: &SandboxFilter,
        page: Page,
    ) -> Result<(Vec<SandboxRecord>, u64)> {
        let mut filter = filter.clone();
        // A token lists what it sees: its pinned sandboxes, or its user's
        // and workspace's.
        if let Some(t) = &caller.scope {
            match &t.sandbox_ids {
                Some(ids) => filter.ids = Some(ids.clone()),
                None => {
                    filter.external_user_id = Some(t.user_id.clone());
                    filter.external_workspace_id = Some(t.workspace_id.clone());
                }
            }
        }
        filter.template_id = filter
            .template_id
            .map(|t| self.templates.canonical(&t).unwrap_or(t));
        let (list, total) = self
            .store
            .list_sandboxes(&caller.tenant_id, &filter, page)
            .await?;
        let list = list
            .into_iter()
            .map(|r| self.handle(&r.id).map(|h| h.record()).unwrap_or(r))
            .collect();
        Ok((list, total))
    }

    /// The live handle of one of the caller's sandboxes.
    pub(super) fn live(&self, caller: &Caller, id: &str) -> Option<Arc<SandboxHandle>> {
        self.handle(id)
            .filter(|h| h.tenant_id == caller.tenant_id)
            .filter(|h| caller.scope.is_none() || caller.sees(&h.record()))
    }

    pub async fn patch_sandbox(
        &self,
        caller: &Caller,
        id: &str,
        p: PatchParams,
    ) -> Result<SandboxRecord> {
        let Some(h) = self.live(caller, id) else {
            // A destroyed sandbox is read-only.
            let rec = self.get_sandbox(caller, id).await?;
            return Err(Error::invalid_state(id, rec.state, "update"));
        };
        let now = self.now_ms();
        let mut too_big = false;
        let after = self
            .commit(&h, |r| {
                // The merged metadata is bounded as a create's is; over the
                // limit nothing of the patch applies.
                let merged = p.metadata.map(|meta| {
                    let mut m = r.metadata.clone();
                    for (k, v) in meta {
                        if v.is_null() {
                            m.remove(&k);
                        } else {
                            m.insert(k, v);
                        }
                    }
                    m
                });
                if merged
                    .as_ref()
                    .is_some_and(|m| metadata_size(m) > MAX_METADATA_BYTES)
                {
                    too_big = true;
                    return;
                }
                if let Some(m) = merged {
                    r.metadata = m;
                }
                if let Some(name) = p.name {
                    r.name = name;
                }
                if let Some(tags) = p.tags {
                    r.tags = tags;
                }
                if let Some(t) = p.timeout_sec {
                    r.timeout_sec = t;
                    if r.state.timers_run() {
                        r.deadline_at = Some(now + i64::from(t) * 1000);
                    }
                }
                if let Some(t) = p.idle_timeout_sec {
                    r.idle_timeout_sec = t;
                }
                if let Some(a) = p.always_on {
                    r.always_on = a;
                }
            })
            .await?;
        if too_big {
            return Err(Error::field(
                "metadata",
                format!(
                    "the sandbox's metadata with this patch merged in must be at most \
                     {} KiB of JSON",
                    MAX_METADATA_BYTES / 1024
                ),
            ));
        }
        Ok(after)
    }

    /// Destroys a sandbox; destroying a destroyed one answers its record.
    pub async fn destroy_sandbox(&self, caller: &Caller, id: &str) -> Result<SandboxRecord> {
        match self.live(caller, id) {
            Some(h) => {
                h.call(|tx| Op::Destroy {
                    reason: "request",
                    reply: Some(tx),
                })
                .await
            }
            None => self.get_sandbox(caller, id).await,
        }
    }

    pub async fn pause_sandbox(&self, caller: &Caller, id: &str) -> Result<SandboxRecord> {
        let h = self.live_or_state_error(caller, id, "pause").await?;
        h.call(|tx| Op::Pause {
            reason: PauseReason::Request,
            reply: Some(tx),
        })
        .await
    }

    pub async fn resume_sandbox(&self, caller: &Caller, id: &str) -> Result<SandboxRecord> {
        let h = self.live_or_state_error(caller, id, "resume").await?;
        let rec = h.record();
        // A paused sandbox holds no vCPUs or memory: resuming takes them.
        // The quota lock is held until the resume has answered (the state
        // is `running` then), so a create beside it counts it.
        let _quota = if rec.state.can_resume() {
            let need = crate::quotas::Quotas {
                vcpus: u64::from(rec.cpu_count),
                memory_mb: u64::from(rec.memory_mb),
                ..Default::default()
            };
            Some(self.reserve(&caller.tenant_id, need).await?)
        } else {
            None
        };
        h.call(|tx| Op::Resume { reply: Some(tx) }).await
    }

    async fn live_or_state_error(
        &self,
        caller: &Caller,
        id: &str,
        op: &str,
    ) -> Result<Arc<SandboxHandle>> {
        match self.live(caller, id) {
            Some(h) => Ok(h),
            None => {
                let rec = self.get_sandbox(caller, id).await?;
                Err(Error::invalid_state(id, rec.state, op))
            }
        }
    }

    /// Resets the timeout deadline to `timeout_sec` from now.
    pub async fn extend_sandbox(
        &self,
        caller: &Caller,
        id: &str,
        timeout_sec: u32,
    ) -> Result<SandboxRecord> {
        let h = self.live_or_state_error(caller, id, "extend").await?;
        let state = h.state();
        if !state.timers_run() {
            return Err(Error::invalid_state(id, state, "extend"));
        }
        let now = self.now_ms();
        self.commit(&h, |r| {
            r.timeout_sec = timeout_sec;
            r.deadline_at = Some(now + i64::from(timeout_sec) * 1000);
        })
        .await
    }
}
