//! Share-token queries behind listing and revocation (a sandbox's tokens,
//! one token by id); the `Store` impl in `mod.rs` calls them.

use super::{DbPool, DIALECT};

use super::rows::preview_token_from_row;
use crate::model::PreviewTokenRecord;
use crate::store::StoreResult;

pub(super) async fn get(pool: &DbPool, id: &str) -> StoreResult<Option<PreviewTokenRecord>> {
    sqlx::query("SELECT * FROM preview_tokens WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(preview_token_from_row)
        .transpose()
}

pub(super) async fn list(
    pool: &DbPool,
    sandbox_id: &str,
    preview_id: Option<&str>,
    limit: u32,
) -> StoreResult<Vec<PreviewTokenRecord>> {
    let sql = format!(
        "SELECT * FROM preview_tokens WHERE sandbox_id = $1 AND ($2 IS NULL OR preview_id = $2) \
         ORDER BY created_at DESC, {} DESC LIMIT $3",
        DIALECT.insertion_order()
    );
    sqlx::query(&sql)
        .bind(sandbox_id)
        .bind(preview_id)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?
        .iter()
        .map(preview_token_from_row)
        .collect()
}

pub(super) async fn revoke_sandbox(pool: &DbPool, sandbox_id: &str, now: i64) -> StoreResult<u64> {
    let r = sqlx::query(
        "UPDATE preview_tokens SET revoked_at = $1 WHERE sandbox_id = $2 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(sandbox_id)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

pub(super) async fn revoke_one(pool: &DbPool, id: &str, now: i64) -> StoreResult<bool> {
    let r = sqlx::query(
        "UPDATE preview_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}
