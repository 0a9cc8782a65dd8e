//! A store that fails on demand: [`FaultyStore`] wraps any [`Store`], forwards every
//! method to it, and makes the operations a test switches on fail, so tests can show
//! what Writ does when its store does (refuse, fail closed, recover) without reaching
//! into a backend's files.
//!
//! Always compiled rather than behind a feature: it needs no dependency and costs nothing
//! unless constructed, while a feature that only dev-dependencies enable would build this
//! crate, and every crate above it, twice: once for tests and once for everything else.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use writ_audit::{Checkpoint, Record};

use crate::{
    Agent, AgentStore, AuditAppender, AuditEntry, AuditFilter, AuditKey, AuditStore, Begun, Change,
    ChangeFeed, NewTask, OfferedTool, Pruned, ReplayCache, SigningKey, SigningKeyStore, Store,
    StoreError, StoreResult, Task, TaskAppender, TaskFilter, TaskState, TaskStore, ToolPin,
    ToolPinStore,
};

/// A class of store operations that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Reading agents.
    AgentReads,
    /// Registering and disabling agents.
    AgentWrites,
    /// Reading tasks.
    TaskReads,
    /// Recording (also with one-time identifiers), ending, counting and expiring tasks.
    TaskWrites,
    /// The replay cache's `remember_once`, and tasks recorded with one-time
    /// identifiers.
    ReplayChecks,
    /// Reading Writ's signing keys.
    KeyReads,
    /// Adding and dropping signing keys.
    KeyWrites,
    /// Reading tool pins.
    PinReads,
    /// Observing tools and accepting drifts.
    PinWrites,
    /// Reading the audit log: heads, anchors, records, writers, checkpoints, keys,
    /// queries.
    AuditReads,
    /// Appending audit records and checkpoints, through the store or through an appender
    /// it gave (also one given before the switch was thrown), and opening an appender.
    AuditAppends,
    /// Adding checkpoint keys and pruning.
    AuditUpkeep,
    /// Reading the change feed.
    ChangeReads,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AgentReads => "agent reads",
            Self::AgentWrites => "agent writes",
            Self::TaskReads => "task reads",
            Self::TaskWrites => "task writes",
            Self::ReplayChecks => "replay checks",
            Self::KeyReads => "signing key reads",
            Self::KeyWrites => "signing key writes",
            Self::PinReads => "tool pin reads",
            Self::PinWrites => "tool pin writes",
            Self::AuditReads => "audit reads",
            Self::AuditAppends => "audit appends",
            Self::AuditUpkeep => "audit upkeep",
            Self::ChangeReads => "change feed reads",
        })
    }
}

/// One switch, and how many operations it has refused.
#[derive(Debug, Default)]
struct Switch {
    on: AtomicBool,
    refused: AtomicU64,
}

/// Every switch, shared between the store and the appenders it hands out.
#[derive(Debug, Default)]
struct Switches {
    agent_reads: Switch,
    agent_writes: Switch,
    task_reads: Switch,
    task_writes: Switch,
    replay_checks: Switch,
    key_reads: Switch,
    key_writes: Switch,
    pin_reads: Switch,
    pin_writes: Switch,
    audit_reads: Switch,
    audit_appends: Switch,
    audit_upkeep: Switch,
    change_reads: Switch,
}

impl Switches {
    /// New tasks are task writes, and replay checks when they spend an identifier.
    fn check_begin(&self, tasks: &[NewTask]) -> StoreResult<()> {
        self.check(Fault::TaskWrites)?;
        if tasks.iter().any(|t| t.once.is_some()) {
            self.check(Fault::ReplayChecks)?;
        }
        Ok(())
    }

    fn switch(&self, fault: Fault) -> &Switch {
        match fault {
            Fault::AgentReads => &self.agent_reads,
            Fault::AgentWrites => &self.agent_writes,
            Fault::TaskReads => &self.task_reads,
            Fault::TaskWrites => &self.task_writes,
            Fault::ReplayChecks => &self.replay_checks,
            Fault::KeyReads => &self.key_reads,
            Fault::KeyWrites => &self.key_writes,
            Fault::PinReads => &self.pin_reads,
            Fault::PinWrites => &self.pin_writes,
            Fault::AuditReads => &self.audit_reads,
            Fault::AuditAppends => &self.audit_appends,
            Fault::AuditUpkeep => &self.audit_upkeep,
            Fault::ChangeReads => &self.change_reads,
        }
    }

    /// `Err` when `fault` is switched on: the operation fails before reaching the store.
    fn check(&self, fault: Fault) -> StoreResult<()> {
        let switch = self.switch(fault);
        if switch.on.load(Ordering::Acquire) {
            switch.refused.fetch_add(1, Ordering::AcqRel);
            return Err(StoreError::Database(format!(
                "injected fault: {fault} fail"
            )));
        }
        Ok(())
    }
}

