//! Deployments and their versions; the `Store` impl in `mod.rs` calls
//! them.

use super::DbPool;
use super::DbRow;
use sqlx::Row;

use super::rows::{from_json, is_unique_violation, json};
use crate::model::{DeploymentListFilter, DeploymentRecord, DeploymentVersionRecord, DomainRecord};
use crate::store::{StoreError, StoreResult};

fn deployment_from_row(r: &DbRow) -> StoreResult<DeploymentRecord> {
    let metadata: String = r.try_get("metadata")?;
    Ok(DeploymentRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        slug: r.try_get("slug")?,
        state: r.try_get("state")?,
        active_version_id: r.try_get("active_version_id")?,
        instances: from_json(
            &r.try_get::<String, _>("instance_ids")?,
            "deployment instances",
        )?,
        replicas: u32::try_from(r.try_get::<i64, _>("replicas")?).unwrap_or(1),
        env: from_json(&r.try_get::<String, _>("env")?, "deployment env")?,
        metadata: from_json(&metadata, "deployment metadata")?,
        external_workspace_id: r.try_get("external_workspace_id")?,
        external_user_id: r.try_get("external_user_id")?,
        external_project_id: r.try_get("external_project_id")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn version_from_row(r: &DbRow) -> StoreResult<DeploymentVersionRecord> {
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
        build_command: r.try_get("build_command")?,
        build_log: r.try_get("build_log")?,
        output_path: r.try_get("output_path")?,
        error: r.try_get("error")?,
        promoted_at: r.try_get("promoted_at")?,
        created_at: r.try_get("created_at")?,
    })
}

/// Inserts or replaces a deployment (the row is the record).
pub(super) async fn put(pool: &DbPool, d: &DeploymentRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO deployments (id, tenant_id, name, slug, state, active_version_id, \
         instance_ids, metadata, created_at, updated_at, replicas, env, external_workspace_id, \
         external_user_id, external_project_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (id) DO UPDATE SET name = $3, state = $5, active_version_id = $6, \
         instance_ids = $7, metadata = $8, updated_at = $10, replicas = $11, env = $12",
    )
    .bind(&d.id)
    .bind(&d.tenant_id)
    .bind(&d.name)
    .bind(&d.slug)
    .bind(&d.state)
    .bind(&d.active_version_id)
    .bind(json(&d.instances))
    .bind(json(&d.metadata))
    .bind(d.created_at)
    .bind(d.updated_at)
    .bind(i64::from(d.replicas))
    .bind(json(&d.env))
    .bind(&d.external_workspace_id)
    .bind(&d.external_user_id)
    .bind(&d.external_project_id)
    .execute(pool)
    .await
    .map_err(|e| match is_unique_violation(&e) {
        true => StoreError::Duplicate("deployment name"),
        false => e.into(),
    })?;
    Ok(())
}

