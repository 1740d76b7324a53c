//! Per-tenant quotas: how much one tenant may hold at once (live
//! sandboxes, their vCPUs, memory and disk, snapshots, previews, API keys,
//! builds in flight). Defaults come from `[quotas]` in the config; an admin
//! overrides them per tenant (`PUT /tenants/{id}/quotas`). Over a quota is
//! `quota_exceeded` naming the quota, its use and its limit. Checks and the
//! insert they guard run under the tenant's quota lock, so two concurrent
//! creates never both take the last unit.

use std::collections::HashMap;

use parking_lot::Mutex as SyncMutex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Kind, Result};
use crate::keys::Caller;
use crate::Core;

/// One number per quota. As limits: the most a tenant may hold. As use:
/// what it holds now. As a request: what an operation adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default = "Quotas::defaults")]
pub struct Quotas {
    /// Sandboxes not destroyed (paused ones included).
    pub sandboxes: u64,
    /// vCPUs of sandboxes that run (not paused).
    pub vcpus: u64,
    /// Memory (MiB) of sandboxes that run (not paused).
    pub memory_mb: u64,
    /// Disk (MiB) of sandboxes not destroyed.
    pub disk_mb: u64,
    /// Snapshots kept (creating or ready).
    pub snapshots: u64,
    /// Previews of sandboxes not destroyed.
    pub previews: u64,
    /// API keys not revoked.
    pub api_keys: u64,
    /// Template builds queued or running.
    pub concurrent_builds: u64,
    /// Instances one deployment may run (as use: the most any of the
    /// tenant's deployments runs). Each instance is also a sandbox, and
    /// counts against the quotas above.
    pub replicas: u64,
    /// Requests a second each of the tenant's keys may make (bursts of
    /// four times as many; 0 = no limit). Its default is the config's
    /// `api_rps` (with bursts of `api_burst`), not `[quotas]`; as use it is
    /// always 0.
    #[serde(skip_deserializing)]
    pub requests_per_sec: u64,
}

impl Quotas {
    /// The defaults an operator starts from: room for a team's agents on a
    /// large host, not for one tenant to take a shared host alone.
    pub fn defaults() -> Quotas {
        Quotas {
            sandboxes: 50,
            vcpus: 100,
            memory_mb: 200 * 1024,
            disk_mb: 1024 * 1024,
            snapshots: 500,
            previews: 200,
            api_keys: 50,
            concurrent_builds: 2,
            replicas: 10,
            requests_per_sec: 0,
        }
    }

    /// Each quota's name and number, in a fixed order (the rate, which is
    /// not held, is not among them).
    pub fn fields(&self) -> [(&'static str, u64); 8] {
        [
            ("sandboxes", self.sandboxes),
            ("vcpus", self.vcpus),
            ("memory_mb", self.memory_mb),
            ("disk_mb", self.disk_mb),
            ("snapshots", self.snapshots),
            ("previews", self.previews),
            ("api_keys", self.api_keys),
            ("concurrent_builds", self.concurrent_builds),
        ]
    }
}

/// A tenant's overrides of the defaults: `None` keeps the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaOverrides {
    pub sandboxes: Option<u64>,
    pub vcpus: Option<u64>,
    pub memory_mb: Option<u64>,
    pub disk_mb: Option<u64>,
    pub snapshots: Option<u64>,
    pub previews: Option<u64>,
    pub api_keys: Option<u64>,
    pub concurrent_builds: Option<u64>,
    pub replicas: Option<u64>,
    /// Requests a second per key (bursts of four times as many; 0 = no
    /// limit).
    pub requests_per_sec: Option<u64>,
}

impl QuotaOverrides {
    /// The limits in force: each override, else the default.
    pub fn over(&self, d: &Quotas) -> Quotas {
        Quotas {
            sandboxes: self.sandboxes.unwrap_or(d.sandboxes),
            vcpus: self.vcpus.unwrap_or(d.vcpus),
            memory_mb: self.memory_mb.unwrap_or(d.memory_mb),
            disk_mb: self.disk_mb.unwrap_or(d.disk_mb),
            snapshots: self.snapshots.unwrap_or(d.snapshots),
            previews: self.previews.unwrap_or(d.previews),
            api_keys: self.api_keys.unwrap_or(d.api_keys),
            concurrent_builds: self.concurrent_builds.unwrap_or(d.concurrent_builds),
            replicas: self.replicas.unwrap_or(d.replicas),
            requests_per_sec: self.requests_per_sec.unwrap_or(d.requests_per_sec),
        }
    }
}

/// A tenant's limits and use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct QuotaReport {
    pub tenant_id: String,
    pub limits: Quotas,
    pub usage: Quotas,
    /// What the admin set for this tenant (the rest are defaults).
    pub overrides: QuotaOverrides,
}

/// One lock per tenant with a check in flight.
pub type QuotaLocks = crate::locks::KeyedLocks;

