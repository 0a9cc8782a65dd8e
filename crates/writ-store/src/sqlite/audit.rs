//! The audit log: sealed records appended in batches (one transaction per batch, so a
//! gateway's group commit is one fsync for many calls), checkpoints, anchors.

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{QueryBuilder, Row, Sqlite};
use writ_audit::{Checkpoint, Record};

use super::rows::{db, to_i64, to_json, write_error};
use super::{SqliteStore, appender};
use crate::{
    AuditAppender, AuditEntry, AuditFilter, AuditKey, AuditStore, Pruned, StoreError, StoreResult,
};

/// Records [`AuditStore::audit_query`] returns when the filter sets no limit.
const DEFAULT_QUERY_LIMIT: u32 = 1_000;

/// Rows per INSERT statement: SQLite allows 32,766 parameters, a record binds 11.
const ROWS_PER_STATEMENT: usize = 500;

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, records: &[Record]) -> StoreResult<()> {
        match records.len() {
            0 => Ok(()),
            // One statement is atomic on its own: no BEGIN and COMMIT round trips to the
            // connection's thread, which is most of what a small batch costs.
            n if n <= ROWS_PER_STATEMENT => {
                let mut conn = self.pool.acquire().await.map_err(db)?;
                insert(&mut conn, records).await
            }
            _ => {
                let mut tx = self.begin().await?;
                for chunk in records.chunks(ROWS_PER_STATEMENT) {
                    insert(&mut tx, chunk).await?;
                }
                tx.commit().await.map_err(db)
            }
        }
    }

    async fn audit_head(&self, writer: &str) -> StoreResult<Option<(u64, String)>> {
        let last = sqlx::query(
            "SELECT seq, hash FROM audit_records WHERE writer = ?1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(writer)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        match last {
            Some(row) => Ok(Some(seq_hash(&row)?)),
            None => self.audit_anchor(writer).await,
        }
    }

    async fn audit_anchor(&self, writer: &str) -> StoreResult<Option<(u64, String)>> {
        sqlx::query("SELECT seq, hash FROM audit_anchors WHERE writer = ?1")
            .bind(writer)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(seq_hash)
            .transpose()
    }

    async fn audit_records(
        &self,
        writer: &str,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<Record>> {
        sqlx::query(
            "SELECT * FROM audit_records WHERE writer = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )
        .bind(writer)
        .bind(to_i64(after, "audit seq")?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(record)
        .collect()
    }

    async fn audit_writers(&self) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT writer FROM audit_records UNION SELECT writer FROM audit_checkpoints \
             UNION SELECT writer FROM audit_anchors ORDER BY writer",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    async fn add_audit_checkpoint(&self, checkpoint: &Checkpoint) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_checkpoints (writer, seq, hash, time_ms, key_id, signature) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(&checkpoint.writer)
        .bind(to_i64(checkpoint.seq, "checkpoint seq")?)
        .bind(&checkpoint.hash)
        .bind(checkpoint.time_ms)
        .bind(&checkpoint.key_id)
        .bind(&checkpoint.signature)
        .execute(&self.pool)
        .await
        .map_err(|e| write_error(e, |_| "a checkpoint with that writer and seq".into()))?;
        Ok(())
    }

    async fn audit_checkpoints(&self, writer: &str) -> StoreResult<Vec<Checkpoint>> {
        sqlx::query("SELECT * FROM audit_checkpoints WHERE writer = ?1 ORDER BY seq")
            .bind(writer)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(|row| {
                Ok(Checkpoint {
                    writer: row.try_get("writer").map_err(db)?,
                    seq: to_u64(row.try_get("seq").map_err(db)?)?,
                    hash: row.try_get("hash").map_err(db)?,
                    time_ms: row.try_get("time_ms").map_err(db)?,
                    key_id: row.try_get("key_id").map_err(db)?,
                    signature: row.try_get("signature").map_err(db)?,
                })
            })
            .collect()
    }

    async fn add_audit_key(&self, key: &AuditKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_keys (key_id, writer, public_key, created_ms) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(&key.key_id)
        .bind(&key.writer)
        .bind(&key.public_key)
        .bind(key.created_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| write_error(e, |_| format!("audit key `{}`", key.key_id)))?;
        Ok(())
    }

    async fn audit_keys(&self) -> StoreResult<Vec<AuditKey>> {
        sqlx::query("SELECT * FROM audit_keys ORDER BY created_ms, key_id")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(|row| {
                Ok(AuditKey {
                    key_id: row.try_get("key_id").map_err(db)?,
                    writer: row.try_get("writer").map_err(db)?,
                    public_key: row.try_get("public_key").map_err(db)?,
                    created_ms: row.try_get("created_ms").map_err(db)?,
                })
            })
            .collect()
    }

    async fn audit_query(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        let mut sql = QueryBuilder::<Sqlite>::new(
            "SELECT rowid AS position, * FROM audit_records WHERE 1 = 1",
        );
        if let Some(agent) = &filter.agent {
            sql.push(" AND EXISTS (SELECT 1 FROM json_each(actor) WHERE json_each.value = ")
                .push_bind(agent.clone())
                .push(")");
        }
        for (column, value) in [
            ("task", &filter.task),
            ("tool", &filter.tool),
            ("decision", &filter.decision),
        ] {
            if let Some(value) = value {
                sql.push(format_args!(" AND {column} = "))
                    .push_bind(value.clone());
            }
        }
        match filter.kind.as_deref().map(|k| (k, k.strip_suffix(".*"))) {
            None => {}
            Some((_, Some(prefix))) => {
                // Compared as a string prefix, not with LIKE, where `_` (allowed in kinds)
                // would be a wildcard.
                let prefix = format!("{prefix}.");
                sql.push(" AND substr(kind, 1, ")
                    .push_bind(i64::try_from(prefix.len()).unwrap_or(i64::MAX))
                    .push(") = ")
                    .push_bind(prefix);
            }
            Some((kind, None)) => {
                sql.push(" AND kind = ").push_bind(kind.to_owned());
            }
        }
        if let Some(call) = &filter.call {
            sql.push(" AND json_extract(fields, '$.call') = ")
                .push_bind(call.clone());
        }
        if let Some(since) = filter.since_ms {
            sql.push(" AND time_ms >= ").push_bind(since);
        }
        if let Some(until) = filter.until_ms {
            sql.push(" AND time_ms < ").push_bind(until);
        }
        if let Some(after) = filter.after {
            sql.push(" AND rowid > ")
                .push_bind(to_i64(after, "audit position")?);
        }
        sql.push(if filter.newest_first {
            " ORDER BY rowid DESC LIMIT "
        } else {
            " ORDER BY rowid LIMIT "
        });
        let limit = if filter.limit == 0 {
            DEFAULT_QUERY_LIMIT
        } else {
            filter.limit
        };
        sql.push_bind(i64::from(limit));
        sql.build()
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(|row| {
                Ok(AuditEntry {
                    position: to_u64(row.try_get("position").map_err(db)?)?,
                    record: record(row)?,
                })
            })
            .collect()
    }

    async fn prune_audit(&self, before_ms: i64) -> StoreResult<Pruned> {
        let mut tx = self.begin().await?;
        // Per chain, the last record sealed before the cut, counted by seq: a chain is only
        // ever pruned from its start, whatever the clock did between records. The newest
        // record of all is always kept: positions are rowids, and an emptied table would
        // hand out positions a follower has already passed.
        let cuts = sqlx::query(
            "SELECT writer, MAX(seq) AS seq FROM audit_records \
             WHERE time_ms < ?1 AND rowid < (SELECT MAX(rowid) FROM audit_records) \
             GROUP BY writer ORDER BY writer",
        )
        .bind(before_ms)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut pruned = Pruned::default();
        for cut in &cuts {
            let writer: String = cut.try_get("writer").map_err(db)?;
            let seq: i64 = cut.try_get("seq").map_err(db)?;
            let hash: String =
                sqlx::query_scalar("SELECT hash FROM audit_records WHERE writer = ?1 AND seq = ?2")
                    .bind(&writer)
                    .bind(seq)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db)?;
            let deleted = sqlx::query("DELETE FROM audit_records WHERE writer = ?1 AND seq <= ?2")
                .bind(&writer)
                .bind(seq)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
            sqlx::query(
                "INSERT INTO audit_anchors (writer, seq, hash) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (writer) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            )
            .bind(&writer)
            .bind(seq)
            .bind(&hash)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            pruned.records += deleted;
            pruned.anchors.push((writer, to_u64(seq)?));
        }
        tx.commit().await.map_err(db)?;
        Ok(pruned)
    }

    fn audit_appender(&self) -> StoreResult<Option<Box<dyn AuditAppender>>> {
        match &self.path {
            Some(path) => Ok(Some(Box::new(appender::SqliteAppender::open(path)?))),
            // An in-memory database is reachable through its one pooled connection only.
            None => Ok(None),
        }
    }
}

/// One INSERT of up to [`ROWS_PER_STATEMENT`] records.
async fn insert(conn: &mut SqliteConnection, records: &[Record]) -> StoreResult<()> {
    let mut insert = QueryBuilder::<Sqlite>::new(
        "INSERT INTO audit_records \
         (writer, seq, time_ms, kind, actor, task, tool, decision, fields, prev_hash, hash) ",
    );
    let mut failed = None;
    insert.push_values(records, |mut row, record| {
        let (seq, actor, fields) = match (
            to_i64(record.seq, "audit seq"),
            to_json(&record.actor, "an audit actor chain"),
            to_json(&record.fields, "audit fields"),
        ) {
            (Ok(seq), Ok(actor), Ok(fields)) => (seq, actor, fields),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                failed.get_or_insert(e);
                (0, String::new(), String::new())
            }
        };
        row.push_bind(record.writer.clone())
            .push_bind(seq)
            .push_bind(record.time_ms)
            .push_bind(record.kind.clone())
            .push_bind(actor)
            .push_bind(record.task.clone())
            .push_bind(record.tool.clone())
            .push_bind(record.decision.clone())
            .push_bind(fields)
            .push_bind(record.prev_hash.clone())
            .push_bind(record.hash.clone());
    });
    if let Some(err) = failed {
        return Err(err);
    }
    insert
        .build()
        .execute(&mut *conn)
        .await
        .map_err(|e| write_error(e, |_| "an audit record with that writer and seq".into()))?;
    Ok(())
}

