//! The nodes sharing the database: registration, heartbeats, the sweep
//! that finds lost ones, and what each node's sandboxes take of it.

use std::collections::BTreeMap;

use super::rows::{from_json, json, load_from_row, LOAD_SUMS};
use super::{Db, DbPool, DbRow, DIALECT};
use sqlx::Row;

use crate::model::{NodeLoad, NodeRecord, NodeState, PlacementRecord};
use crate::store::PlacementChoice;
use crate::store::{StoreError, StoreResult};

fn from_row(r: &DbRow) -> StoreResult<NodeRecord> {
    let state: String = r.try_get("state")?;
    let labels: BTreeMap<String, String> = from_json(r.try_get("labels")?, "node labels")?;
    let templates: Vec<String> = from_json(r.try_get("templates")?, "node templates")?;
    Ok(NodeRecord {
        id: r.try_get("id")?,
        api_url: r.try_get("api_url")?,
        proxy_url: r.try_get("proxy_url")?,
        vcpus: r.try_get::<i64, _>("vcpus")? as u32,
        memory_mb: r.try_get::<i64, _>("memory_mb")? as u64,
        disk_mb: r.try_get::<i64, _>("disk_mb")? as u64,
        labels,
        templates,
        key_check: r.try_get("key_check")?,
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
         started_at, heartbeat_at, templates, key_check) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (id) DO UPDATE SET api_url = $2, proxy_url = $3, vcpus = $4, \
         memory_mb = $5, disk_mb = $6, labels = $7, state = $8, started_at = $9, \
         heartbeat_at = $10, templates = $11, key_check = $12",
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
    .bind(json(&n.templates))
    .bind(&n.key_check)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a heartbeat; the node's state as the cluster sees it (`None`:
/// not registered).
pub(super) async fn heartbeat(
    pool: &DbPool,
    id: &str,
    now: i64,
    templates: &[String],
) -> StoreResult<Option<NodeState>> {
    let state: Option<String> = sqlx::query_scalar(
        "UPDATE nodes SET heartbeat_at = $1, templates = $2 WHERE id = $3 RETURNING state",
    )
    .bind(now)
    .bind(json(&templates))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(state.as_deref().and_then(NodeState::parse))
}

pub(super) async fn list<'e>(
    ex: impl sqlx::Executor<'e, Database = Db>,
) -> StoreResult<Vec<NodeRecord>> {
    sqlx::query("SELECT * FROM nodes ORDER BY started_at, id")
        .fetch_all(ex)
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
pub(super) async fn loads<'e>(
    ex: impl sqlx::Executor<'e, Database = Db>,
) -> StoreResult<BTreeMap<String, NodeLoad>> {
    let sql = format!(
        "SELECT node_id, {LOAD_SUMS} FROM sandboxes \
         WHERE state != 'destroyed' AND node_id IS NOT NULL GROUP BY node_id"
    );
    let mut out = BTreeMap::new();
    for r in &sqlx::query(&sql).fetch_all(ex).await? {
        out.insert(r.try_get("node_id")?, load_from_row(r)?);
    }
    Ok(out)
}

/// One placement at a time (the dialect's lock, or SQLite's write lock
/// that the first statement, a write, takes): expired promises go, every
/// node is seen with its sandboxes' load plus its live promises, and the
/// promise `choose` makes is stored before the lock is let go.
pub(super) async fn place(
    pool: &DbPool,
    now: i64,
    choose: &PlacementChoice<'_>,
) -> StoreResult<Option<PlacementRecord>> {
    let mut tx = pool.begin().await?;
    if let Some(lock) = DIALECT.placement_lock() {
        sqlx::query(lock).execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM placements WHERE expires_at <= $1")
        .bind(now)
        .execute(&mut *tx)
        .await?;
    // Sandboxes and promises in one statement, so one snapshot: a create
    // that stores its sandbox and then drops its promise between two
    // reads would otherwise be counted by neither (PostgreSQL's read
    // committed), and its room promised again.
    let rows = sqlx::query(
        "SELECT node_id, COUNT(*) AS n, CAST(COALESCE(SUM(vcpus), 0) AS BIGINT) AS vcpus, \
         CAST(COALESCE(SUM(mem), 0) AS BIGINT) AS mem, \
         CAST(COALESCE(SUM(disk), 0) AS BIGINT) AS disk FROM ( \
           SELECT node_id, CASE WHEN state != 'paused' THEN cpu_count ELSE 0 END AS vcpus, \
             CASE WHEN state != 'paused' THEN memory_mb ELSE 0 END AS mem, \
             disk_size_mb AS disk \
           FROM sandboxes WHERE state != 'destroyed' AND node_id IS NOT NULL \
           UNION ALL \
           SELECT node_id, vcpus, memory_mb, disk_mb FROM placements \
         ) AS taken GROUP BY node_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut loads = BTreeMap::new();
    for r in &rows {
        loads.insert(r.try_get::<String, _>("node_id")?, load_from_row(r)?);
    }
    let nodes: Vec<(NodeRecord, NodeLoad)> = list(&mut *tx)
        .await?
        .into_iter()
        .map(|n| {
            let load = loads.get(&n.id).copied().unwrap_or_default();
            (n, load)
        })
        .collect();
    let chosen = choose(&nodes);
    if let Some(p) = &chosen {
        sqlx::query(
            "INSERT INTO placements (id, node_id, vcpus, memory_mb, disk_mb, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&p.id)
        .bind(&p.node_id)
        .bind(p.vcpus as i64)
        .bind(p.memory_mb as i64)
        .bind(p.disk_mb as i64)
        .bind(p.expires_at)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(chosen)
}

pub(super) async fn release(pool: &DbPool, id: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM placements WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records a replica, only while the sandbox is paused from that pause.
pub(super) async fn put_replica(
    pool: &DbPool,
    id: &str,
    node: &str,
    paused_at: i64,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "INSERT INTO replicas (sandbox_id, node_id, paused_at) SELECT $1, $2, $3 \
         WHERE EXISTS (SELECT 1 FROM sandboxes WHERE id = $1 AND state = 'paused' \
         AND paused_at = $3) \
         ON CONFLICT (sandbox_id) DO UPDATE SET node_id = $2, paused_at = $3",
    )
    .bind(id)
    .bind(node)
    .bind(paused_at)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// When the last key or token was revoked (0: never), on any node.
pub(super) async fn latest_revocation(pool: &DbPool) -> StoreResult<i64> {
    let at: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(at) FROM (
            SELECT MAX(revoked_at) AS at FROM api_keys
            UNION ALL SELECT MAX(revoked_at) FROM scoped_tokens
            UNION ALL SELECT MAX(revoked_at) FROM preview_tokens
        ) AS revocations",
    )
    .fetch_one(pool)
    .await?;
    Ok(at.unwrap_or(0))
}

/// Hands a paused sandbox from one node to another, only while it is
/// still paused on the first.
pub(super) async fn move_paused(
    pool: &DbPool,
    id: &str,
    from: &str,
    to: &str,
) -> StoreResult<bool> {
    let moved = sqlx::query(
        "UPDATE sandboxes SET node_id = $3 \
         WHERE id = $1 AND node_id = $2 AND state = 'paused'",
    )
    .bind(id)
    .bind(from)
    .bind(to)
    .execute(pool)
    .await?;
    Ok(moved.rows_affected() == 1)
}

pub(super) async fn replica_of(pool: &DbPool, id: &str) -> StoreResult<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT node_id FROM replicas WHERE sandbox_id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

pub(super) async fn drop_replica(pool: &DbPool, id: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM replicas WHERE sandbox_id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}
