//! Templates and their builds: the `Store` impl in `mod.rs` calls them.

use sqlx::SqlitePool;

use super::rows::*;
use crate::model::{BuildRecord, TemplateRecord};
use crate::store::{StoreError, StoreResult};

pub(super) async fn insert_template(pool: &SqlitePool, t: &TemplateRecord) -> StoreResult<()> {
    let r =
        sqlx::query("INSERT INTO templates (id, tenant_id, name, created_at) VALUES (?, ?, ?, ?)")
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

pub(super) async fn get_template(
    pool: &SqlitePool,
    id: &str,
) -> StoreResult<Option<TemplateRecord>> {
    sqlx::query("SELECT * FROM templates WHERE id = ?")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(template_from_row)
        .transpose()
}

pub(super) async fn template_by_name(
    pool: &SqlitePool,
    tenant_id: &str,
    name: &str,
) -> StoreResult<Option<TemplateRecord>> {
    sqlx::query("SELECT * FROM templates WHERE tenant_id = ? AND name = ?")
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(template_from_row)
        .transpose()
}

pub(super) async fn list_templates(
    pool: &SqlitePool,
    tenant_id: &str,
) -> StoreResult<Vec<TemplateRecord>> {
    sqlx::query("SELECT * FROM templates WHERE tenant_id = ? ORDER BY created_at, id")
        .bind(tenant_id)
        .fetch_all(pool)
        .await?
        .iter()
        .map(template_from_row)
        .collect()
}

pub(super) async fn insert_build(pool: &SqlitePool, b: &BuildRecord) -> StoreResult<u32> {
    let spec = serde_json::to_string(&b.spec).map_err(|e| StoreError::Corrupt {
        what: "build spec",
        source: Some(e),
    })?;
    // One statement: two concurrent builds never get the same version.
    let version: i64 = sqlx::query_scalar(
        "INSERT INTO template_builds \
         (id, template_id, tenant_id, version, state, spec, error, created_at, started_at, finished_at) \
         VALUES (?, ?, ?, \
         (SELECT COALESCE(MAX(version), 0) + 1 FROM template_builds WHERE template_id = ?), \
         ?, ?, ?, ?, ?, ?) RETURNING version",
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

pub(super) async fn update_build(pool: &SqlitePool, b: &BuildRecord) -> StoreResult<()> {
    sqlx::query(
        "UPDATE template_builds SET state = ?, error = ?, started_at = ?, finished_at = ? \
         WHERE id = ?",
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

pub(super) async fn get_build(pool: &SqlitePool, id: &str) -> StoreResult<Option<BuildRecord>> {
    sqlx::query("SELECT * FROM template_builds WHERE id = ?")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(build_from_row)
        .transpose()
}

pub(super) async fn list_builds(
    pool: &SqlitePool,
    template_id: &str,
) -> StoreResult<Vec<BuildRecord>> {
    sqlx::query("SELECT * FROM template_builds WHERE template_id = ? ORDER BY version DESC")
        .bind(template_id)
        .fetch_all(pool)
        .await?
        .iter()
        .map(build_from_row)
        .collect()
}

pub(super) async fn fail_unfinished_builds(
    pool: &SqlitePool,
    error: &str,
    now: i64,
) -> StoreResult<u64> {
    let r = sqlx::query(
        "UPDATE template_builds SET state = 'failed', error = ?, finished_at = ? \
         WHERE state NOT IN ('ready', 'failed')",
    )
    .bind(error)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}
