//! PostgreSQL for tests: the server `HEARTH_TEST_DATABASE_URL` names
//! (`scripts/test` starts one from Debian's packages in a temp dir, see
//! `scripts/lib/postgres.sh`), a schema of its own per caller so tests
//! never see each other's rows.

use anyhow::Context;
use rand::Rng;
use sqlx::{Connection, Executor, PgConnection};

/// The variable naming the test server.
pub const URL_VAR: &str = "HEARTH_TEST_DATABASE_URL";

/// A new, empty schema on the test server, and the URL whose connections
/// use it (`search_path`).
pub async fn schema_url() -> anyhow::Result<String> {
    let base = std::env::var(URL_VAR).with_context(|| {
        format!("{URL_VAR} is not set: scripts/test starts a PostgreSQL (scripts/lib/postgres.sh)")
    })?;
    let schema = format!("t_{:016x}", rand::thread_rng().gen::<u64>());
    let mut conn = PgConnection::connect(&base)
        .await
        .with_context(|| format!("connect to {URL_VAR}"))?;
    conn.execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .context("create the test's schema")?;
    conn.close().await?;
    Ok(with_search_path(&base, &schema))
}

/// `url` whose sessions resolve names in `schema`.
pub fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_search_path_rides_in_the_url() {
        assert_eq!(
            super::with_search_path("postgres://h@/db?host=/tmp/pg", "t_1"),
            "postgres://h@/db?host=/tmp/pg&options=-c%20search_path%3Dt_1"
        );
    }
}
