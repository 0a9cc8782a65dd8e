//! Tasks: recorded active, ended (with every active descendant revoked in the same
//! transaction), counted, expired.

use async_trait::async_trait;
use sqlx::{Sqlite, Transaction};

use super::rows::{self, db, to_i64, to_json, write_error};
use super::{SqliteStore, changes};
use crate::{ChangeKind, StoreError, StoreResult, Task, TaskFilter, TaskState, TaskStore};

/// Tasks returned by [`TaskStore::tasks`] when the filter sets no limit.
const DEFAULT_TASK_LIMIT: u32 = 100;

const REASON_PARENT_ENDED: &str = "parent task ended";
const REASON_EXPIRED: &str = "expired";

/// The statement that revokes every active task in the delegation trees growing from
/// the tasks `$seed` selects (`?1` binds the agent or task id). The walk passes through
/// ended tasks too, so a descendant left active under one is still revoked.
macro_rules! revoke_tree_sql {
    ($seed:literal) => {
        concat!(
            "WITH RECURSIVE tree (id) AS (",
            $seed,
            " UNION SELECT tasks.id FROM tasks JOIN tree ON tasks.parent_id = tree.id) \
             UPDATE tasks SET state = 'revoked', reason = ?2, ended_at = ?3 \
             WHERE state = 'active' AND id IN (SELECT id FROM tree) \
             RETURNING id, depth, created_at"
        )
    };
}

/// Runs a [`revoke_tree_sql!`] statement; the revoked ids, shallowest first.
async fn revoke_tree(
    tx: &mut Transaction<'_, Sqlite>,
    sql: &'static str,
    id: &str,
    reason: &str,
    now: i64,
) -> StoreResult<Vec<String>> {
    let revoked = sqlx::query(sql)
        .bind(id)
        .bind(reason)
        .bind(now)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
    rows::ordered_ids(&revoked)
}

/// Revokes every active task `agent_id` holds and every active task delegated from one
/// of them, inside the caller's transaction; the revoked ids, shallowest first.
pub(super) async fn revoke_held_by(
    tx: &mut Transaction<'_, Sqlite>,
    agent_id: &str,
    reason: &str,
    now: i64,
) -> StoreResult<Vec<String>> {
    // The walk starts from every task the agent holds, ended or not.
    revoke_tree(
        tx,
        revoke_tree_sql!("SELECT id FROM tasks WHERE agent_id = ?1"),
        agent_id,
        reason,
        now,
    )
    .await
}

#[async_trait]
impl TaskStore for SqliteStore {
    /// The task is recorded active with no end, whatever `task.state`, `reason` and
    /// `ended_at` say: a task begins active. A missing agent or parent task is
    /// [`StoreError::NotFound`].
    async fn insert_task(&self, task: &Task) -> StoreResult<()> {
        let tools: Vec<String> = task.tools.iter().map(ToString::to_string).collect();
        sqlx::query(
            "INSERT INTO tasks \
             (id, agent_id, subject_id, parent_id, depth, purpose, category, tools, \
              data_classes, max_calls, calls, state, reason, proof, jkt, actor_chain, \
              created_at, expires_at, ended_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'active', NULL, ?12, ?13, \
                     ?14, ?15, ?16, NULL)",
        )
        .bind(&task.id)
        .bind(&task.agent_id)
        .bind(&task.subject_id)
        .bind(&task.parent_id)
        .bind(task.depth)
        .bind(&task.purpose)
        .bind(&task.category)
        .bind(to_json(&tools, "tools")?)
        .bind(to_json(&task.data_classes, "data classes")?)
        .bind(
            task.max_calls
                .map(|max| to_i64(max, "max calls"))
                .transpose()?,
        )
        .bind(to_i64(task.calls, "call count")?)
        .bind(&task.proof)
        .bind(&task.jkt)
        .bind(to_json(&task.actor_chain, "actor chain")?)
        .bind(task.created_at)
        .bind(task.expires_at)
        .execute(&self.pool)
        .await
        .map_err(|err| {
            if rows::is_missing_reference(&err) {
                StoreError::NotFound(format!("parent task of task `{}`", task.id))
            } else {
                write_error(err, |_| format!("task `{}`", task.id))
            }
        })?;
        Ok(())
    }

    async fn task(&self, id: &str) -> StoreResult<Option<Task>> {
        sqlx::query("SELECT * FROM tasks WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(rows::task)
            .transpose()
    }

    async fn tasks(&self, filter: &TaskFilter) -> StoreResult<Vec<Task>> {
        // A NULL parameter switches its condition off, so one statement serves every filter.
        sqlx::query(
            "SELECT * FROM tasks \
             WHERE (?1 IS NULL OR agent_id = ?1 OR subject_id = ?1) \
               AND (?2 IS NULL OR state = ?2) \
             ORDER BY created_at DESC, id DESC \
             LIMIT ?3",
        )
        .bind(&filter.agent_id)
        .bind(filter.state.map(TaskState::as_str))
        .bind(filter.limit.unwrap_or(DEFAULT_TASK_LIMIT))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(rows::task)
        .collect()
    }

    /// An unknown task is [`StoreError::NotFound`]; a known task that has already ended
    /// changes nothing and returns no ids. Ending a task with state active is refused.
    async fn end_task(
        &self,
        id: &str,
        state: TaskState,
        reason: &str,
        now: i64,
    ) -> StoreResult<Vec<String>> {
        if state == TaskState::Active {
            return Err(StoreError::Database(format!(
                "task `{id}` cannot be ended with state active"
            )));
        }
        let mut tx = self.begin().await?;
        let ended = sqlx::query(
            "UPDATE tasks SET state = ?2, reason = ?3, ended_at = ?4 \
             WHERE id = ?1 AND state = 'active'",
        )
        .bind(id)
        .bind(state.as_str())
        .bind(reason)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if ended.rows_affected() == 0 {
            let known = sqlx::query("SELECT 1 FROM tasks WHERE id = ?1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            return match known {
                Some(_) => Ok(Vec::new()),
                None => Err(StoreError::NotFound(format!("task `{id}`"))),
            };
        }
        let mut changed = vec![id.to_owned()];
        changed.extend(
            revoke_tree(
                &mut tx,
                revoke_tree_sql!("SELECT id FROM tasks WHERE parent_id = ?1"),
                id,
                REASON_PARENT_ENDED,
                now,
            )
            .await?,
        );
        changes::record(&mut tx, ChangeKind::Task, &changed).await?;
        tx.commit().await.map_err(db)?;
        Ok(changed)
    }

    async fn add_calls(&self, id: &str, calls: u64) -> StoreResult<u64> {
        let calls = i64::try_from(calls)
            .map_err(|_| StoreError::Database(format!("call count {calls} is out of range")))?;
        sqlx::query_scalar("UPDATE tasks SET calls = calls + ?2 WHERE id = ?1 RETURNING calls")
            .bind(id)
            .bind(calls)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| StoreError::NotFound(format!("task `{id}`")))
    }

    async fn expire_tasks(&self, now: i64) -> StoreResult<Vec<String>> {
        let mut tx = self.begin().await?;
        let expired = sqlx::query(
            "UPDATE tasks SET state = 'expired', reason = ?2, ended_at = ?1 \
             WHERE state = 'active' AND expires_at <= ?1 \
             RETURNING id, depth, created_at",
        )
        .bind(now)
        .bind(REASON_EXPIRED)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let expired = rows::ordered_ids(&expired)?;
        changes::record(&mut tx, ChangeKind::Task, &expired).await?;
        tx.commit().await.map_err(db)?;
        Ok(expired)
    }
}
