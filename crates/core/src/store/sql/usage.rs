//! Usage intervals (metering); the `Store` impl in `mod.rs` calls them.

use super::{DbPool, DIALECT};
use sqlx::QueryBuilder;

use super::rows::usage_from_row;
use crate::model::UsageInterval;
use crate::store::StoreResult;

/// Closes the sandbox's open interval at `at` and opens `next`.
pub(super) async fn switch(
    pool: &DbPool,
    sandbox_id: &str,
    at: i64,
    next: Option<&UsageInterval>,
) -> StoreResult<()> {
    let mut tx = pool.begin().await?;
    let sql = format!(
        "UPDATE usage_intervals SET ended_at = {}($1, started_at) \
         WHERE sandbox_id = $2 AND ended_at IS NULL",
        DIALECT.greatest()
    );
    sqlx::query(&sql)
        .bind(at)
        .bind(sandbox_id)
        .execute(&mut *tx)
        .await?;
    if let Some(u) = next {
        sqlx::query(
            "INSERT INTO usage_intervals (sandbox_id, tenant_id, state, cpu_count, memory_mb, \
             disk_size_mb, external_workspace_id, external_user_id, external_project_id, \
             template_id, deployment_id, started_at, ended_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL)",
        )
        .bind(&u.sandbox_id)
        .bind(&u.tenant_id)
        .bind(u.state.as_str())
        .bind(i64::from(u.cpu_count))
        .bind(i64::from(u.memory_mb))
        .bind(i64::from(u.disk_size_mb))
        .bind(&u.external_workspace_id)
        .bind(&u.external_user_id)
        .bind(&u.external_project_id)
        .bind(&u.template_id)
        .bind(&u.deployment_id)
        .bind(u.started_at)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A tenant's (or one sandbox's) intervals overlapping `[from, to)`.
pub(super) async fn intervals(
    pool: &DbPool,
    tenant_id: &str,
    sandbox_id: Option<&str>,
    from: i64,
    to: i64,
) -> StoreResult<Vec<UsageInterval>> {
    let mut b = QueryBuilder::new("SELECT * FROM usage_intervals WHERE tenant_id = ");
    b.push_bind(tenant_id);
    if let Some(sid) = sandbox_id {
        b.push(" AND sandbox_id = ").push_bind(sid);
    }
    b.push(" AND started_at < ")
        .push_bind(to)
        .push(" AND (ended_at IS NULL OR ended_at > ")
        .push_bind(from)
        .push(") ORDER BY started_at");
    b.build()
        .fetch_all(pool)
        .await?
        .iter()
        .map(usage_from_row)
        .collect()
}