/// A [`Store`] that forwards to another and fails the operations switched on with
/// [`FaultyStore::fail`], with [`StoreError::Database`] saying `injected fault: …`.
/// Nothing is switched on at first.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    switches: Arc<Switches>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            switches: Arc::default(),
        }
    }

    /// Makes the operations of `fault` fail from now on (`true`), or work again.
    pub fn fail(&self, fault: Fault, on: bool) {
        self.switches.switch(fault).on.store(on, Ordering::Release);
    }

    /// How many operations of `fault` have been refused so far.
    pub fn refused(&self, fault: Fault) -> u64 {
        self.switches.switch(fault).refused.load(Ordering::Acquire)
    }

    fn check(&self, fault: Fault) -> StoreResult<()> {
        self.switches.check(fault)
    }
}

#[async_trait]
impl AgentStore for FaultyStore {
    async fn create_agent(&self, agent: &Agent) -> StoreResult<()> {
        self.check(Fault::AgentWrites)?;
        self.inner.create_agent(agent).await
    }

    async fn agent(&self, id_or_name: &str) -> StoreResult<Option<Agent>> {
        self.check(Fault::AgentReads)?;
        self.inner.agent(id_or_name).await
    }

    async fn agent_by_external(&self, issuer: &str, subject: &str) -> StoreResult<Option<Agent>> {
        self.check(Fault::AgentReads)?;
        self.inner.agent_by_external(issuer, subject).await
    }

    async fn agents(&self) -> StoreResult<Vec<Agent>> {
        self.check(Fault::AgentReads)?;
        self.inner.agents().await
    }

    async fn disable_agent(&self, id: &str, now: i64) -> StoreResult<Vec<String>> {
        self.check(Fault::AgentWrites)?;
        self.inner.disable_agent(id, now).await
    }
}

#[async_trait]
impl TaskStore for FaultyStore {
    async fn insert_task(&self, task: &Task) -> StoreResult<()> {
        self.check(Fault::TaskWrites)?;
        self.inner.insert_task(task).await
    }

    async fn begin_tasks(&self, tasks: &[NewTask], now: i64) -> StoreResult<Vec<Begun>> {
        self.switches.check_begin(tasks)?;
        self.inner.begin_tasks(tasks, now).await
    }

    /// The inner store's task appender, wrapped so that [`Fault::TaskWrites`] and
    /// [`Fault::ReplayChecks`] reach it too: a gateway takes it once, at startup.
    fn task_appender(&self) -> StoreResult<Option<Box<dyn TaskAppender>>> {
        self.check(Fault::TaskWrites)?;
        Ok(self.inner.task_appender()?.map(|inner| {
            Box::new(FaultyTaskAppender {
                inner,
                switches: self.switches.clone(),
            }) as Box<dyn TaskAppender>
        }))
    }

    async fn task(&self, id: &str) -> StoreResult<Option<Task>> {
        self.check(Fault::TaskReads)?;
        self.inner.task(id).await
    }

    async fn tasks(&self, filter: &TaskFilter) -> StoreResult<Vec<Task>> {
        self.check(Fault::TaskReads)?;
        self.inner.tasks(filter).await
    }

    async fn end_task(
        &self,
        id: &str,
        state: TaskState,
        reason: &str,
        now: i64,
    ) -> StoreResult<Vec<String>> {
        self.check(Fault::TaskWrites)?;
        self.inner.end_task(id, state, reason, now).await
    }

    async fn add_calls(&self, id: &str, calls: u64) -> StoreResult<u64> {
        self.check(Fault::TaskWrites)?;
        self.inner.add_calls(id, calls).await
    }

    async fn expire_tasks(&self, now: i64) -> StoreResult<Vec<String>> {
        self.check(Fault::TaskWrites)?;
        self.inner.expire_tasks(now).await
    }
}

#[async_trait]
impl ReplayCache for FaultyStore {
    async fn remember_once(
        &self,
        scope: &str,
        id: &str,
        expires_at: i64,
        now: i64,
    ) -> StoreResult<bool> {
        self.check(Fault::ReplayChecks)?;
        self.inner.remember_once(scope, id, expires_at, now).await
    }
}

#[async_trait]
impl SigningKeyStore for FaultyStore {
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKey>> {
        self.check(Fault::KeyReads)?;
        self.inner.signing_keys().await
    }

    async fn add_signing_key(&self, key: &SigningKey, now: i64) -> StoreResult<()> {
        self.check(Fault::KeyWrites)?;
        self.inner.add_signing_key(key, now).await
    }

    async fn drop_retired_keys(&self, before: i64) -> StoreResult<u64> {
        self.check(Fault::KeyWrites)?;
        self.inner.drop_retired_keys(before).await
    }
}

#[async_trait]
impl ToolPinStore for FaultyStore {
    async fn tool_pins(&self, server: Option<&str>) -> StoreResult<Vec<ToolPin>> {
        self.check(Fault::PinReads)?;
        self.inner.tool_pins(server).await
    }

    async fn tool_pin(&self, server: &str, tool: &str) -> StoreResult<Option<ToolPin>> {
        self.check(Fault::PinReads)?;
        self.inner.tool_pin(server, tool).await
    }

