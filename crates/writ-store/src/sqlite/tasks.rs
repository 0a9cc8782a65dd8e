//! Tasks: recorded active (one by one, or many at once with the one-time identifiers
//! their requests spent), ended (with every active descendant revoked in the same
//! transaction), counted, expired.

use std::collections::{BTreeSet, HashSet};

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use super::rows::{self, db, to_i64, to_json, write_error};
use super::{SqliteStore, changes, replay, task_appender};
use crate::{
    Begun, ChangeKind, NewTask, OneTime, StoreError, StoreResult, Task, TaskAppender, TaskFilter,
    TaskState, TaskStore,
};

/// Records one new task, active with no end whatever it says.
pub(super) const INSERT_TASK: &str = "INSERT INTO tasks \
     (id, agent_id, subject_id, parent_id, depth, purpose, category, tools, \
      data_classes, max_calls, calls, state, reason, proof, jkt, actor_chain, \
      created_at, expires_at, ended_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'active', NULL, ?12, ?13, \
             ?14, ?15, ?16, NULL)";

/// Tasks returned by [`TaskStore::tasks`] when the filter sets no limit.
const DEFAULT_TASK_LIMIT: u32 = 100;
/// Rows one multi-row `INSERT` carries: 16 parameters a task, well within SQLite's
/// limit of 32,766 parameters a statement.
const ROWS_PER_INSERT: usize = 500;

/// The columns of a new task, as [`INSERT_TASK`] names them and in the order [`insert`]
/// gives their values; the state, reason and end are written as a new task's.
const TASK_COLUMNS: &str = "(id, agent_id, subject_id, parent_id, depth, purpose, category, \
     tools, data_classes, max_calls, calls, state, reason, proof, jkt, actor_chain, \
     created_at, expires_at, ended_at)";

/// A task's values as stored, encoded once.
pub(super) struct Encoded<'t> {
    pub task: &'t Task,
    pub tools: String,
    pub data_classes: String,
    pub max_calls: Option<i64>,
    pub calls: i64,
    pub actor_chain: String,
}

impl<'t> Encoded<'t> {
    pub(super) fn new(task: &'t Task) -> StoreResult<Self> {
        let tools: Vec<String> = task.tools.iter().map(ToString::to_string).collect();
        Ok(Self {
            task,
            tools: to_json(&tools, "tools")?,
            data_classes: to_json(&task.data_classes, "data classes")?,
            max_calls: task
                .max_calls
                .map(|max| to_i64(max, "max calls"))
                .transpose()?,
            calls: to_i64(task.calls, "call count")?,
            actor_chain: to_json(&task.actor_chain, "actor chain")?,
        })
    }
}

/// The error of inserting `count` tasks, the first being `first`.
fn insert_error(err: sqlx::Error, first: &str, count: usize) -> StoreError {
    let which = if count == 1 {
        format!("task `{first}`")
    } else {
        format!("one of {count} tasks beginning with `{first}`")
    };
    if rows::is_missing_reference(&err) {
        StoreError::NotFound(format!("parent task of {which}"))
    } else {
        write_error(err, |_| which)
    }
}

/// Remembers `spent` (every identifier not yet remembered) inside the caller's
/// transaction; returns those that were new, as `(scope, id)`.
async fn remember(
    tx: &mut Transaction<'_, Sqlite>,
    spent: &[&OneTime],
    now: i64,
) -> StoreResult<HashSet<(String, String)>> {
    let scopes: BTreeSet<&str> = spent.iter().map(|once| once.scope.as_str()).collect();
    for scope in scopes {
        replay::forget_expired(tx, scope, now).await?;
    }
    let mut fresh = HashSet::with_capacity(spent.len());
    for chunk in spent.chunks(ROWS_PER_INSERT) {
        let mut insert =
            QueryBuilder::<Sqlite>::new("INSERT OR IGNORE INTO seen_once (scope, id, expires_at) ");
        insert.push_values(chunk, |mut row, once| {
            row.push_bind(once.scope.as_str())
                .push_bind(once.id.as_str())
                .push_bind(once.expires_at);
        });
        // An ignored row (remembered before, or earlier in this statement) is not
        // returned: only the identifiers seen for the first time are.
        insert.push(" RETURNING scope, id");
        let inserted = insert
            .build()
            .persistent(false)
            .fetch_all(&mut **tx)
            .await
            .map_err(db)?;
        for row in &inserted {
            fresh.insert(scope_and_id(row)?);
        }
    }
    Ok(fresh)
}

