//! Event retention: the oldest events go first, in batches, so that a large
//! prune never holds the database's write lock for long.

use super::DbPool;

use crate::store::StoreResult;

/// Rows deleted per statement.
const BATCH: i64 = 5_000;

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Runs `sql` (a `DELETE ... LIMIT ?` in a subquery, with `args` before the
/// limit) until it deletes less than a batch; how many rows went.
async fn delete_batched(pool: &DbPool, sql: &str, args: &[Arg<'_>]) -> StoreResult<u64> {
    let mut total = 0;
    loop {
        let mut q = sqlx::query(sql);
        for a in args {
            q = match a {
                Arg::Int(i) => q.bind(*i),
                Arg::Text(s) => q.bind(*s),
            };
        }
        let n = q.bind(BATCH).execute(pool).await?.rows_affected();
        total += n;
        if n < BATCH as u64 {
            return Ok(total);
        }
    }
}

enum Arg<'a> {
    Int(i64),
    Text(&'a str),
}

/// The sequence number of the newest event past the `keep` newest (of one
/// tenant, when given): it and everything older go.
async fn cutoff(pool: &DbPool, tenant: Option<&str>, keep: u64) -> StoreResult<Option<i64>> {
    let q = match tenant {
        Some(t) => sqlx::query_scalar(
            "SELECT seq FROM events WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2",
        )
        .bind(t),
        None => sqlx::query_scalar("SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET $1"),
    };
    Ok(q.bind(count(keep)).fetch_optional(pool).await?)
}

/// Deletes events older than `before_ts` (when given), then the oldest
/// past `max_per_tenant` of any tenant, then the oldest past `max_rows` in
/// all (a limit of 0 is none); how many went.
pub(super) async fn prune(
    pool: &DbPool,
    before_ts: Option<i64>,
    max_rows: u64,
    max_per_tenant: u64,
) -> StoreResult<u64> {
    let mut n = 0;
    if let Some(ts) = before_ts {
        n += delete_batched(
            pool,
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE ts < $1 LIMIT $2)",
            &[Arg::Int(ts)],
        )
        .await?;
    }
    if max_per_tenant > 0 {
        let tenants: Vec<String> = sqlx::query_scalar(
            "SELECT tenant_id FROM events GROUP BY tenant_id HAVING COUNT(*) > $1",
        )
        .bind(count(max_per_tenant))
        .fetch_all(pool)
        .await?;
        for t in &tenants {
            if let Some(seq) = cutoff(pool, Some(t), max_per_tenant).await? {
                n += delete_batched(
                    pool,
                    "DELETE FROM events WHERE seq IN \
                     (SELECT seq FROM events WHERE tenant_id = $1 AND seq <= $2 LIMIT $3)",
                    &[Arg::Text(t), Arg::Int(seq)],
                )
                .await?;
            }
        }
    }
    if max_rows > 0 {
        if let Some(seq) = cutoff(pool, None, max_rows).await? {
            n += delete_batched(
                pool,
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq <= $1 LIMIT $2)",
                &[Arg::Int(seq)],
            )
            .await?;
        }
    }
    Ok(n)
}
