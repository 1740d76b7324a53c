//! The nodes sharing the database: registration, heartbeats, the sweep
//! that finds lost ones, and what each node's sandboxes take of it.

use std::collections::BTreeMap;

use super::rows::{from_json, json, load_from_row, LOAD_SUMS};
use super::{DbPool, DbRow};
use sqlx::Row;

use crate::model::{NodeLoad, NodeRecord, NodeState};
use crate::store::{StoreError, StoreResult};

fn from_row(r: &DbRow) -> StoreResult<NodeRecord> {
    let state: String = r.try_get("state")?;
    let labels: BTreeMap<String, String> = from_json(r.try_get("labels")?, "node labels")?;
    Ok(NodeRecord {
        id: r.try_get("id")?,
        api_url: r.try_get("api_url")?,
        proxy_url: r.try_get("proxy_url")?,
        vcpus: r.try_get::<i64, _>("vcpus")? as u32,
        memory_mb: r.try_get::<i64, _>("memory_mb")? as u64,
        disk_mb: r.try_get::<i64, _>("disk_mb")? as u64,
        labels,
        state: NodeState::parse(&state).ok_or(StoreError::Corrupt {
            what: "node state",
            source: None,
        })?,
        started_at: r.try_get("started_at")?,
        heartbeat_at: r.try_get("heartbeat_at")?,
    })
}

/// Inserts the node or replaces what it says of itself (a restart).
pub(super) async fn put(pool: &DbPool, n: &NodeRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO nodes (id, api_url, proxy_url, vcpus, memory_mb, disk_mb, labels, state, \
         started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (id) DO UPDATE SET api_url = $2, proxy_url = $3, vcpus = $4, \
         memory_mb = $5, disk_mb = $6, labels = $7, state = $8, started_at = $9, \
         heartbeat_at = $10",
    )
    .bind(&n.id)
    .bind(&n.api_url)
    .bind(&n.proxy_url)
    .bind(i64::from(n.vcpus))
    .bind(n.memory_mb as i64)
    .bind(n.disk_mb as i64)
    .bind(json(&n.labels))
    .bind(n.state.as_str())
    .bind(n.started_at)
    .bind(n.heartbeat_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a heartbeat; the node's state as the cluster sees it (`None`:
/// not registered).
pub(super) async fn heartbeat(pool: &DbPool, id: &str, now: i64) -> StoreResult<Option<NodeState>> {
    let state: Option<String> =
        sqlx::query_scalar("UPDATE nodes SET heartbeat_at = $1 WHERE id = $2 RETURNING state")
            .bind(now)
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(state.as_deref().and_then(NodeState::parse))
}

pub(super) async fn list(pool: &DbPool) -> StoreResult<Vec<NodeRecord>> {
    sqlx::query("SELECT * FROM nodes ORDER BY started_at, id")
        .fetch_all(pool)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// Moves a node from one of `from` to `to`; false when it was in none.
pub(super) async fn set_state(
    pool: &DbPool,
    id: &str,
    from: &[NodeState],
    to: NodeState,
) -> StoreResult<bool> {
    if from.is_empty() {
        return Ok(false);
    }
    let mut b = sqlx::QueryBuilder::new("UPDATE nodes SET state = ");
    b.push_bind(to.as_str())
        .push(" WHERE id = ")
        .push_bind(id)
        .push(" AND state IN (");
    let mut states = b.separated(", ");
    for s in from {
        states.push_bind(s.as_str());
    }
    b.push(")");
    Ok(b.build().execute(pool).await?.rows_affected() == 1)
}

/// Marks `lost` every active or draining node whose last heartbeat is
/// before `cutoff`, and answers them: one statement, so of several nodes
/// sweeping at once exactly one sees each.
pub(super) async fn mark_lost(pool: &DbPool, cutoff: i64) -> StoreResult<Vec<NodeRecord>> {
    sqlx::query(
        "UPDATE nodes SET state = 'lost' \
         WHERE state IN ('active', 'draining') AND heartbeat_at < $1 RETURNING *",
    )
    .bind(cutoff)
    .fetch_all(pool)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

/// What each node's sandboxes take, by node id.
pub(super) async fn loads(pool: &DbPool) -> StoreResult<BTreeMap<String, NodeLoad>> {
    let sql = format!(
        "SELECT node_id, {LOAD_SUMS} FROM sandboxes \
         WHERE state != 'destroyed' AND node_id IS NOT NULL GROUP BY node_id"
    );
    let mut out = BTreeMap::new();
    for r in &sqlx::query(&sql).fetch_all(pool).await? {
        out.insert(r.try_get("node_id")?, load_from_row(r)?);
    }
    Ok(out)
}
