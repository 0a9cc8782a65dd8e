//! The token endpoint's own connection for beginning tasks: blocking, outside the pool,
//! used by whichever task leads a batch of new tasks — for the reason the audit writer
//! has one (`appender`): through the pool, a batch is a handful of hand-offs to sqlx's
//! connection thread, each a wake-up, and with the write lock held across them a batch
//! took milliseconds (p50 2.4 ms measured) where a direct one takes a fraction of one.

use std::path::Path;

use rusqlite::{Connection, ErrorCode, params};

use super::appender::{connect, database, write_error};
use super::replay::{FORGET_EXPIRED, REMEMBER};
use super::tasks::{Encoded, INSERT_TASK};
use crate::{Begun, NewTask, StoreError, StoreResult, TaskAppender};

/// A blocking connection to the store's file that records new tasks.
#[derive(Debug)]
pub(super) struct SqliteTaskAppender {
    conn: Connection,
}

impl SqliteTaskAppender {
    pub(super) fn open(path: &Path) -> StoreResult<Self> {
        let conn = connect(path)?;
        // As the pool's connections: a task's parent must exist; a commit survives the
        // process being killed.
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(|e| database(&e))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| database(&e))?;
        // The audit writer folds the log back after answering its callers (its `tidy`);
        // this connection never does it inside a commit exchanges wait on.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|e| database(&e))?;
        Ok(Self { conn })
    }
}

impl TaskAppender for SqliteTaskAppender {
    /// Statement by statement, in order: an identifier is remembered by the first task
    /// that spends it, so a later task of the same batch with the same one is a replay.
    fn begin_tasks(&mut self, tasks: &[NewTask], now: i64) -> StoreResult<Vec<Begun>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let encoded = tasks
            .iter()
            .map(|new| Encoded::new(&new.task))
            .collect::<StoreResult<Vec<_>>>()?;
        // IMMEDIATE: the write lock up front, as every writing transaction of the store.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| database(&e))?;
        let mut outcomes = Vec::with_capacity(tasks.len());
        {
            let mut forget = tx
                .prepare_cached(FORGET_EXPIRED)
                .map_err(|e| database(&e))?;
            let mut remember = tx.prepare_cached(REMEMBER).map_err(|e| database(&e))?;
            let mut insert = tx.prepare_cached(INSERT_TASK).map_err(|e| database(&e))?;
            let mut forgotten: Vec<&str> = Vec::new();
            for (new, e) in tasks.iter().zip(&encoded) {
                let begun = match &new.once {
                    None => Begun::Recorded,
                    Some(once) => {
                        if !forgotten.contains(&once.scope.as_str()) {
                            forget
                                .execute(params![once.scope, now])
                                .map_err(|e| database(&e))?;
                            forgotten.push(once.scope.as_str());
                        }
                        let added = remember
                            .execute(params![once.scope, once.id, once.expires_at])
                            .map_err(|e| database(&e))?;
                        if added == 1 {
                            Begun::Recorded
                        } else {
                            Begun::Replayed
                        }
                    }
                };
                if begun == Begun::Recorded {
                    let task = e.task;
                    insert
                        .execute(params![
                            task.id,
                            task.agent_id,
                            task.subject_id,
                            task.parent_id,
                            task.depth,
                            task.purpose,
                            task.category,
                            e.tools,
                            e.data_classes,
                            e.max_calls,
                            e.calls,
                            task.proof,
                            task.jkt,
                            e.actor_chain,
                            task.created_at,
                            task.expires_at,
                        ])
                        .map_err(|err| insert_error(&err, &task.id))?;
                }
                outcomes.push(begun);
            }
        }
        // A failed statement above rolled the transaction back when `tx` was dropped.
        tx.commit().map_err(|e| database(&e))?;
        Ok(outcomes)
    }
}

/// The error of inserting task `id`, as the pool's `insert_task` reports it.
fn insert_error(err: &rusqlite::Error, id: &str) -> StoreError {
    match err {
        rusqlite::Error::SqliteFailure(e, _)
            if e.code == ErrorCode::ConstraintViolation
                && e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
        {
            StoreError::NotFound(format!("parent task of task `{id}`"))
        }
        _ => write_error(err, &format!("task `{id}`")),
    }
}
