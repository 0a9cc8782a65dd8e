//! The schema and its versions.

use sqlx::AssertSqlSafe;
use sqlx::sqlite::SqliteConnection;

use super::rows::db;
use crate::{StoreError, StoreResult};

/// Schema steps in order; `PRAGMA user_version` counts how many a database has had.
/// Append new steps; never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("schema_2.sql"),
    include_str!("schema_3.sql"),
    include_str!("schema_4.sql"),
];

/// Applies the steps this database has not had. The caller holds the write lock (a
/// `BEGIN IMMEDIATE` transaction), so reading the version and applying the steps is
/// atomic.
pub(super) async fn migrate(conn: &mut SqliteConnection) -> StoreResult<()> {
    let applied: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    let known = MIGRATIONS.len();
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > known {
        // Written by a newer Writ: guessing at its meaning could lose a revocation.
        return Err(StoreError::Database(format!(
            "the database has schema version {applied}, newer than this Writ's ({known})"
        )));
    }
    for (done, step) in MIGRATIONS.iter().enumerate().skip(applied) {
        sqlx::raw_sql(*step).execute(&mut *conn).await.map_err(db)?;
        // PRAGMA takes no parameters; the value is our own integer.
        let version = format!("PRAGMA user_version = {}", done + 1);
        sqlx::raw_sql(AssertSqlSafe(version))
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    Ok(())
}
