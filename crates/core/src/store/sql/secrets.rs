//! Secrets and bindings: the vault's queries (values only ever sealed);
//! the `Store` impl in `mod.rs` calls them.

use super::DbRow;
use super::{DbPool, DIALECT};
use sqlx::Row;

use super::rows::{from_json, is_unique_violation, json};
use crate::model::{SecretBindingRecord, SecretRecord};
use crate::store::{SecretFilter, StoreError, StoreResult};

fn secret_from_row(r: &DbRow) -> StoreResult<SecretRecord> {
    let metadata: String = r.try_get("metadata")?;
    Ok(SecretRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        scope: r.try_get("scope")?,
        sealed: r.try_get("sealed")?,
        value_prefix: r.try_get("value_prefix")?,
        last4: r.try_get("last4")?,
        expose_as_env: r.try_get("expose_as_env")?,
        resource_id: r.try_get("resource_id")?,
        resource_type: r.try_get("resource_type")?,
        metadata: from_json(&metadata, "secret metadata")?,
        created_at: r.try_get("created_at")?,
        rotated_at: r.try_get("rotated_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

fn binding_from_row(r: &DbRow) -> StoreResult<SecretBindingRecord> {
    Ok(SecretBindingRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        secret_id: r.try_get("secret_id")?,
        resource_id: r.try_get("resource_id")?,
        resource_type: r.try_get("resource_type")?,
        expose_as_env: r.try_get("expose_as_env")?,
        created_at: r.try_get("created_at")?,
    })
}

pub(super) async fn insert(pool: &DbPool, s: &SecretRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO secrets (id, tenant_id, name, kind, scope, sealed, value_prefix, last4, \
         expose_as_env, resource_id, resource_type, metadata, created_at, rotated_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(&s.id)
    .bind(&s.tenant_id)
    .bind(&s.name)
    .bind(&s.kind)
    .bind(&s.scope)
    .bind(&s.sealed)
    .bind(&s.value_prefix)
    .bind(&s.last4)
    .bind(&s.expose_as_env)
    .bind(&s.resource_id)
    .bind(&s.resource_type)
    .bind(json(&s.metadata))
    .bind(s.created_at)
    .bind(s.rotated_at)
    .bind(s.expires_at)
    .execute(pool)
    .await
    .map_err(|e| match is_unique_violation(&e) {
        true => StoreError::Duplicate("secret name"),
        false => e.into(),
    })?;
    Ok(())
}

pub(super) async fn get(
    pool: &DbPool,
    tenant: &str,
    id: &str,
) -> StoreResult<Option<SecretRecord>> {
    sqlx::query("SELECT * FROM secrets WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(secret_from_row)
        .transpose()
}

pub(super) async fn named(
    pool: &DbPool,
    tenant: &str,
    names: &[String],
) -> StoreResult<Vec<SecretRecord>> {
    let mut q = sqlx::QueryBuilder::new("SELECT * FROM secrets WHERE tenant_id = ");
    q.push_bind(tenant).push(" AND name IN (");
    let mut sep = q.separated(", ");
    for n in names {
        sep.push_bind(n);
    }
    q.push(")");
    if names.is_empty() {
        return Ok(Vec::new());
    }
    q.build()
        .fetch_all(pool)
        .await?
        .iter()
        .map(secret_from_row)
        .collect()
}

pub(super) async fn list(
    pool: &DbPool,
    tenant: &str,
    f: &SecretFilter,
    limit: u32,
) -> StoreResult<Vec<SecretRecord>> {
    sqlx::query(
        "SELECT * FROM secrets WHERE tenant_id = $1 \
         AND ($2 IS NULL OR resource_id = $2) AND ($3 IS NULL OR resource_type = $3) \
         AND ($4 IS NULL OR kind = $4) AND ($5 IS NULL OR scope = $5) \
         ORDER BY created_at, id LIMIT $6",
    )
    .bind(tenant)
    .bind(&f.resource_id)
    .bind(&f.resource_type)
    .bind(&f.kind)
    .bind(&f.scope)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?
    .iter()
    .map(secret_from_row)
    .collect()
}

pub(super) async fn update(pool: &DbPool, s: &SecretRecord) -> StoreResult<()> {
    sqlx::query(
        "UPDATE secrets SET sealed = $1, value_prefix = $2, last4 = $3, rotated_at = $4, \
         expires_at = $5 WHERE tenant_id = $6 AND id = $7",
    )
    .bind(&s.sealed)
    .bind(&s.value_prefix)
    .bind(&s.last4)
    .bind(s.rotated_at)
    .bind(s.expires_at)
    .bind(&s.tenant_id)
    .bind(&s.id)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn delete(pool: &DbPool, tenant: &str, id: &str) -> StoreResult<bool> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM secret_bindings WHERE tenant_id = $1 AND secret_id = $2")
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let n = sqlx::query("DELETE FROM secrets WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n > 0)
}

pub(super) async fn count(pool: &DbPool, tenant: &str) -> StoreResult<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM secrets WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) async fn insert_binding(pool: &DbPool, b: &SecretBindingRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO secret_bindings (id, tenant_id, secret_id, resource_id, resource_type, \
         expose_as_env, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&b.id)
    .bind(&b.tenant_id)
    .bind(&b.secret_id)
    .bind(&b.resource_id)
    .bind(&b.resource_type)
    .bind(&b.expose_as_env)
    .bind(b.created_at)
    .execute(pool)
    .await
    .map_err(|e| match is_unique_violation(&e) {
        true => StoreError::Duplicate("binding of that variable"),
        false => e.into(),
    })?;
    Ok(())
}

pub(super) async fn list_bindings(
    pool: &DbPool,
    tenant: &str,
    f: &SecretFilter,
    limit: u32,
) -> StoreResult<Vec<SecretBindingRecord>> {
    sqlx::query(
        "SELECT * FROM secret_bindings WHERE tenant_id = $1 \
         AND ($2 IS NULL OR resource_id = $2) AND ($3 IS NULL OR resource_type = $3) \
         AND ($4 IS NULL OR secret_id = $4) ORDER BY created_at, id LIMIT $5",
    )
    .bind(tenant)
    .bind(&f.resource_id)
    .bind(&f.resource_type)
    .bind(&f.secret_id)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?
    .iter()
    .map(binding_from_row)
    .collect()
}

pub(super) async fn delete_binding(pool: &DbPool, tenant: &str, id: &str) -> StoreResult<bool> {
    let n = sqlx::query("DELETE FROM secret_bindings WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(n > 0)
}

pub(super) async fn bound(
    pool: &DbPool,
    tenant: &str,
    resource_type: &str,
    resource_id: &str,
) -> StoreResult<Vec<(SecretBindingRecord, SecretRecord)>> {
    let bindings = list_bindings(
        pool,
        tenant,
        &SecretFilter {
            resource_id: Some(resource_id.to_string()),
            resource_type: Some(resource_type.to_string()),
            ..Default::default()
        },
        u32::MAX,
    )
    .await?;
    if bindings.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = bindings.iter().map(|b| b.secret_id.as_str()).collect();
    let (elements, end) = DIALECT.json_elements();
    let sql = format!(
        "SELECT * FROM secrets WHERE tenant_id = $1 AND id IN (SELECT value FROM {elements}$2{end})"
    );
    let secrets: Vec<SecretRecord> = sqlx::query(&sql)
        .bind(tenant)
        .bind(json(&ids))
        .fetch_all(pool)
        .await?
        .iter()
        .map(secret_from_row)
        .collect::<StoreResult<_>>()?;
    Ok(bindings
        .into_iter()
        .filter_map(|b| {
            let s = secrets.iter().find(|s| s.id == b.secret_id)?.clone();
            Some((b, s))
        })
        .collect())
}
