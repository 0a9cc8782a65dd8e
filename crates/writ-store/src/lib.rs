//! Writ's state: agents, tasks, replay caches, signing keys, tool pins, the audit log
//! and the change feed, behind one small trait per concern.
//!
//! The gateway holds hot state in memory (verified writs, the revocation set); the store
//! is the source of truth those are fed from. SQLite in a data directory is the only
//! backend today and needs nothing installed; the traits are split by concern so that
//! another backend (PostgreSQL, for replicas sharing state) can implement them one by
//! one. Times are Unix seconds (UTC), as in JWTs.

pub mod faults;
mod model;
mod sqlite;

pub use model::*;
pub use sqlite::SqliteStore;

use async_trait::async_trait;

/// Why a store operation failed. The store is internal to Writ: callers treat every error
/// as "fail closed" and never show the detail to an agent.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A record with the same unique key (agent name, agent id, key id) already exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// The record the operation names does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The record is not what the caller last saw; the text says what it is now.
    #[error("{0}")]
    Stale(String),
    /// The database could not be opened, read or written, or holds a value that does
    /// not read back as a record.
    #[error("store: {0}")]
    Database(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything Writ keeps between restarts and shares between replicas: every concern's
/// trait at once, implemented for every type that implements them all. Callers hold an
/// `Arc<dyn Store>`, on which every concern's methods are callable as they are; code
/// holding a concrete store imports the traits whose methods it calls.
///
/// Each method is one transaction. Methods that change task states return the ids of
/// every task whose state changed, so callers can update their in-memory revocation set
/// at once instead of waiting for [`ChangeFeed::changes_since`].
pub trait Store:
    AgentStore
    + TaskStore
    + ReplayCache
    + SigningKeyStore
    + ToolPinStore
    + AuditStore
    + ChangeFeed
    + Send
    + Sync
    + std::fmt::Debug
{
}

impl<T> Store for T where
    T: AgentStore
        + TaskStore
        + ReplayCache
        + SigningKeyStore
        + ToolPinStore
        + AuditStore
        + ChangeFeed
        + Send
        + Sync
        + std::fmt::Debug
{
}

/// The registered agents.
#[async_trait]
pub trait AgentStore: Send + Sync {
    /// Registers an agent. Names and ids are unique; a duplicate is [`StoreError::Conflict`].
    async fn create_agent(&self, agent: &Agent) -> StoreResult<()>;
    /// An agent by id or, failing that, by name.
    async fn agent(&self, id_or_name: &str) -> StoreResult<Option<Agent>>;
    /// The agent registered for an external identity (OIDC issuer + subject, or a SPIFFE ID
    /// with issuer `spiffe`).
    async fn agent_by_external(&self, issuer: &str, subject: &str) -> StoreResult<Option<Agent>>;
    /// All agents, ordered by name.
    async fn agents(&self) -> StoreResult<Vec<Agent>>;
    /// Disables an agent and revokes every active task it holds or that descends from one
    /// of them. Returns the revoked task ids. Unknown agent: [`StoreError::NotFound`].
    async fn disable_agent(&self, id: &str, now: i64) -> StoreResult<Vec<String>>;
}

/// Tasks: their grants, their life from active to ended, their call counts.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Records a new task (state [`TaskState::Active`]).
    async fn insert_task(&self, task: &Task) -> StoreResult<()>;
    /// Records new tasks and remembers the one-time identifiers their requests spent, all
    /// in one transaction: what a token endpoint under load writes, once for every
    /// exchange waiting. A task whose identifier is already remembered, or taken by an
    /// earlier task of the same call, is a replay and not recorded. Identifiers expired
    /// at `now` are forgotten first, as by [`ReplayCache::remember_once`]. The answers
    /// are in the order of `tasks`. An error records nothing at all.
    async fn begin_tasks(&self, tasks: &[NewTask], now: i64) -> StoreResult<Vec<Begun>>;
    /// An exclusive, blocking connection of the caller's own for
    /// [`begin_tasks`](Self::begin_tasks), where the store offers one (SQLite on a file);
    /// `None` means use `begin_tasks`. One per gateway, taken at startup.
    fn task_appender(&self) -> StoreResult<Option<Box<dyn TaskAppender>>> {
        Ok(None)
    }
    /// One task. A stored value that does not read back as it was written (a tool
    /// pattern that does not parse, say) is an error, never left out.
    async fn task(&self, id: &str) -> StoreResult<Option<Task>>;
    /// Tasks matching the filter, newest first.
    async fn tasks(&self, filter: &TaskFilter) -> StoreResult<Vec<Task>>;
    /// Ends an active task with `state` (completed or revoked) and revokes its active
    /// descendants (state revoked, reason "parent task ended"). Returns every task id whose
    /// state changed (the task itself first). A task that is not active changes nothing.
    async fn end_task(
        &self,
        id: &str,
        state: TaskState,
        reason: &str,
        now: i64,
    ) -> StoreResult<Vec<String>>;
    /// Adds `calls` to a task's call count and returns the new count. Gateways count in
    /// memory and add what they counted in batches.
    async fn add_calls(&self, id: &str, calls: u64) -> StoreResult<u64>;
    /// Marks active tasks whose `expires_at <= now` expired. Returns their ids.
    async fn expire_tasks(&self, now: i64) -> StoreResult<Vec<String>>;
}

