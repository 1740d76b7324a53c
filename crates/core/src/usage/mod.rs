//! Metering: every interval a sandbox spends running or paused is stored
//! (opened and closed on each state change), and usage is computed from
//! the intervals: vCPU and memory time while running, disk time while
//! paused, priced with the configured rates.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Core;
use crate::config::Rates;
use crate::model::{SandboxRecord, SandboxState, UsageInterval};
use crate::store::StoreResult;

/// Closes the sandbox's open interval and opens one for its new state,
/// if that state is billed.
pub(crate) async fn switch(core: &Core, rec: &SandboxRecord) -> StoreResult<()> {
    let now = core.now_ms();
    let billed = matches!(
        rec.state,
        SandboxState::Running | SandboxState::Paused | SandboxState::Snapshotting
    );
    let next = billed.then(|| UsageInterval {
        sandbox_id: rec.id.clone(),
        tenant_id: rec.tenant_id.clone(),
        state: rec.state,
        cpu_count: rec.cpu_count,
        memory_mb: rec.memory_mb,
        disk_size_mb: rec.disk_size_mb,
        external_workspace_id: rec.external_workspace_id.clone(),
        external_user_id: rec.external_user_id.clone(),
        external_project_id: rec.external_project_id.clone(),
        template_id: rec.template_id.clone(),
        deployment_id: rec.deployment_id.clone(),
        started_at: now,
        ended_at: None,
    });
    core.store.switch_usage(&rec.id, now, next.as_ref()).await
}

/// Usage totals over a period.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    pub runtime_sec: f64,
    pub provisioned_vcpu_ms: u64,
    pub provisioned_memory_mb_ms: u64,
    pub paused_disk_mb_ms: u64,
    pub estimated_cost_cents: f64,
}

impl Usage {
    /// Adds the part of `iv` inside `[from, to)`, with open intervals
    /// running until `now`.
    pub fn add(&mut self, iv: &UsageInterval, from: i64, to: i64, now: i64, rates: &Rates) {
        let end = iv.ended_at.unwrap_or(now).min(to);
        let start = iv.started_at.max(from);
        if end <= start {
            return;
        }
        let ms = (end - start) as u64;
        match iv.state {
            SandboxState::Running | SandboxState::Snapshotting => {
                self.runtime_sec += ms as f64 / 1000.0;
                self.provisioned_vcpu_ms += ms * u64::from(iv.cpu_count);
                self.provisioned_memory_mb_ms += ms * u64::from(iv.memory_mb);
                let hours = ms as f64 / 3_600_000.0;
                self.estimated_cost_cents += hours
                    * (f64::from(iv.cpu_count) * rates.vcpu_hour_cents
                        + f64::from(iv.memory_mb) / 1024.0 * rates.memory_gib_hour_cents);
            }
            SandboxState::Paused => {
                self.paused_disk_mb_ms += ms * u64::from(iv.disk_size_mb);
                let hours = ms as f64 / 3_600_000.0;
                self.estimated_cost_cents +=
                    hours * f64::from(iv.disk_size_mb) / 1024.0 * rates.paused_disk_gib_hour_cents;
            }
            _ => {}
        }
    }

    fn round(mut self) -> Usage {
        self.estimated_cost_cents = (self.estimated_cost_cents * 10_000.0).round() / 10_000.0;
        self.runtime_sec = (self.runtime_sec * 1000.0).round() / 1000.0;
        self
    }
}

/// What `/usage` groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    None,
    Sandbox,
    ExternalWorkspace,
    ExternalUser,
    ExternalProject,
    Template,
    Deployment,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        Some(match s {
            "" | "none" => GroupBy::None,
            "sandbox" | "sandbox_id" => GroupBy::Sandbox,
            "external_workspace_id" => GroupBy::ExternalWorkspace,
            "external_user_id" => GroupBy::ExternalUser,
            "external_project_id" => GroupBy::ExternalProject,
            "template" | "template_id" => GroupBy::Template,
            "deployment" | "deployment_id" => GroupBy::Deployment,
            _ => return None,
        })
    }

    fn key(self, iv: &UsageInterval) -> String {
        match self {
            GroupBy::None => String::new(),
            GroupBy::Sandbox => iv.sandbox_id.clone(),
            GroupBy::ExternalWorkspace => iv.external_workspace_id.clone().unwrap_or_default(),
            GroupBy::ExternalUser => iv.external_user_id.clone().unwrap_or_default(),
            GroupBy::ExternalProject => iv.external_project_id.clone().unwrap_or_default(),
            GroupBy::Template => iv.template_id.clone(),
            GroupBy::Deployment => iv.deployment_id.clone().unwrap_or_default(),
        }
    }
}

