//! Deployments and their versions; the `Store` impl in `mod.rs` calls
//! them.

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

use super::rows::{from_json, is_unique_violation, json};
use crate::model::{DeploymentRecord, DeploymentVersionRecord};
use crate::store::{StoreError, StoreResult};

fn deployment_from_row(r: &SqliteRow) -> StoreResult<DeploymentRecord> {
    let metadata: String = r.try_get("metadata")?;
    Ok(DeploymentRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        slug: r.try_get("slug")?,
        state: r.try_get("state")?,
        active_version_id: r.try_get("active_version_id")?,
        active_instance_id: r.try_get("active_instance_id")?,
        metadata: from_json(&metadata, "deployment metadata")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn version_from_row(r: &SqliteRow) -> StoreResult<DeploymentVersionRecord> {
    let port: i64 = r.try_get("runtime_port")?;
    Ok(DeploymentVersionRecord {
        id: r.try_get("id")?,
        deployment_id: r.try_get("deployment_id")?,
        tenant_id: r.try_get("tenant_id")?,
        version_number: r.try_get("version_number")?,
        state: r.try_get("state")?,
        source_sandbox_id: r.try_get("source_sandbox_id")?,
        snapshot_id: r.try_get("snapshot_id")?,
        runtime_command: r.try_get("runtime_command")?,
        runtime_port: u16::try_from(port).unwrap_or(0),
        health_check_path: r.try_get("health_check_path")?,
        error: r.try_get("error")?,
        promoted_at: r.try_get("promoted_at")?,
        created_at: r.try_get("created_at")?,
    })
}

/// Inserts or replaces a deployment (the row is the record).
pub(super) async fn put(pool: &SqlitePool, d: &DeploymentRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO deployments (id, tenant_id, name, slug, state, active_version_id, \
         active_instance_id, metadata, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT (id) DO UPDATE SET name = ?3, state = ?5, active_version_id = ?6, \
         active_instance_id = ?7, metadata = ?8, updated_at = ?10",
    )
    .bind(&d.id)
    .bind(&d.tenant_id)
    .bind(&d.name)
    .bind(&d.slug)
    .bind(&d.state)
    .bind(&d.active_version_id)
    .bind(&d.active_instance_id)
    .bind(json(&d.metadata))
    .bind(d.created_at)
    .bind(d.updated_at)
    .execute(pool)
    .await
    .map_err(|e| match is_unique_violation(&e) {
        true => StoreError::Duplicate("deployment name"),
        false => e.into(),
    })?;
    Ok(())
}

pub(super) async fn get(pool: &SqlitePool, id: &str) -> StoreResult<Option<DeploymentRecord>> {
    sqlx::query("SELECT * FROM deployments WHERE id = ?")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(deployment_from_row)
        .transpose()
}

pub(super) async fn by_slug(
    pool: &SqlitePool,
    slug: &str,
) -> StoreResult<Option<DeploymentRecord>> {
    sqlx::query("SELECT * FROM deployments WHERE slug = ?")
        .bind(slug)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(deployment_from_row)
        .transpose()
}

pub(super) async fn list(
    pool: &SqlitePool,
    tenant: &str,
    state: Option<&str>,
) -> StoreResult<Vec<DeploymentRecord>> {
    sqlx::query(
        "SELECT * FROM deployments WHERE tenant_id = ?1 AND (?2 IS NULL OR state = ?2) \
         ORDER BY created_at DESC, id DESC LIMIT 1000",
    )
    .bind(tenant)
    .bind(state)
    .fetch_all(pool)
    .await?
    .iter()
    .map(deployment_from_row)
    .collect()
}

pub(super) async fn running(pool: &SqlitePool) -> StoreResult<Vec<DeploymentRecord>> {
    sqlx::query("SELECT * FROM deployments WHERE state = 'running' ORDER BY created_at")
        .fetch_all(pool)
        .await?
        .iter()
        .map(deployment_from_row)
        .collect()
}

pub(super) async fn delete(pool: &SqlitePool, id: &str) -> StoreResult<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM deployment_versions WHERE deployment_id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM deployments WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Inserts a version numbered one past the deployment's last; returns it.
pub(super) async fn insert_version(
    pool: &SqlitePool,
    v: &DeploymentVersionRecord,
) -> StoreResult<DeploymentVersionRecord> {
    let mut tx = pool.begin().await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(version_number), 0) + 1 FROM deployment_versions WHERE deployment_id = ?",
    )
    .bind(&v.deployment_id)
    .fetch_one(&mut *tx)
    .await?;
    let mut v = v.clone();
    v.version_number = n;
    sqlx::query(
        "INSERT INTO deployment_versions (id, deployment_id, tenant_id, version_number, state, \
         source_sandbox_id, snapshot_id, runtime_command, runtime_port, health_check_path, error, \
         promoted_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&v.id)
    .bind(&v.deployment_id)
    .bind(&v.tenant_id)
    .bind(v.version_number)
    .bind(&v.state)
    .bind(&v.source_sandbox_id)
    .bind(&v.snapshot_id)
    .bind(&v.runtime_command)
    .bind(i64::from(v.runtime_port))
    .bind(&v.health_check_path)
    .bind(&v.error)
    .bind(v.promoted_at)
    .bind(v.created_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(v)
}

/// Writes a version's state, snapshot, error and promotion time.
pub(super) async fn update_version(
    pool: &SqlitePool,
    v: &DeploymentVersionRecord,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE deployment_versions SET state = ?, snapshot_id = ?, error = ?, promoted_at = ? \
         WHERE id = ?",
    )
    .bind(&v.state)
    .bind(&v.snapshot_id)
    .bind(&v.error)
    .bind(v.promoted_at)
    .bind(&v.id)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn versions(
    pool: &SqlitePool,
    deployment_id: &str,
) -> StoreResult<Vec<DeploymentVersionRecord>> {
    sqlx::query(
        "SELECT * FROM deployment_versions WHERE deployment_id = ? ORDER BY version_number DESC",
    )
    .bind(deployment_id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(version_from_row)
    .collect()
}
