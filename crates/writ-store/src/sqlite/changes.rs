//! The change feed: every state change appends an entry, which gateways follow.

use async_trait::async_trait;
use sqlx::sqlite::SqliteConnection;

use super::SqliteStore;
use super::rows::{self, db};
use crate::{Change, ChangeFeed, ChangeKind, StoreResult};

/// Appends one change-feed entry per subject, inside the caller's transaction.
pub(super) async fn record(
    conn: &mut SqliteConnection,
    kind: ChangeKind,
    subjects: &[impl AsRef<str>],
) -> StoreResult<()> {
    for subject in subjects {
        sqlx::query("INSERT INTO changes (kind, subject) VALUES (?1, ?2)")
            .bind(rows::kind_name(kind))
            .bind(subject.as_ref())
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    Ok(())
}

#[async_trait]
impl ChangeFeed for SqliteStore {
    async fn changes_since(&self, after: u64, limit: u32) -> StoreResult<Vec<Change>> {
        // A sequence number beyond SQLite's range has nothing after it.
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        sqlx::query("SELECT seq, kind, subject FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(rows::change)
            .collect()
    }
}