/// One-time identifiers, remembered until they expire, so that none is used twice.
#[async_trait]
pub trait ReplayCache: Send + Sync {
    /// Remembers a one-time identifier (an assertion `jti`, a DPoP proof `jti`) until
    /// `expires_at`. Returns false when it was already remembered: a replay.
    /// Identifiers past their expiry are forgotten here too.
    async fn remember_once(
        &self,
        scope: &str,
        id: &str,
        expires_at: i64,
        now: i64,
    ) -> StoreResult<bool>;
}

/// Writ's own keys for signing the writs it issues.
#[async_trait]
pub trait SigningKeyStore: Send + Sync {
    /// Every signing key still kept (active and retired-but-verifying), newest first.
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKey>>;
    /// Adds a new active key and marks every other active key retired at `now`.
    async fn add_signing_key(&self, key: &SigningKey, now: i64) -> StoreResult<()>;
    /// Deletes retired keys whose `retired_at <= before`.
    async fn drop_retired_keys(&self, before: i64) -> StoreResult<u64>;
}

/// Tool pins: each tool's accepted definition, and any drifted one held back.
#[async_trait]
pub trait ToolPinStore: Send + Sync {
    /// Every pin, or only `server`'s, ordered by server then tool.
    async fn tool_pins(&self, server: Option<&str>) -> StoreResult<Vec<ToolPin>>;
    /// The pin of one tool, if it has been seen.
    async fn tool_pin(&self, server: &str, tool: &str) -> StoreResult<Option<ToolPin>>;
    /// What a gateway calls with every tool of `server`'s list each time it fetches it:
    /// each tool's definition as offered and its hash. Returns the pins, in the order
    /// offered, which stay in force:
    /// - a tool never seen is pinned to this definition (trust on first use);
    /// - the pinned hash clears any drift: the server went back to what was accepted;
    /// - another hash is recorded as the pin's drift, for an operator to accept. The same
    ///   drift offered again keeps the `seen_at` of its first sighting.
    ///
    /// One transaction for the whole list, so a server's first list of 500 tools is one
    /// commit, not 500. Appends a [`ChangeKind::Tool`] change only for the tools whose
    /// drift appeared, changed or was cleared, so other gateways re-read those pins then
    /// and not on every fetch.
    async fn observe_tools(
        &self,
        server: &str,
        tools: &[OfferedTool<'_>],
        now: i64,
    ) -> StoreResult<Vec<ToolPin>>;
    /// [`observe_tools`](Self::observe_tools) for one tool.
    async fn observe_tool(
        &self,
        server: &str,
        tool: &str,
        hash: &str,
        definition: &serde_json::Value,
        now: i64,
    ) -> StoreResult<ToolPin> {
        let offered = OfferedTool {
            tool,
            hash,
            definition,
        };
        self.observe_tools(server, &[offered], now)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Database("no pin came back for the tool".into()))
    }
    /// An operator accepts a tool's drifted definition: it becomes the pin (pinned at
    /// `now`) and the drift is cleared, with a [`ChangeKind::Tool`] change. Returns the new
    /// pin. An unknown tool, or a pin with no drift (nothing to accept), is
    /// [`StoreError::NotFound`]. With `expected` (the drift's hash, or a prefix of it, as
    /// the operator reviewed it), a drift that has changed since is [`StoreError::Stale`]
    /// and nothing is accepted.
    async fn accept_tool(
        &self,
        server: &str,
        tool: &str,
        expected: Option<&str>,
        now: i64,
    ) -> StoreResult<ToolPin>;
}