    async fn observe_tools(
        &self,
        server: &str,
        tools: &[OfferedTool<'_>],
        now: i64,
    ) -> StoreResult<Vec<ToolPin>> {
        self.check(Fault::PinWrites)?;
        self.inner.observe_tools(server, tools, now).await
    }

    async fn observe_tool(
        &self,
        server: &str,
        tool: &str,
        hash: &str,
        definition: &serde_json::Value,
        now: i64,
    ) -> StoreResult<ToolPin> {
        self.check(Fault::PinWrites)?;
        self.inner
            .observe_tool(server, tool, hash, definition, now)
            .await
    }

    async fn accept_tool(
        &self,
        server: &str,
        tool: &str,
        expected: Option<&str>,
        now: i64,
    ) -> StoreResult<ToolPin> {
        self.check(Fault::PinWrites)?;
        self.inner.accept_tool(server, tool, expected, now).await
    }
}

#[async_trait]
impl AuditStore for FaultyStore {
    async fn append_audit(&self, records: &[Record]) -> StoreResult<()> {
        self.check(Fault::AuditAppends)?;
        self.inner.append_audit(records).await
    }

    async fn audit_head(&self, writer: &str) -> StoreResult<Option<(u64, String)>> {
        self.check(Fault::AuditReads)?;
        self.inner.audit_head(writer).await
    }

    async fn audit_anchor(&self, writer: &str) -> StoreResult<Option<(u64, String)>> {
        self.check(Fault::AuditReads)?;
        self.inner.audit_anchor(writer).await
    }

    async fn audit_records(
        &self,
        writer: &str,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<Record>> {
        self.check(Fault::AuditReads)?;
        self.inner.audit_records(writer, after, limit).await
    }

    async fn audit_writers(&self) -> StoreResult<Vec<String>> {
        self.check(Fault::AuditReads)?;
        self.inner.audit_writers().await
    }

    async fn add_audit_checkpoint(&self, checkpoint: &Checkpoint) -> StoreResult<()> {
        self.check(Fault::AuditAppends)?;
        self.inner.add_audit_checkpoint(checkpoint).await
    }

    async fn audit_checkpoints(&self, writer: &str) -> StoreResult<Vec<Checkpoint>> {
        self.check(Fault::AuditReads)?;
        self.inner.audit_checkpoints(writer).await
    }

    async fn add_audit_key(&self, key: &AuditKey) -> StoreResult<()> {
        self.check(Fault::AuditUpkeep)?;
        self.inner.add_audit_key(key).await
    }

    async fn audit_keys(&self) -> StoreResult<Vec<AuditKey>> {
        self.check(Fault::AuditReads)?;
        self.inner.audit_keys().await
    }

    async fn audit_query(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        self.check(Fault::AuditReads)?;
        self.inner.audit_query(filter).await
    }

    async fn prune_audit(&self, before_ms: i64) -> StoreResult<Pruned> {
        self.check(Fault::AuditUpkeep)?;
        self.inner.prune_audit(before_ms).await
    }

    /// The inner store's appender, wrapped so that [`Fault::AuditAppends`] reaches it
    /// too: a gateway takes its appender once, at startup, and appends through it alone.
    fn audit_appender(&self) -> StoreResult<Option<Box<dyn AuditAppender>>> {
        self.check(Fault::AuditAppends)?;
        Ok(self.inner.audit_appender()?.map(|inner| {
            Box::new(FaultyAppender {
                inner,
                switches: self.switches.clone(),
            }) as Box<dyn AuditAppender>
        }))
    }
}

#[async_trait]
impl ChangeFeed for FaultyStore {
    async fn changes_since(&self, after: u64, limit: u32) -> StoreResult<Vec<Change>> {
        self.check(Fault::ChangeReads)?;
        self.inner.changes_since(after, limit).await
    }
}

/// A task appender of the inner store's that fails while [`Fault::TaskWrites`] is
/// switched on, or [`Fault::ReplayChecks`] for tasks with an identifier.
struct FaultyTaskAppender {
    inner: Box<dyn TaskAppender>,
    switches: Arc<Switches>,
}

impl fmt::Debug for FaultyTaskAppender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyTaskAppender").finish_non_exhaustive()
    }
}

impl TaskAppender for FaultyTaskAppender {
    fn begin_tasks(&mut self, tasks: &[NewTask], now: i64) -> StoreResult<Vec<Begun>> {
        self.switches.check_begin(tasks)?;
        self.inner.begin_tasks(tasks, now)
    }
}

/// An appender of the inner store's that fails its appends while
/// [`Fault::AuditAppends`] is switched on. Housekeeping is forwarded as it is.
struct FaultyAppender {
    inner: Box<dyn AuditAppender>,
    switches: Arc<Switches>,
}

impl fmt::Debug for FaultyAppender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyAppender").finish_non_exhaustive()
    }
}

impl AuditAppender for FaultyAppender {
    fn append(&mut self, records: &[Record], checkpoint: Option<&Checkpoint>) -> StoreResult<()> {
        self.switches.check(Fault::AuditAppends)?;
        self.inner.append(records, checkpoint)
    }

    fn tidy(&mut self) -> StoreResult<()> {
        self.inner.tidy()
    }
}
