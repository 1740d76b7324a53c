//! Scoped tokens: stored by hash, listed and revoked per tenant, revoked
//! with the key that minted them; the `Store` impl in `mod.rs` calls them.

use super::DbPool;
use super::DbRow;
use sqlx::Row;

use super::rows::{from_json, json};
use crate::model::ScopedTokenRecord;
use crate::store::StoreResult;

fn from_row(r: &DbRow) -> StoreResult<ScopedTokenRecord> {
    let scopes: String = r.try_get("scopes")?;
    let sandbox_ids: Option<String> = r.try_get("sandbox_ids")?;
    Ok(ScopedTokenRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        minted_by: r.try_get("minted_by")?,
        user_id: r.try_get("user_id")?,
        workspace_id: r.try_get("workspace_id")?,
        scopes: from_json(&scopes, "token scopes")?,
        sandbox_ids: sandbox_ids
            .map(|s| from_json(&s, "token sandbox ids"))
            .transpose()?,
        hash: r.try_get("hash")?,
        prefix: r.try_get("prefix")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

pub(super) async fn insert(pool: &DbPool, t: &ScopedTokenRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO scoped_tokens (id, tenant_id, minted_by, user_id, workspace_id, scopes, \
         sandbox_ids, hash, prefix, created_at, expires_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&t.id)
    .bind(&t.tenant_id)
    .bind(&t.minted_by)
    .bind(&t.user_id)
    .bind(&t.workspace_id)
    .bind(json(&t.scopes))
    .bind(t.sandbox_ids.as_ref().map(json))
    .bind(&t.hash)
    .bind(&t.prefix)
    .bind(t.created_at)
    .bind(t.expires_at)
    .bind(t.revoked_at)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn by_hash(pool: &DbPool, hash: &str) -> StoreResult<Option<ScopedTokenRecord>> {
    sqlx::query("SELECT * FROM scoped_tokens WHERE hash = $1")
        .bind(hash)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub(super) async fn get(
    pool: &DbPool,
    tenant: &str,
    id: &str,
) -> StoreResult<Option<ScopedTokenRecord>> {
    sqlx::query("SELECT * FROM scoped_tokens WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub(super) async fn list(
    pool: &DbPool,
    tenant: &str,
    limit: u32,
) -> StoreResult<Vec<ScopedTokenRecord>> {
    sqlx::query(
        "SELECT * FROM scoped_tokens WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(tenant)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

pub(super) async fn revoke(pool: &DbPool, tenant: &str, id: &str, now: i64) -> StoreResult<bool> {
    let n = sqlx::query(
        "UPDATE scoped_tokens SET revoked_at = COALESCE(revoked_at, $1) \
         WHERE tenant_id = $2 AND id = $3",
    )
    .bind(now)
    .bind(tenant)
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n > 0)
}

pub(super) async fn revoke_minted_by(pool: &DbPool, key_id: &str, now: i64) -> StoreResult<u64> {
    Ok(sqlx::query(
        "UPDATE scoped_tokens SET revoked_at = $1 WHERE minted_by = $2 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(key_id)
    .execute(pool)
    .await?
    .rows_affected())
}