fn seq_hash(row: &SqliteRow) -> StoreResult<(u64, String)> {
    Ok((
        to_u64(row.try_get("seq").map_err(db)?)?,
        row.try_get("hash").map_err(db)?,
    ))
}

fn to_u64(value: i64) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Database(format!("negative audit seq {value}")))
}

fn json<T: serde::de::DeserializeOwned>(row: &SqliteRow, column: &str) -> StoreResult<T> {
    let text: String = row.try_get(column).map_err(db)?;
    serde_json::from_str(&text)
        .map_err(|err| StoreError::Database(format!("unreadable JSON in `{column}`: {err}")))
}

fn record(row: &SqliteRow) -> StoreResult<Record> {
    Ok(Record {
        writer: row.try_get("writer").map_err(db)?,
        seq: to_u64(row.try_get("seq").map_err(db)?)?,
        time_ms: row.try_get("time_ms").map_err(db)?,
        kind: row.try_get("kind").map_err(db)?,
        actor: json(row, "actor")?,
        task: row.try_get("task").map_err(db)?,
        tool: row.try_get("tool").map_err(db)?,
        decision: row.try_get("decision").map_err(db)?,
        fields: json(row, "fields")?,
        prev_hash: row.try_get("prev_hash").map_err(db)?,
        hash: row.try_get("hash").map_err(db)?,
    })
}
