//! The SQLite store, the default (one host, one file): WAL journal
//! (readers never wait for the writer), `synchronous = NORMAL` (a crash
//! loses at most the last transactions, never consistency), migrations in
//! `migrations/` embedded in the binary and run at open. Its queries are
//! the shared ones in `../sql/`, compiled here against SQLite.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{Dialect, StoreError, StoreResult};

mod file;

type Db = sqlx::Sqlite;
type DbRow = sqlx::sqlite::SqliteRow;
type DbPool = sqlx::SqlitePool;
type ThisStore = SqliteStore;
const DIALECT: Dialect = Dialect::Sqlite;

/// The shared store tests, as SQLite runs them (in memory, always).
#[cfg(test)]
macro_rules! store_test {
    ($($test:tt)*) => {
        #[tokio::test]
        $($test)*
    };
}

// The same files are this backend's and the other's on purpose: one
// text of the queries, compiled against each database.
#[allow(clippy::duplicate_mod)]
#[path = "../sql/mod.rs"]
mod sql;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: DbPool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub async fn open(path: &Path) -> StoreResult<SqliteStore> {
        file::private_file(path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            source: sqlx::Error::Io(e),
        })?;
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            // What is deleted (expired replays, scrubbed rows) is zeroed on
            // disk, not left in free pages for a reader of the file.
            .pragma("secure_delete", "on");
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        Ok(SqliteStore { pool })
    }

    /// An in-memory store (tests): one connection, so every query sees it.
    pub async fn in_memory() -> StoreResult<SqliteStore> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        Ok(SqliteStore { pool })
    }
}

/// The store the shared tests run against.
#[cfg(test)]
async fn test_store() -> SqliteStore {
    SqliteStore::in_memory().await.expect("an in-memory store")
}