/// Held from a quota check until what it guards is stored.
pub type QuotaGuard = tokio::sync::OwnedMutexGuard<()>;

/// The error of a quota that `need` would pass.
pub(crate) fn exceeded(name: &str, used: u64, limit: u64, need: u64) -> Error {
    Error::new(
        Kind::QuotaExceeded,
        "quota_exceeded",
        format!(
            "quota {name} exceeded: {used} in use of a limit of {limit}, this needs {need} more"
        ),
    )
    .with_quota(name, used, limit)
}

/// Tenants whose request rate is cached at most (past that the cache
/// starts over).
const MAX_CACHED_RATES: usize = 100_000;

/// Each tenant's request-rate override, cached: every request reads it.
/// One server owns the store, so setting quotas refreshes it.
#[derive(Debug, Default)]
pub struct RateOverrides(SyncMutex<HashMap<String, Option<u64>>>);

/// A request rate: tokens a second and the burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRate {
    /// 0 = no limit.
    pub per_sec: u32,
    pub burst: u32,
}

impl Core {
    /// Every tenant's defaults: `[quotas]`, with the request rate of
    /// `api_rps`.
    fn default_quotas(&self) -> Quotas {
        Quotas {
            requests_per_sec: u64::from(self.config.api_rps),
            ..self.config.quotas
        }
    }

    /// The limits in force for `tenant`.
    pub async fn quota_limits(&self, tenant: &str) -> Result<Quotas> {
        let o = self.store.tenant_quotas(tenant).await?.unwrap_or_default();
        Ok(o.over(&self.default_quotas()))
    }

    /// The request rate each of `tenant`'s keys gets: its override (bursts
    /// of four times as many), else `api_rps` with bursts of `api_burst`.
    pub async fn request_rate(&self, tenant: &str) -> Result<RequestRate> {
        let cached = self.rate_overrides.0.lock().get(tenant).copied();
        let o = match cached {
            Some(o) => o,
            None => {
                let o = self
                    .store
                    .tenant_quotas(tenant)
                    .await?
                    .and_then(|q| q.requests_per_sec);
                let mut map = self.rate_overrides.0.lock();
                if map.len() >= MAX_CACHED_RATES {
                    map.clear();
                }
                map.insert(tenant.to_string(), o);
                o
            }
        };
        Ok(match o {
            Some(n) => {
                let per_sec = u32::try_from(n).unwrap_or(u32::MAX);
                RequestRate {
                    per_sec,
                    burst: per_sec.saturating_mul(4).max(1),
                }
            }
            None => RequestRate {
                per_sec: self.config.api_rps,
                burst: self.config.api_burst,
            },
        })
    }

    /// `tenant`'s limits, use and overrides.
    pub async fn quota_report(&self, tenant: &str) -> Result<QuotaReport> {
        let overrides = self.store.tenant_quotas(tenant).await?.unwrap_or_default();
        Ok(QuotaReport {
            tenant_id: tenant.to_string(),
            limits: overrides.over(&self.default_quotas()),
            usage: self.store.tenant_usage(tenant).await?,
            overrides,
        })
    }

    /// Replaces `tenant`'s overrides (admin keys only).
    pub async fn set_quotas(
        &self,
        caller: &Caller,
        tenant: &str,
        overrides: QuotaOverrides,
    ) -> Result<QuotaReport> {
        if !caller.admin {
            return Err(Error::forbidden("only an admin key can set quotas"));
        }
        self.store
            .put_tenant_quotas(tenant, &overrides, self.now_ms())
            .await?;
        self.rate_overrides.0.lock().remove(tenant);
        self.quota_report(tenant).await
    }

    /// Takes `tenant`'s quota lock and checks that `need` fits; hold the
    /// guard until what it allows is stored.
    pub async fn reserve(&self, tenant: &str, need: Quotas) -> Result<QuotaGuard> {
        let guard = self.quota_locks.lock(tenant).await;
        let limits = self.quota_limits(tenant).await?;
        let used = self.store.tenant_usage(tenant).await?;
        let needs = need.fields();
        for ((name, used), (_, limit)) in used.fields().into_iter().zip(limits.fields()) {
            let n = needs
                .iter()
                .find(|(k, _)| *k == name)
                .map_or(0, |(_, n)| *n);
            if n > 0 && used.saturating_add(n) > limit {
                return Err(exceeded(name, used, limit, n));
            }
        }
        Ok(guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_they_set() {
        let d = Quotas::defaults();
        let o = QuotaOverrides {
            sandboxes: Some(3),
            concurrent_builds: Some(0),
            ..Default::default()
        };
        let q = o.over(&d);
        assert_eq!((q.sandboxes, q.concurrent_builds), (3, 0));
        assert_eq!(q.vcpus, d.vcpus);
        let e = exceeded("vcpus", 8, 8, 2);
        assert_eq!(e.code, "quota_exceeded");
        assert!(
            e.message.contains("vcpus") && e.message.contains("8 in use"),
            "{}",
            e.message
        );
    }
}
