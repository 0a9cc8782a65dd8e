//! The embedded backend: SQLite in Writ's data directory. This file opens the database
//! and brings its schema up to date; each concern's trait is implemented in a file of
//! its own below.
//!
//! Every method that writes more than one row runs in one `BEGIN IMMEDIATE` transaction:
//! taking the write lock up front means a transaction never has to upgrade a read
//! snapshot another connection has since written past (which SQLite refuses with
//! `SQLITE_BUSY` rather than waiting for the busy timeout).

mod agents;
mod appender;
mod audit;
mod changes;
mod keys;
mod pins;
mod replay;
mod rows;
mod schema;
mod task_appender;
mod tasks;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use crate::{StoreError, StoreResult};
use rows::db;

/// Connections for a file database: WAL lets readers run beside the one writer.
const MAX_CONNECTIONS: u32 = 4;

/// How long a writer waits for another's lock before giving up.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// [`Store`](crate::Store) on a SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The database file; `None` in memory.
    path: Option<std::path::PathBuf>,
}

impl SqliteStore {
    /// Opens the database at `path`, creating it (and its directory) if missing and
    /// bringing its schema up to date.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            // Blocking, but once at startup, before anything else waits on the runtime.
            std::fs::create_dir_all(dir).map_err(|err| {
                StoreError::Database(format!("cannot create `{}`: {err}", dir.display()))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Under WAL, NORMAL loses at most the last commits on power loss, never
            // consistency; FULL would fsync on every call count.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // Two processes opening a new file at once (the gateway and a CLI command) race
        // to switch it to WAL, and SQLite answers the loser "locked" without waiting on
        // the busy timeout; so opening itself is retried until that timeout.
        let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            let opened = async {
                let pool = SqlitePoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .connect_with(options.clone())
                    .await
                    .map_err(db)?;
                Self::with_schema(pool, Some(path.to_owned())).await
            }
            .await;
            match opened {
                Err(StoreError::Database(message))
                    if message.contains("database is locked")
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                other => return other,
            }
        }
    }

    /// A private database in memory, gone when the store is dropped; for tests.
    pub async fn open_in_memory() -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(db)?
            .foreign_keys(true);
        // An in-memory database lives as long as a connection to it: keep exactly one,
        // forever, so every query sees the same database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(db)?;
        Self::with_schema(pool, None).await
    }

    /// Waits for queries under way to finish and closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Brings the schema up to date in one transaction, so two processes opening a new
    /// file at once cannot both create the tables.
    async fn with_schema(pool: SqlitePool, path: Option<std::path::PathBuf>) -> StoreResult<Self> {
        let store = Self { pool, path };
        let mut tx = store.begin().await?;
        schema::migrate(&mut tx).await?;
        tx.commit().await.map_err(db)?;
        Ok(store)
    }

    async fn begin(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)
    }
}