/// The audit log: sealed records (one chain per writer), checkpoints, checkpoint keys,
/// and the anchors retention leaves.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends sealed records in one transaction: all of them or none. One writer owns
    /// each chain and seals its records in order; a record whose writer and seq are
    /// already stored is [`StoreError::Conflict`], and nothing of the batch is kept.
    async fn append_audit(&self, records: &[writ_audit::Record]) -> StoreResult<()>;
    /// The head of a writer's chain — its last record's seq and hash, or its anchor's
    /// when retention pruned every record — from which its next record is sealed.
    async fn audit_head(&self, writer: &str) -> StoreResult<Option<(u64, String)>>;
    /// Where a pruned chain starts: the seq and hash of the last record pruned.
    async fn audit_anchor(&self, writer: &str) -> StoreResult<Option<(u64, String)>>;
    /// A writer's records after seq `after` (0 for all), in seq order, at most `limit`.
    async fn audit_records(
        &self,
        writer: &str,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<writ_audit::Record>>;
    /// Every writer with records, checkpoints or an anchor, by name.
    async fn audit_writers(&self) -> StoreResult<Vec<String>>;
    /// Stores a signed checkpoint of a writer's chain.
    async fn add_audit_checkpoint(&self, checkpoint: &writ_audit::Checkpoint) -> StoreResult<()>;
    /// A writer's checkpoints, in seq order.
    async fn audit_checkpoints(&self, writer: &str) -> StoreResult<Vec<writ_audit::Checkpoint>>;
    /// Stores the public half of a writer's checkpoint key.
    async fn add_audit_key(&self, key: &AuditKey) -> StoreResult<()>;
    /// Every checkpoint key ever stored.
    async fn audit_keys(&self) -> StoreResult<Vec<AuditKey>>;
    /// Records matching `filter`, in commit order (or its reverse).
    async fn audit_query(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>>;
    /// Retention: removes every record sealed before `before_ms`, chain by chain from
    /// its start, and leaves each chain an anchor (the last record removed) so what
    /// remains still verifies. Checkpoints at or before an anchor stay: they vouch for
    /// the anchor.
    async fn prune_audit(&self, before_ms: i64) -> StoreResult<Pruned>;
    /// A blocking appender with a connection of its own, for a writer's group-commit
    /// thread, where the store can give one; `None` means append through
    /// [`AuditStore::append_audit`]. Blocking: call it from that thread or at startup.
    fn audit_appender(&self) -> StoreResult<Option<Box<dyn AuditAppender>>> {
        Ok(None)
    }
}

/// The feed of state changes that keeps every gateway's memory in step with the store.
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// Changes recorded after `after` (a sequence number from an earlier call; 0 for
    /// all), in order, at most `limit`. Every state change of a task, every agent disable,
    /// every key change and every change of a tool pin's drift appends one.
    async fn changes_since(&self, after: u64, limit: u32) -> StoreResult<Vec<Change>>;
}

/// An exclusive, blocking handle for beginning tasks: a token endpoint's writer records
/// each batch of new tasks through one directly, without the hand-offs between the
/// runtime and the pool's connection thread that [`TaskStore::begin_tasks`] makes.
pub trait TaskAppender: Send {
    /// As [`TaskStore::begin_tasks`]: one transaction, all or nothing.
    fn begin_tasks(&mut self, tasks: &[NewTask], now: i64) -> StoreResult<Vec<Begun>>;
}

/// An exclusive, blocking handle for appending to the audit log. A gateway's audit
/// writer commits through one of these directly, so a batch never makes the hand-offs
/// between the runtime and the pool's connection thread that a pooled append makes.
pub trait AuditAppender: Send {
    /// Appends `records`, and `checkpoint` if given, in one transaction: all or nothing,
    /// with the same rules as [`AuditStore::append_audit`].
    fn append(
        &mut self,
        records: &[writ_audit::Record],
        checkpoint: Option<&writ_audit::Checkpoint>,
    ) -> StoreResult<()>;

    /// Housekeeping the store wants done between appends, off the commit path (SQLite:
    /// folding the write-ahead log back into the database, which syncs the file).
    /// Called by the writer after it has answered everyone waiting on the last commit;
    /// a failure is only logged, since every append already stands on its own.
    fn tidy(&mut self) -> StoreResult<()> {
        Ok(())
    }
}