fn scope_and_id(row: &SqliteRow) -> StoreResult<(String, String)> {
    Ok((
        row.try_get("scope").map_err(db)?,
        row.try_get("id").map_err(db)?,
    ))
}

/// Inserts `tasks` as new, active tasks inside the caller's transaction.
async fn insert(tx: &mut Transaction<'_, Sqlite>, tasks: &[Encoded<'_>]) -> StoreResult<()> {
    for chunk in tasks.chunks(ROWS_PER_INSERT) {
        let Some(first) = chunk.first() else {
            continue;
        };
        let mut insert = QueryBuilder::<Sqlite>::new(format!("INSERT INTO tasks {TASK_COLUMNS} "));
        insert.push_values(chunk, |mut row, e| {
            let task = e.task;
            row.push_bind(task.id.as_str())
                .push_bind(task.agent_id.as_str())
                .push_bind(task.subject_id.as_str())
                .push_bind(task.parent_id.as_deref())
                .push_bind(task.depth)
                .push_bind(task.purpose.as_str())
                .push_bind(task.category.as_deref())
                .push_bind(e.tools.as_str())
                .push_bind(e.data_classes.as_str())
                .push_bind(e.max_calls)
                .push_bind(e.calls)
                .push("'active'")
                .push("NULL")
                .push_bind(task.proof.as_str())
                .push_bind(task.jkt.as_deref())
                .push_bind(e.actor_chain.as_str())
                .push_bind(task.created_at)
                .push_bind(task.expires_at)
                .push("NULL");
        });
        insert
            .build()
            .persistent(false)
            .execute(&mut **tx)
            .await
            .map_err(|err| insert_error(err, &first.task.id, chunk.len()))?;
    }
    Ok(())
}

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
        let e = Encoded::new(task)?;
        sqlx::query(INSERT_TASK)
            .bind(&task.id)
            .bind(&task.agent_id)
            .bind(&task.subject_id)
            .bind(&task.parent_id)
            .bind(task.depth)
            .bind(&task.purpose)
            .bind(&task.category)
            .bind(&e.tools)
            .bind(&e.data_classes)
            .bind(e.max_calls)
            .bind(e.calls)
            .bind(&task.proof)
            .bind(&task.jkt)
            .bind(&e.actor_chain)
            .bind(task.created_at)
            .bind(task.expires_at)
            .execute(&self.pool)
            .await
            .map_err(|err| insert_error(err, &task.id, 1))?;
        Ok(())
    }

    /// Every identifier in one multi-row statement and every task in another, so a
    /// batch costs the same few statements whatever its size. Tasks are recorded as
    /// [`insert_task`](Self::insert_task) records one.
    async fn begin_tasks(&self, tasks: &[NewTask], now: i64) -> StoreResult<Vec<Begun>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let encoded = tasks
            .iter()
            .map(|new| Encoded::new(&new.task))
            .collect::<StoreResult<Vec<_>>>()?;
        let spent: Vec<&OneTime> = tasks.iter().filter_map(|new| new.once.as_ref()).collect();
        let mut tx = self.begin().await?;
        let mut fresh = if spent.is_empty() {
            HashSet::new()
        } else {
            remember(&mut tx, &spent, now).await?
        };
        // INVARIANT: an identifier returned as new is claimed by the first task that
        // spent it; any later task with the same identifier is a replay.
        let outcomes: Vec<Begun> = tasks
            .iter()
            .map(|new| match &new.once {
                None => Begun::Recorded,
                Some(once) if fresh.remove(&(once.scope.clone(), once.id.clone())) => {
                    Begun::Recorded
                }
                Some(_) => Begun::Replayed,
            })
            .collect();
        let recorded: Vec<Encoded<'_>> = encoded
            .into_iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| **outcome == Begun::Recorded)
            .map(|(e, _)| e)
            .collect();
        insert(&mut tx, &recorded).await?;
        tx.commit().await.map_err(db)?;
        Ok(outcomes)
    }

    fn task_appender(&self) -> StoreResult<Option<Box<dyn TaskAppender>>> {
        match &self.path {
            Some(path) => Ok(Some(Box::new(task_appender::SqliteTaskAppender::open(
                path,
            )?))),
            // An in-memory database is reachable through its one pooled connection only.
            None => Ok(None),
        }
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
