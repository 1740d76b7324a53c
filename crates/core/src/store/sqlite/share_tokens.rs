//! Share-token queries behind listing and revocation (a sandbox's tokens,
//! one token by id); the `Store` impl in `mod.rs` calls them.

use sqlx::SqlitePool;

use super::rows::preview_token_from_row;
use crate::model::PreviewTokenRecord;
use crate::store::StoreResult;

pub(super) async fn get(pool: &SqlitePool, id: &str) -> StoreResult<Option<PreviewTokenRecord>> {
    sqlx::query("SELECT * FROM preview_tokens WHERE id = ?")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(preview_token_from_row)
        .transpose()
}

pub(super) async fn list(
    pool: &SqlitePool,
    sandbox_id: &str,
    preview_id: Option<&str>,
    limit: u32,
) -> StoreResult<Vec<PreviewTokenRecord>> {
    sqlx::query(
        "SELECT * FROM preview_tokens WHERE sandbox_id = ?1 AND (?2 IS NULL OR preview_id = ?2) \
         ORDER BY created_at DESC, rowid DESC LIMIT ?3",
    )
    .bind(sandbox_id)
    .bind(preview_id)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?
    .iter()
    .map(preview_token_from_row)
    .collect()
}

pub(super) async fn revoke_sandbox(
    pool: &SqlitePool,
    sandbox_id: &str,
    now: i64,
) -> StoreResult<u64> {
    let r = sqlx::query(
        "UPDATE preview_tokens SET revoked_at = ? WHERE sandbox_id = ? AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(sandbox_id)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

pub(super) async fn revoke_one(pool: &SqlitePool, id: &str, now: i64) -> StoreResult<bool> {
    let r =
        sqlx::query("UPDATE preview_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(pool)
            .await?;
    Ok(r.rows_affected() == 1)
}