pub(super) async fn get(pool: &DbPool, id: &str) -> StoreResult<Option<DeploymentRecord>> {
    sqlx::query("SELECT * FROM deployments WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(deployment_from_row)
        .transpose()
}

pub(super) async fn by_slug(pool: &DbPool, slug: &str) -> StoreResult<Option<DeploymentRecord>> {
    sqlx::query("SELECT * FROM deployments WHERE slug = $1")
        .bind(slug)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(deployment_from_row)
        .transpose()
}

pub(super) async fn list(
    pool: &DbPool,
    tenant: &str,
    f: &DeploymentListFilter,
) -> StoreResult<Vec<DeploymentRecord>> {
    sqlx::query(
        "SELECT * FROM deployments WHERE tenant_id = $1 AND ($2 IS NULL OR state = $2) \
         AND ($3 IS NULL OR external_workspace_id = $3) AND ($4 IS NULL OR external_user_id = $4) \
         AND ($5 IS NULL OR external_project_id = $5) \
         ORDER BY created_at DESC, id DESC LIMIT 1000",
    )
    .bind(tenant)
    .bind(&f.state)
    .bind(&f.external_workspace_id)
    .bind(&f.external_user_id)
    .bind(&f.external_project_id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(deployment_from_row)
    .collect()
}

pub(super) async fn running(pool: &DbPool) -> StoreResult<Vec<DeploymentRecord>> {
    sqlx::query("SELECT * FROM deployments WHERE state = 'running' ORDER BY created_at")
        .fetch_all(pool)
        .await?
        .iter()
        .map(deployment_from_row)
        .collect()
}

pub(super) async fn delete(pool: &DbPool, id: &str) -> StoreResult<()> {
    let mut tx = pool.begin().await?;
    for table in ["deployment_versions", "deployment_domains"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE deployment_id = $1"))
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM deployments WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn settle_interrupted(pool: &DbPool, error: &str, now: i64) -> StoreResult<u64> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query(
        "UPDATE deployment_versions SET state = 'failed', error = $1 WHERE state = 'building'",
    )
    .bind(error)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(
        "UPDATE deployments SET state = 'failed', updated_at = $1 \
         WHERE state IN ('pending', 'building') AND active_version_id IS NULL",
    )
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(n)
}

/// Inserts a version numbered one past the deployment's last; returns it.
pub(super) async fn insert_version(
    pool: &DbPool,
    v: &DeploymentVersionRecord,
) -> StoreResult<DeploymentVersionRecord> {
    let mut tx = pool.begin().await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(version_number), 0) + 1 FROM deployment_versions WHERE deployment_id = $1",
    )
    .bind(&v.deployment_id)
    .fetch_one(&mut *tx)
    .await?;
    let mut v = v.clone();
    v.version_number = n;
    sqlx::query(
        "INSERT INTO deployment_versions (id, deployment_id, tenant_id, version_number, state, \
         source_sandbox_id, snapshot_id, runtime_command, runtime_port, health_check_path, error, \
         promoted_at, created_at, build_command, build_log, output_path) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
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
    .bind(&v.build_command)
    .bind(&v.build_log)
    .bind(&v.output_path)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(v)
}

/// Writes a version's state, snapshot, build log, error and promotion
/// time.
pub(super) async fn update_version(pool: &DbPool, v: &DeploymentVersionRecord) -> StoreResult<()> {
    sqlx::query(
        "UPDATE deployment_versions SET state = $1, snapshot_id = $2, build_log = $3, error = $4, \
         promoted_at = $5 WHERE id = $6",
    )
    .bind(&v.state)
    .bind(&v.snapshot_id)
    .bind(&v.build_log)
    .bind(&v.error)
    .bind(v.promoted_at)
    .bind(&v.id)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn versions(
    pool: &DbPool,
    deployment_id: &str,
) -> StoreResult<Vec<DeploymentVersionRecord>> {
    sqlx::query(
        "SELECT * FROM deployment_versions WHERE deployment_id = $1 ORDER BY version_number DESC",
    )
    .bind(deployment_id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(version_from_row)
    .collect()
}

fn domain_from_row(r: &DbRow) -> StoreResult<DomainRecord> {
    Ok(DomainRecord {
        id: r.try_get("id")?,
        deployment_id: r.try_get("deployment_id")?,
        tenant_id: r.try_get("tenant_id")?,
        domain: r.try_get("domain")?,
        state: r.try_get("state")?,
        verification_token: r.try_get("verification_token")?,
        certificate_pem: r.try_get("certificate_pem")?,
        sealed_key: r.try_get("sealed_key")?,
        created_at: r.try_get("created_at")?,
        verified_at: r.try_get("verified_at")?,
    })
}

pub(super) async fn put_domain(pool: &DbPool, d: &DomainRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO deployment_domains (id, deployment_id, tenant_id, domain, state, \
         verification_token, certificate_pem, sealed_key, created_at, verified_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (id) DO UPDATE SET state = $5, certificate_pem = $7, sealed_key = $8, \
         verified_at = $10",
    )
    .bind(&d.id)
    .bind(&d.deployment_id)
    .bind(&d.tenant_id)
    .bind(&d.domain)
    .bind(&d.state)
    .bind(&d.verification_token)
    .bind(&d.certificate_pem)
    .bind(&d.sealed_key)
    .bind(d.created_at)
    .bind(d.verified_at)
    .execute(pool)
    .await
    .map_err(|e| match is_unique_violation(&e) {
        true => StoreError::Duplicate("domain"),
        false => e.into(),
    })?;
    Ok(())
}

pub(super) async fn delete_domain(pool: &DbPool, id: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM deployment_domains WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Domains matching `cond` (a condition with one `?1`, bound to `arg`).
pub(super) async fn domains(
    pool: &DbPool,
    cond: &'static str,
    arg: &str,
) -> StoreResult<Vec<DomainRecord>> {
    sqlx::query(&format!("SELECT * FROM deployment_domains WHERE {cond}"))
        .bind(arg)
        .fetch_all(pool)
        .await?
        .iter()
        .map(domain_from_row)
        .collect()
}
