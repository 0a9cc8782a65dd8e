//! The replay cache: one-time identifiers remembered until they expire.

use async_trait::async_trait;

use super::SqliteStore;
use super::rows::db;
use crate::{ReplayCache, StoreResult};

#[async_trait]
impl ReplayCache for SqliteStore {
    async fn remember_once(
        &self,
        scope: &str,
        id: &str,
        expires_at: i64,
        now: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        // Forgetting first means an identifier past its expiry may be used again, and
        // the table never holds more than the identifiers still live.
        sqlx::query("DELETE FROM seen_once WHERE scope = ?1 AND expires_at <= ?2")
            .bind(scope)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let inserted = sqlx::query(
            "INSERT OR IGNORE INTO seen_once (scope, id, expires_at) VALUES (?1, ?2, ?3)",
        )
        .bind(scope)
        .bind(id)
        .bind(expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(inserted.rows_affected() == 1)
    }
}
