//! The PostgreSQL store, for hosts that share one database
//! (`database_url = "postgres://..."` or `HEARTH_DATABASE_URL`): the same
//! queries as SQLite's (`../sql/`, compiled here against PostgreSQL), and
//! the same migrations in PostgreSQL's types (`migrations/postgres/`),
//! embedded and run at connect.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{Dialect, StoreError, StoreResult};

type Db = sqlx::Postgres;
type DbRow = sqlx::postgres::PgRow;
type DbPool = sqlx::PgPool;
type ThisStore = PgStore;
const DIALECT: Dialect = Dialect::Postgres;

/// The shared store tests run against PostgreSQL only when asked
/// (`--run-ignored`), with a server named by `HEARTH_TEST_DATABASE_URL`.
#[cfg(test)]
macro_rules! store_test {
    ($($test:tt)*) => {
        #[tokio::test]
        #[ignore = "needs PostgreSQL: HEARTH_TEST_DATABASE_URL (scripts/test starts one)"]
        $($test)*
    };
}

// The same files are this backend's and the other's on purpose: one
// text of the queries, compiled against each database.
#[allow(clippy::duplicate_mod)]
#[path = "../sql/mod.rs"]
mod sql;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: DbPool,
}

impl PgStore {
    /// Connects to the database at `url` and migrates it.
    pub async fn connect(url: &str) -> StoreResult<PgStore> {
        let opened = |source| StoreError::Open {
            path: redact(url),
            source,
        };
        let opts = PgConnectOptions::from_str(url).map_err(opened)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(opened)?;
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        Ok(PgStore { pool })
    }
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or("");
            format!("{scheme}://{name}:***@{host}")
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
#[test]
fn urls_lose_their_password_in_messages() {
    assert_eq!(
        redact("postgres://hearth:s3cret@db:5432/hearth"),
        "postgres://hearth:***@db:5432/hearth"
    );
    assert_eq!(redact("postgres://db/hearth"), "postgres://db/hearth");
}

/// A store on a schema of its own in the test server.
#[cfg(test)]
async fn test_store() -> PgStore {
    let url = hearth_test_support::postgres::schema_url()
        .await
        .expect("a PostgreSQL schema for this test");
    PgStore::connect(&url).await.expect("the PostgreSQL store")
}
