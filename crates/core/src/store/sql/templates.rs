//! Templates and their builds: the `Store` impl in `mod.rs` calls them.

use super::DbPool;

use super::rows::*;
use crate::model::{BuildRecord, TemplateRecord};
use crate::store::{StoreError, StoreResult};

pub(super) async fn insert_template(pool: &DbPool, t: &TemplateRecord) -> StoreResult<()> {
    let r = sqlx::query(
        "INSERT INTO templates (id, tenant_id, name, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&t.id)
    .bind(&t.tenant_id)
    .bind(&t.name)
    .bind(t.created_at)
    .execute(pool)
    .await;
    match r {
        Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate("template name")),
        r => r.map(|_| ()).map_err(StoreError::from),
    }
}

pub(super) async fn get_template(pool: &DbPool, id: &str) -> StoreResult<Option<TemplateRecord>> {
    sqlx::query("SELECT * FROM templates WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(template_from_row)
        .transpose()
}

pub(super) async fn template_by_name(
    pool: &DbPool,
    tenant_id: &str,
    name: &str,
) -> StoreResult<Option<TemplateRecord>> {
    sqlx::query("SELECT * FROM templates WHERE tenant_id = $1 AND name = $2")
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(template_from_row)
        .transpose()
}

pub(super) async fn list_templates(
    pool: &DbPool,
    tenant_id: &str,
) -> StoreResult<Vec<TemplateRecord>> {
    sqlx::query("SELECT * FROM templates WHERE tenant_id = $1 ORDER BY created_at, id")
        .bind(tenant_id)
        .fetch_all(pool)
        .await?
        .iter()
        .map(template_from_row)
        .collect()
}

pub(super) async fn insert_build(pool: &DbPool, b: &BuildRecord) -> StoreResult<u32> {
    let spec = serde_json::to_string(&b.spec).map_err(|e| StoreError::Corrupt {
        what: "build spec",
        source: Some(e),
    })?;
    // One statement: two concurrent builds never get the same version.
    let version: i64 = sqlx::query_scalar(
        "INSERT INTO template_builds \
         (id, template_id, tenant_id, version, state, spec, error, created_at, started_at, finished_at) \
         VALUES ($1, $2, $3, \
         (SELECT COALESCE(MAX(version), 0) + 1 FROM template_builds WHERE template_id = $4), \
         $5, $6, $7, $8, $9, $10) RETURNING version",
    )
    .bind(&b.id)
    .bind(&b.template_id)
    .bind(&b.tenant_id)
    .bind(&b.template_id)
    .bind(b.state.as_str())
    .bind(spec)
    .bind(&b.error)
    .bind(b.created_at)
    .bind(b.started_at)
    .bind(b.finished_at)
    .fetch_one(pool)
    .await?;
    Ok(version as u32)
}

pub(super) async fn update_build(pool: &DbPool, b: &BuildRecord) -> StoreResult<()> {
    sqlx::query(
        "UPDATE template_builds SET state = $1, error = $2, started_at = $3, finished_at = $4 \
         WHERE id = $5",
    )
    .bind(b.state.as_str())
    .bind(&b.error)
    .bind(b.started_at)
    .bind(b.finished_at)
    .bind(&b.id)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn get_build(pool: &DbPool, id: &str) -> StoreResult<Option<BuildRecord>> {
    sqlx::query("SELECT * FROM template_builds WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(build_from_row)
        .transpose()
}

pub(super) async fn list_builds(pool: &DbPool, template_id: &str) -> StoreResult<Vec<BuildRecord>> {
    sqlx::query("SELECT * FROM template_builds WHERE template_id = $1 ORDER BY version DESC")
        .bind(template_id)
        .fetch_all(pool)
        .await?
        .iter()
        .map(build_from_row)
        .collect()
}

pub(super) async fn fail_unfinished_builds(
    pool: &DbPool,
    error: &str,
    now: i64,
) -> StoreResult<u64> {
    let r = sqlx::query(
        "UPDATE template_builds SET state = 'failed', error = $1, finished_at = $2 \
         WHERE state NOT IN ('ready', 'failed')",
    )
    .bind(error)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}
