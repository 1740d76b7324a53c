//! Quota queries: a tenant's overrides, and what it holds now (one pass
//! per table); the `Store` impl in `mod.rs` calls them.

use super::rows::{load_from_row, LOAD_SUMS};
use super::DbPool;

use crate::quotas::{QuotaOverrides, Quotas};
use crate::store::{StoreError, StoreResult};

pub(super) async fn get(pool: &DbPool, tenant: &str) -> StoreResult<Option<QuotaOverrides>> {
    let row: Option<String> =
        sqlx::query_scalar("SELECT overrides FROM tenant_quotas WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(pool)
            .await?;
    row.map(|s| {
        serde_json::from_str(&s).map_err(|e| StoreError::Corrupt {
            what: "tenant quotas",
            source: Some(e),
        })
    })
    .transpose()
}

pub(super) async fn put(
    pool: &DbPool,
    tenant: &str,
    o: &QuotaOverrides,
    now: i64,
) -> StoreResult<()> {
    let json = serde_json::to_string(o).map_err(|e| StoreError::Corrupt {
        what: "tenant quotas",
        source: Some(e),
    })?;
    sqlx::query(
        "INSERT INTO tenant_quotas (tenant_id, overrides, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id) DO UPDATE SET overrides = $2, updated_at = $3",
    )
    .bind(tenant)
    .bind(json)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn usage(pool: &DbPool, tenant: &str) -> StoreResult<Quotas> {
    let sql =
        format!("SELECT {LOAD_SUMS} FROM sandboxes WHERE tenant_id = $1 AND state != 'destroyed'");
    let load = load_from_row(&sqlx::query(&sql).bind(tenant).fetch_one(pool).await?)?;
    let count = |sql: &'static str| count(pool, sql, tenant);
    let snapshots = count(
        "SELECT COUNT(*) FROM snapshots WHERE tenant_id = $1 AND status IN ('creating', 'ready')",
    )
    .await?;
    let previews = count(
        "SELECT COUNT(*) FROM previews p JOIN sandboxes s ON s.id = p.sandbox_id \
         WHERE p.tenant_id = $1 AND s.state != 'destroyed'",
    )
    .await?;
    let api_keys =
        count("SELECT COUNT(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL").await?;
    let builds = count(
        "SELECT COUNT(*) FROM template_builds WHERE tenant_id = $1 \
         AND state IN ('queued', 'building', 'snapshotting')",
    )
    .await?;
    let replicas =
        count("SELECT COALESCE(MAX(replicas), 0) FROM deployments WHERE tenant_id = $1").await?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(Quotas {
        sandboxes: load.sandboxes,
        vcpus: load.vcpus,
        memory_mb: load.memory_mb,
        disk_mb: load.disk_mb,
        snapshots: n(snapshots),
        previews: n(previews),
        api_keys: n(api_keys),
        concurrent_builds: n(builds),
        replicas: n(replicas),
        requests_per_sec: 0,
    })
}

async fn count(pool: &DbPool, sql: &'static str, tenant: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(sql).bind(tenant).fetch_one(pool).await
}
