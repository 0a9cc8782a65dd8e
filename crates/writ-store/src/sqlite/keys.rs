//! Writ's signing keys: one active, the retired ones kept while their writs may live.

use async_trait::async_trait;

use super::rows::{self, db, write_error};
use super::{SqliteStore, changes};
use crate::{ChangeKind, SigningKey, SigningKeyStore, StoreResult};

#[async_trait]
impl SigningKeyStore for SqliteStore {
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKey>> {
        sqlx::query("SELECT * FROM signing_keys ORDER BY created_at DESC, kid DESC")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(rows::signing_key)
            .collect()
    }

    /// The key is stored active (`retired_at` unset), whatever `key.retired_at` says.
    async fn add_signing_key(&self, key: &SigningKey, now: i64) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE signing_keys SET retired_at = ?1 WHERE retired_at IS NULL")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_pem, created_at, retired_at) \
             VALUES (?1, ?2, ?3, ?4, NULL)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_pem)
        .bind(key.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|err| write_error(err, |_| format!("signing key `{}`", key.kid)))?;
        changes::record(&mut tx, ChangeKind::Key, &[key.kid.as_str()]).await?;
        tx.commit().await.map_err(db)
    }

    async fn drop_retired_keys(&self, before: i64) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let dropped: Vec<String> = sqlx::query_scalar(
            "DELETE FROM signing_keys \
             WHERE retired_at IS NOT NULL AND retired_at <= ?1 \
             RETURNING kid",
        )
        .bind(before)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        changes::record(&mut tx, ChangeKind::Key, &dropped).await?;
        tx.commit().await.map_err(db)?;
        Ok(dropped.len() as u64)
    }
}
