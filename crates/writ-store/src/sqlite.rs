//! The embedded default: SQLite in Writ's data directory.
//!
//! Every method that writes more than one row runs in one `BEGIN IMMEDIATE` transaction:
//! taking the write lock up front means a transaction never has to upgrade a read
//! snapshot another connection has since written past (which SQLite refuses with
//! `SQLITE_BUSY` rather than waiting for the busy timeout).

mod appender;
mod audit;
mod pins;
mod rows;
mod schema;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use crate::{
    Agent, AgentCredential, AuditAppender, AuditEntry, AuditFilter, AuditKey, Change, ChangeKind,
    OfferedTool, Pruned, SigningKey, Store, StoreError, StoreResult, Task, TaskFilter, TaskState,
    ToolPin,
};
use rows::{db, to_i64, to_json, write_error};

/// Connections for a file database: WAL lets readers run beside the one writer.
const MAX_CONNECTIONS: u32 = 4;

/// How long a writer waits for another's lock before giving up.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Tasks returned by [`Store::tasks`] when the filter sets no limit.
const DEFAULT_TASK_LIMIT: u32 = 100;

const REASON_AGENT_DISABLED: &str = "agent disabled";
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

/// [`Store`] on a SQLite database file.
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

/// Appends one change-feed entry per subject.
async fn record_changes(
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
impl Store for SqliteStore {
    async fn create_agent(&self, agent: &Agent) -> StoreResult<()> {
        let (ext_issuer, ext_subject) = match &agent.credential {
            AgentCredential::External { issuer, subject } => (Some(issuer), Some(subject)),
            AgentCredential::PublicKey { .. } | AgentCredential::JwksUrl { .. } => (None, None),
        };
        sqlx::query(
            "INSERT INTO agents \
             (id, name, team, owner, credential, ext_issuer, ext_subject, disabled, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(&agent.id)
        .bind(&agent.name)
        .bind(&agent.team)
        .bind(&agent.owner)
        .bind(to_json(&agent.credential, "credential")?)
        .bind(ext_issuer)
        .bind(ext_subject)
        .bind(agent.disabled)
        .bind(agent.created_at)
        .execute(&self.pool)
        .await
        .map_err(|err| {
            write_error(err, |message| {
                if message.contains("agents.name") {
                    format!("agent named `{}`", agent.name)
                } else if message.contains("agents.id") {
                    format!("agent `{}`", agent.id)
                } else {
                    format!("agent with the identity of `{}`", agent.name)
                }
            })
        })?;
        Ok(())
    }

    async fn agent(&self, id_or_name: &str) -> StoreResult<Option<Agent>> {
        // An id match wins over a name match (a name could look like another's id).
        sqlx::query("SELECT * FROM agents WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1")
            .bind(id_or_name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(rows::agent)
            .transpose()
    }

    async fn agent_by_external(&self, issuer: &str, subject: &str) -> StoreResult<Option<Agent>> {
        sqlx::query("SELECT * FROM agents WHERE ext_issuer = ?1 AND ext_subject = ?2")
            .bind(issuer)
            .bind(subject)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(rows::agent)
            .transpose()
    }

    async fn agents(&self) -> StoreResult<Vec<Agent>> {
        sqlx::query("SELECT * FROM agents ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(rows::agent)
            .collect()
    }

    async fn disable_agent(&self, id: &str, now: i64) -> StoreResult<Vec<String>> {
        let mut tx = self.begin().await?;
        let disabled = sqlx::query("UPDATE agents SET disabled = 1 WHERE id = ?1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if disabled.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("agent `{id}`")));
        }
        // The walk starts from every task the agent holds, ended or not.
        let revoked = revoke_tree(
            &mut tx,
            revoke_tree_sql!("SELECT id FROM tasks WHERE agent_id = ?1"),
            id,
            REASON_AGENT_DISABLED,
            now,
        )
        .await?;
        record_changes(&mut tx, ChangeKind::Agent, &[id]).await?;
        record_changes(&mut tx, ChangeKind::Task, &revoked).await?;
        tx.commit().await.map_err(db)?;
        Ok(revoked)
    }

    /// The task is recorded active with no end, whatever `task.state`, `reason` and
    /// `ended_at` say: a task begins active. A missing agent or parent task is
    /// [`StoreError::NotFound`].
    async fn insert_task(&self, task: &Task) -> StoreResult<()> {
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
        .bind(to_json(&task.tools, "tools")?)
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
        record_changes(&mut tx, ChangeKind::Task, &changed).await?;
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
        record_changes(&mut tx, ChangeKind::Task, &expired).await?;
        tx.commit().await.map_err(db)?;
        Ok(expired)
    }

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
        record_changes(&mut tx, ChangeKind::Key, &[key.kid.as_str()]).await?;
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
        record_changes(&mut tx, ChangeKind::Key, &dropped).await?;
        tx.commit().await.map_err(db)?;
        Ok(dropped.len() as u64)
    }

    async fn tool_pins(&self, server: Option<&str>) -> StoreResult<Vec<ToolPin>> {
        pins::tool_pins(self, server).await
    }

    async fn tool_pin(&self, server: &str, tool: &str) -> StoreResult<Option<ToolPin>> {
        pins::tool_pin(self, server, tool).await
    }

    async fn append_audit(&self, records: &[writ_audit::Record]) -> StoreResult<()> {
        audit::append(self, records).await
    }

    async fn audit_head(&self, writer: &str) -> StoreResult<Option<(u64, String)>> {
        audit::head(self, writer).await
    }

    async fn audit_anchor(&self, writer: &str) -> StoreResult<Option<(u64, String)>> {
        audit::anchor(self, writer).await
    }

    async fn audit_records(
        &self,
        writer: &str,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<writ_audit::Record>> {
        audit::records(self, writer, after, limit).await
    }

    async fn audit_writers(&self) -> StoreResult<Vec<String>> {
        audit::writers(self).await
    }

    async fn add_audit_checkpoint(&self, checkpoint: &writ_audit::Checkpoint) -> StoreResult<()> {
        audit::add_checkpoint(self, checkpoint).await
    }

    async fn audit_checkpoints(&self, writer: &str) -> StoreResult<Vec<writ_audit::Checkpoint>> {
        audit::checkpoints(self, writer).await
    }

    async fn add_audit_key(&self, key: &AuditKey) -> StoreResult<()> {
        audit::add_key(self, key).await
    }

    async fn audit_keys(&self) -> StoreResult<Vec<AuditKey>> {
        audit::keys(self).await
    }

    async fn audit_query(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        audit::query(self, filter).await
    }

    async fn prune_audit(&self, before_ms: i64) -> StoreResult<Pruned> {
        audit::prune(self, before_ms).await
    }

    fn audit_appender(&self) -> StoreResult<Option<Box<dyn AuditAppender>>> {
        match &self.path {
            Some(path) => Ok(Some(Box::new(appender::SqliteAppender::open(path)?))),
            // An in-memory database is reachable through its one pooled connection only.
            None => Ok(None),
        }
    }

    async fn observe_tools(
        &self,
        server: &str,
        tools: &[OfferedTool<'_>],
        now: i64,
    ) -> StoreResult<Vec<ToolPin>> {
        pins::observe_tools(self, server, tools, now).await
    }

    async fn accept_tool(
        &self,
        server: &str,
        tool: &str,
        expected: Option<&str>,
        now: i64,
    ) -> StoreResult<ToolPin> {
        pins::accept_tool(self, server, tool, expected, now).await
    }

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
