//! The replay cache: one-time identifiers remembered until they expire.

use async_trait::async_trait;
use sqlx::{Sqlite, Transaction};

use super::SqliteStore;
use super::rows::db;
use crate::{ReplayCache, StoreResult};

/// Forgets the identifiers of a scope (`?1`) expired at `?2`.
pub(super) const FORGET_EXPIRED: &str =
    "DELETE FROM seen_once WHERE scope = ?1 AND expires_at <= ?2";
/// Remembers an identifier; changes no row when it is remembered already.
pub(super) const REMEMBER: &str =
    "INSERT OR IGNORE INTO seen_once (scope, id, expires_at) VALUES (?1, ?2, ?3)";

/// Forgets the identifiers of `scope` that expired at `now`, inside the caller's
/// transaction. Forgetting first means an identifier past its expiry may be used again,
/// and the table never holds more than the identifiers still live.
pub(super) async fn forget_expired(
    tx: &mut Transaction<'_, Sqlite>,
    scope: &str,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(FORGET_EXPIRED)
        .bind(scope)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

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
        forget_expired(&mut tx, scope, now).await?;
        let inserted = sqlx::query(REMEMBER)
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