/// Sums intervals over `[from, to)`, one total per group key.
impl Core {
    /// The caller's usage (of one sandbox, or all of theirs) over
    /// `from..to`, grouped by `group` (key `""` without grouping).
    pub async fn usage(
        &self,
        caller: &super::keys::Caller,
        sandbox_id: Option<&str>,
        from: i64,
        to: i64,
        group: GroupBy,
    ) -> super::error::Result<BTreeMap<String, Usage>> {
        let ivs = self
            .store
            .usage_intervals(&caller.tenant_id, sandbox_id, from, to)
            .await?;
        Ok(aggregate(
            &ivs,
            group,
            from,
            to,
            self.now_ms(),
            &self.config.rates,
        ))
    }
}

pub fn aggregate(
    intervals: &[UsageInterval],
    group: GroupBy,
    from: i64,
    to: i64,
    now: i64,
    rates: &Rates,
) -> BTreeMap<String, Usage> {
    let mut out: BTreeMap<String, Usage> = BTreeMap::new();
    for iv in intervals {
        out.entry(group.key(iv))
            .or_default()
            .add(iv, from, to, now, rates);
    }
    out.into_iter().map(|(k, u)| (k, u.round())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(
        sandbox: &str,
        ws: &str,
        state: SandboxState,
        start: i64,
        end: Option<i64>,
    ) -> UsageInterval {
        UsageInterval {
            sandbox_id: sandbox.into(),
            tenant_id: "t".into(),
            state,
            cpu_count: 2,
            memory_mb: 1024,
            disk_size_mb: 2048,
            external_workspace_id: Some(ws.into()),
            external_user_id: None,
            external_project_id: None,
            template_id: "minimal".into(),
            deployment_id: None,
            started_at: start,
            ended_at: end,
        }
    }

    #[test]
    fn running_and_paused_time_are_billed_differently() {
        let rates = Rates {
            vcpu_hour_cents: 10.0,
            memory_gib_hour_cents: 2.0,
            paused_disk_gib_hour_cents: 1.0,
        };
        let hour = 3_600_000;
        let ivs = [
            iv("a", "w1", SandboxState::Running, 0, Some(hour)),
            iv("a", "w1", SandboxState::Paused, hour, None),
        ];
        let u = aggregate(&ivs, GroupBy::None, 0, 10 * hour, 2 * hour, &rates);
        let u = &u[""];
        assert_eq!(u.runtime_sec, 3600.0);
        assert_eq!(u.provisioned_vcpu_ms, 2 * hour as u64);
        assert_eq!(u.provisioned_memory_mb_ms, 1024 * hour as u64);
        assert_eq!(
            u.paused_disk_mb_ms,
            2048 * hour as u64,
            "open interval ends now"
        );
        // 2 vCPU * 10 + 1 GiB * 2 for an hour, then 2 GiB * 1 paused.
        assert_eq!(u.estimated_cost_cents, 24.0);
    }

    #[test]
    fn period_clips_and_groups_split() {
        let rates = Rates::default();
        let ivs = [
            iv("a", "w1", SandboxState::Running, 0, Some(10_000)),
            iv("b", "w2", SandboxState::Running, 5_000, Some(20_000)),
        ];
        let g = aggregate(
            &ivs,
            GroupBy::ExternalWorkspace,
            8_000,
            12_000,
            30_000,
            &rates,
        );
        assert_eq!(g["w1"].runtime_sec, 2.0);
        assert_eq!(g["w2"].runtime_sec, 4.0);
        assert_eq!(
            GroupBy::parse("external_workspace_id"),
            Some(GroupBy::ExternalWorkspace)
        );
        assert_eq!(GroupBy::parse("color"), None);
    }
}
