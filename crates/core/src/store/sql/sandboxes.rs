//! Sandbox rows: insert, replace, touch, look up, list with filters, and
//! the live ones re-adopted at start; the `Store` impl in `mod.rs` calls
//! them.

use super::{Db, DbPool, DIALECT};
use sqlx::QueryBuilder;

use super::rows::*;
use crate::model::{Page, SandboxFilter, SandboxRecord};
use crate::store::{StoreError, StoreResult};

pub(super) async fn insert_sandbox(pool: &DbPool, s: &SandboxRecord) -> StoreResult<()> {
    let mut b = QueryBuilder::new(format!(
        "INSERT INTO sandboxes ({SANDBOX_COLUMNS}) VALUES ("
    ));
    push_sandbox_values(&mut b, s);
    b.push(")");
    match b.build().execute(pool).await {
        Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate("sandbox name")),
        r => r.map(|_| ()).map_err(StoreError::from),
    }
}

pub(super) async fn update_sandbox(pool: &DbPool, s: &SandboxRecord) -> StoreResult<()> {
    // One statement for every field: the row is the record.
    let mut b = QueryBuilder::new(format!(
        "INSERT INTO sandboxes ({SANDBOX_COLUMNS}) VALUES ("
    ));
    push_sandbox_values(&mut b, s);
    b.push(format!(
        ") ON CONFLICT (id) DO UPDATE SET {}",
        upsert_set(SANDBOX_COLUMNS)
    ));
    match b.build().execute(pool).await {
        Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate("sandbox name")),
        r => r.map(|_| ()).map_err(StoreError::from),
    }
}

pub(super) async fn touch_sandbox(pool: &DbPool, id: &str, at: i64) -> StoreResult<()> {
    let sql = format!(
        "UPDATE sandboxes SET last_activity_at = {}(last_activity_at, $1) WHERE id = $2",
        DIALECT.greatest()
    );
    sqlx::query(&sql).bind(at).bind(id).execute(pool).await?;
    Ok(())
}

pub(super) async fn get_sandbox(pool: &DbPool, id: &str) -> StoreResult<Option<SandboxRecord>> {
    sqlx::query("SELECT * FROM sandboxes WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(sandbox_from_row)
        .transpose()
}

pub(super) async fn sandbox_by_name(
    pool: &DbPool,
    tenant_id: &str,
    name: &str,
) -> StoreResult<Option<SandboxRecord>> {
    sqlx::query(
        "SELECT * FROM sandboxes WHERE tenant_id = $1 AND name = $2 \
         ORDER BY state = 'destroyed', created_at DESC LIMIT 1",
    )
    .bind(tenant_id)
    .bind(name)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(sandbox_from_row)
    .transpose()
}

pub(super) async fn list_sandboxes(
    pool: &DbPool,
    tenant_id: &str,
    f: &SandboxFilter,
    page: Page,
) -> StoreResult<(Vec<SandboxRecord>, u64)> {
    fn filtered<'a>(head: &str, tenant_id: &'a str, f: &'a SandboxFilter) -> QueryBuilder<'a, Db> {
        let mut b = QueryBuilder::new(head);
        b.push(" FROM sandboxes WHERE tenant_id = ")
            .push_bind(tenant_id);
        if let Some(s) = f.state {
            b.push(" AND state = ").push_bind(s.as_str());
        }
        for (col, v) in [
            ("external_workspace_id", &f.external_workspace_id),
            ("external_user_id", &f.external_user_id),
            ("external_project_id", &f.external_project_id),
            ("template_id", &f.template_id),
        ] {
            if let Some(v) = v {
                b.push(format!(" AND {col} = ")).push_bind(v.as_str());
            }
        }
        match &f.deployment {
            None => {
                b.push(" AND deployment_id IS NULL");
            }
            Some(crate::model::DeploymentFilter::All) => {}
            Some(crate::model::DeploymentFilter::Of(d)) => {
                b.push(" AND deployment_id = ").push_bind(d.as_str());
            }
        }
        let (elements, end) = DIALECT.json_elements();
        if let Some(ids) = &f.ids {
            b.push(format!(" AND id IN (SELECT value FROM {elements}"))
                .push_bind(json(ids))
                .push(format!("{end})"));
        }
        for tag in &f.tags {
            b.push(format!(
                " AND EXISTS (SELECT 1 FROM {elements}sandboxes.tags{end} WHERE value = "
            ))
            .push_bind(tag.as_str())
            .push(")");
        }
        b
    }
    let total: i64 = filtered("SELECT COUNT(*)", tenant_id, f)
        .build_query_scalar()
        .fetch_one(pool)
        .await?;
    let mut b = filtered("SELECT *", tenant_id, f);
    b.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(i64::from(page.page_size))
        .push(" OFFSET ")
        .push_bind(page.offset() as i64);
    let rows = b.build().fetch_all(pool).await?;
    let list = rows
        .iter()
        .map(sandbox_from_row)
        .collect::<StoreResult<_>>()?;
    Ok((list, total as u64))
}

/// The sandboxes not destroyed that `node` runs, and (`unassigned`) those
/// made before nodes existed.
pub(super) async fn live_sandboxes(
    pool: &DbPool,
    node: &str,
    unassigned: bool,
) -> StoreResult<Vec<SandboxRecord>> {
    sqlx::query(
        "SELECT * FROM sandboxes WHERE state != 'destroyed' \
         AND (node_id = $1 OR ($2 AND node_id IS NULL)) ORDER BY created_at",
    )
    .bind(node)
    .bind(unassigned)
    .fetch_all(pool)
    .await?
    .iter()
    .map(sandbox_from_row)
    .collect()
}
