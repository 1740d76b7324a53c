//! The audit log's queries: append, read a tenant's entries after a
//! cursor, and drop those past retention; the `Store` impl in `mod.rs`
//! calls them.

use super::DbPool;
use super::DbRow;
use sqlx::Row;

use super::rows::{from_json, json};
use crate::model::AuditRecord;
use crate::store::{AuditFilter, StoreResult};

fn from_row(r: &DbRow) -> StoreResult<AuditRecord> {
    let details: String = r.try_get("details")?;
    Ok(AuditRecord {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        kind: r.try_get("kind")?,
        actor_type: r.try_get("actor_type")?,
        actor_id: r.try_get("actor_id")?,
        resource_type: r.try_get("resource_type")?,
        resource_id: r.try_get("resource_id")?,
        request_id: r.try_get("request_id")?,
        ip: r.try_get("ip")?,
        at: r.try_get("at")?,
        outcome: r.try_get("outcome")?,
        error_code: r.try_get("error_code")?,
        details: from_json(&details, "audit details")?,
    })
}

pub(super) async fn append(pool: &DbPool, e: &AuditRecord) -> StoreResult<i64> {
    let seq = sqlx::query_scalar(
        "INSERT INTO audit_log (id, tenant_id, kind, actor_type, actor_id, resource_type, \
         resource_id, request_id, ip, at, outcome, error_code, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING seq",
    )
    .bind(&e.id)
    .bind(&e.tenant_id)
    .bind(&e.kind)
    .bind(&e.actor_type)
    .bind(&e.actor_id)
    .bind(&e.resource_type)
    .bind(&e.resource_id)
    .bind(&e.request_id)
    .bind(&e.ip)
    .bind(e.at)
    .bind(&e.outcome)
    .bind(&e.error_code)
    .bind(json(&e.details))
    .fetch_one(pool)
    .await?;
    Ok(seq)
}

pub(super) async fn after(
    pool: &DbPool,
    tenant: &str,
    f: &AuditFilter,
    after_seq: i64,
    limit: u32,
) -> StoreResult<Vec<AuditRecord>> {
    sqlx::query(
        "SELECT * FROM audit_log WHERE tenant_id = $1 AND seq > $2 \
         AND ($3 IS NULL OR kind = $3) AND ($4 IS NULL OR actor_id = $4) \
         AND ($5 IS NULL OR resource_type = $5) AND ($6 IS NULL OR resource_id = $6) \
         ORDER BY seq LIMIT $7",
    )
    .bind(tenant)
    .bind(after_seq)
    .bind(&f.kind)
    .bind(&f.actor_id)
    .bind(&f.resource_type)
    .bind(&f.resource_id)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

pub(super) async fn prune(pool: &DbPool, before: i64) -> StoreResult<u64> {
    Ok(sqlx::query("DELETE FROM audit_log WHERE at < $1")
        .bind(before)
        .execute(pool)
        .await?
        .rows_affected())
}
