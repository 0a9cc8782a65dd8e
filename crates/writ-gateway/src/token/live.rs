//! The tasks this process has seen, in memory: each one's record, live state and call
//! count, so a request costs no store round trip.
//!
//! The store is the truth. Every change this process makes (a task begun, a task ended,
//! calls spent) updates memory at once; changes made elsewhere (the CLI, another
//! replica) are taken up when the change feed names the task ([`LiveTasks::refresh`]).
//! Calls are counted in memory and added to the store in batches
//! ([`LiveTasks::flush_calls`]); expiry is counted as it happens and marked in the store
//! by [`LiveTasks::sweep`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use writ_audit::kinds;
use writ_core::clock::Clock;
use writ_core::task::TaskGrant;
use writ_policy::TaskFacts;
use writ_store::{Agent, Store, StoreError, Task, TaskState};

use super::{Denied, agent_facts, task_facts};
use crate::audit::AuditLog;
use crate::events::event;

/// A task as this process knows it: the record, plus live state and call count.
#[derive(Debug)]
pub struct LiveTask {
    pub task: Task,
    pub grant: TaskGrant,
    /// The agent holding the writ, as policy sees it.
    pub agent: writ_policy::AgentFacts,
    state: Mutex<TaskState>,
    /// Calls spent and calls reserved by uses being decided: what the budget is
    /// checked against.
    calls: AtomicU64,
    /// Calls spent: uses handed to an upstream. Only these reach the store.
    spent_calls: AtomicU64,
    /// How many of `spent_calls` the store already holds; the rest are added in batches.
    stored_calls: AtomicU64,
}

impl LiveTask {
    /// The task as recorded. The store parsed its patterns when it read the task, and
    /// refused it if one did not parse.
    pub(super) fn new(task: Task, agent: &Agent) -> Self {
        let grant = TaskGrant {
            purpose: task.purpose.clone(),
            category: task.category.clone(),
            tools: task.tools.clone(),
            data_classes: task.data_classes.clone(),
            max_calls: task.max_calls,
        };
        Self {
            agent: agent_facts(agent),
            state: Mutex::new(task.state),
            calls: AtomicU64::new(task.calls),
            spent_calls: AtomicU64::new(task.calls),
            stored_calls: AtomicU64::new(task.calls),
            grant,
            task,
        }
    }

    /// Takes one call of the task's budget for a use about to be decided. The call is
    /// given back if the reservation is dropped unspent (the use was refused), so a
    /// refusal costs nothing, and concurrent uses can never spend more than the budget.
    /// `Err` carries the budget when none is left.
    pub fn reserve_call(self: &Arc<Self>) -> Result<CallReservation, u64> {
        let before = self.calls.fetch_add(1, Ordering::AcqRel);
        if let Some(max) = self.task.max_calls
            && before >= max
        {
            self.calls.fetch_sub(1, Ordering::AcqRel);
            return Err(max);
        }
        Ok(CallReservation {
            task: self.clone(),
            before,
            spent: false,
        })
    }

    /// The task as policy sees it when it has made `calls` calls.
    pub fn facts_at(&self, calls: u64) -> TaskFacts {
        task_facts(&self.task.id, &self.grant, self.task.depth, calls)
    }

    /// The state now, counting expiry as it happens rather than when it is swept.
    pub fn state(&self, now: i64) -> TaskState {
        let state = self.state.lock().map_or(TaskState::Revoked, |s| *s);
        if state == TaskState::Active && now >= self.task.expires_at {
            TaskState::Expired
        } else {
            state
        }
    }

    fn set_state(&self, state: TaskState) {
        if let Ok(mut current) = self.state.lock() {
            *current = state;
        }
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Acquire)
    }

    /// The task as policy sees it, with its calls so far.
    pub fn facts(&self) -> TaskFacts {
        task_facts(&self.task.id, &self.grant, self.task.depth, self.calls())
    }
}

/// One call of a task's budget, held while the call is decided.
#[derive(Debug)]
pub struct CallReservation {
    task: Arc<LiveTask>,
    before: u64,
    spent: bool,
}

impl CallReservation {
    /// The calls the task had made before this one.
    pub fn calls_before(&self) -> u64 {
        self.before
    }

    /// The call goes ahead: it counts. The store learns the count in batches
    /// (`flush_calls`), so a call costs no store write.
    pub fn spend(mut self) {
        self.spent = true;
        self.task.spent_calls.fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for CallReservation {
    fn drop(&mut self) {
        if !self.spent {
            self.task.calls.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Every task this process has seen, by id, and what keeps them in step with the store.
#[derive(Debug)]
pub struct LiveTasks {
    store: Arc<dyn Store>,
    /// Where tasks ended here or elsewhere are recorded.
    audit: Arc<AuditLog>,
    /// What says when a task has expired.
    clock: Arc<dyn Clock>,
    tasks: Mutex<HashMap<String, Arc<LiveTask>>>,
}

impl LiveTasks {
    pub(super) fn new(store: Arc<dyn Store>, audit: Arc<AuditLog>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            audit,
            clock,
            tasks: Mutex::default(),
        }
    }

    /// The live task `id`, loaded from the store on first sight.
    pub async fn get(&self, id: &str) -> Result<Option<Arc<LiveTask>>, Denied> {
        if let Some(live) = self.tasks.lock().ok().and_then(|t| t.get(id).cloned()) {
            return Ok(Some(live));
        }
        let unavailable = |err: StoreError| {
            tracing::error!(%err, task = id, "could not read a task");
            Denied::Unavailable
        };
        let Some(task) = self.store.task(id).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let agent = self
            .store
            .agent(&task.agent_id)
            .await
            .map_err(unavailable)?
            .filter(|a| a.id == task.agent_id)
            .ok_or_else(|| {
                Denied::InvalidToken(format!("the agent of task `{id}` is no longer registered"))
            })?;
        Ok(Some(self.remember(task, &agent)))
    }

    /// Keeps `task` (held by `agent`) in memory; the one already kept, if another
    /// request got there first.
    pub(super) fn remember(&self, task: Task, agent: &Agent) -> Arc<LiveTask> {
        let id = task.id.clone();
        let live = Arc::new(LiveTask::new(task, agent));
        match self.tasks.lock() {
            Ok(mut tasks) => tasks.entry(id).or_insert(live).clone(),
            Err(_) => live,
        }
    }

    /// Re-reads one task's state from the store into memory, if this process knows it:
    /// the change feed named it.
    pub(super) async fn refresh(&self, id: &str) {
        let known = self.tasks.lock().ok().and_then(|t| t.get(id).cloned());
        let Some(live) = known else { return };
        match self.store.task(id).await {
            Ok(Some(task)) => {
                // Ended elsewhere (the CLI, another replica): recorded as this gateway
                // takes it up.
                if live.state(self.clock.now()) == TaskState::Active
                    && task.state != TaskState::Active
                {
                    let reason = task.reason.as_deref().unwrap_or("ended");
                    self.audit
                        .note(
                            ended_event(id, task.state, reason, &[]).with_field("seen_in", "store"),
                        )
                        .await;
                }
                live.set_state(task.state);
            }
            Ok(None) => live.set_state(TaskState::Revoked),
            Err(err) => tracing::error!(%err, task = id, "could not refresh a task"),
        }
    }

    /// Marks expired tasks so in the store (memory counts expiry on each use), and
    /// forgets every task that is no longer active.
    pub(super) async fn sweep(&self) {
        match self.store.expire_tasks(self.clock.now()).await {
            Ok(expired) => {
                self.set_states(&expired, TaskState::Expired, TaskState::Expired);
                for id in &expired {
                    self.audit
                        .note(ended_event(id, TaskState::Expired, "expired", &[]))
                        .await;
                }
            }
            Err(err) => tracing::error!(%err, "could not sweep expired tasks"),
        }
        if let Ok(mut tasks) = self.tasks.lock() {
            let now = self.clock.now();
            tasks.retain(|_, t| t.state(now) == TaskState::Active);
        }
    }

    /// Adds the calls spent since the last flush to the store. Reservations of uses
    /// still being decided are not calls yet: a refused one is given back.
    pub(super) async fn flush_calls(&self) {
        let spent = |t: &LiveTask| t.spent_calls.load(Ordering::Acquire);
        let pending: Vec<Arc<LiveTask>> = match self.tasks.lock() {
            Ok(tasks) => tasks
                .values()
                .filter(|t| spent(t) > t.stored_calls.load(Ordering::Acquire))
                .cloned()
                .collect(),
            Err(_) => return,
        };
        for task in pending {
            let counted = spent(&task);
            let stored = task.stored_calls.load(Ordering::Acquire);
            let added = counted.saturating_sub(stored);
            if added == 0 {
                continue;
            }
            match self.store.add_calls(&task.task.id, added).await {
                Ok(_) => task.stored_calls.store(counted, Ordering::Release),
                Err(err) => tracing::error!(%err, task = %task.task.id, "could not record calls"),
            }
        }
    }

    /// Memory follows a state change this process made in the store: the first task
    /// takes `first`, the rest (its descendants, for an ended task) take `rest`.
    fn set_states(&self, ids: &[String], first: TaskState, rest: TaskState) {
        let Ok(tasks) = self.tasks.lock() else { return };
        for (i, id) in ids.iter().enumerate() {
            if let Some(live) = tasks.get(id) {
                live.set_state(if i == 0 { first } else { rest });
            }
        }
    }

    /// Ends a task and its descendants in the store and in memory at once.
    pub async fn end_task(
        &self,
        id: &str,
        state: TaskState,
        reason: &str,
    ) -> Result<Vec<String>, StoreError> {
        self.end_task_for(id, state, reason, None).await
    }

    /// [`end_task`](Self::end_task), because of call `call` (a deviation), which the
    /// audit record names.
    pub async fn end_task_for(
        &self,
        id: &str,
        state: TaskState,
        reason: &str,
        call: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let changed = self
            .store
            .end_task(id, state, reason, self.clock.now())
            .await?;
        self.set_states(&changed, state, TaskState::Revoked);
        if !changed.is_empty() {
            let ended = ended_event(id, state, reason, &changed);
            match call {
                // A deviation's revocation is committed before the agent is told of it,
                // like the deviation's own record just before it.
                Some(call) => {
                    if let Err(err) = self
                        .audit
                        .record(ended.with_field("call", call.to_owned()))
                        .await
                    {
                        tracing::error!(%err, task = id, "could not record a revocation");
                    }
                }
                None => self.audit.note(ended).await,
            }
        }
        Ok(changed)
    }
}

/// `task.completed`, `task.revoked` or `task.expired`: task `id` ended, and with it the
/// tasks in `ended` (itself first, then its descendants).
fn ended_event(id: &str, state: TaskState, reason: &str, ended: &[String]) -> writ_audit::Event {
    let kind = match state {
        TaskState::Completed => kinds::TASK_COMPLETED,
        TaskState::Expired => kinds::TASK_EXPIRED,
        TaskState::Active | TaskState::Revoked => kinds::TASK_REVOKED,
    };
    event(kind)
        .with_task(id)
        .with_field("reason", reason.to_owned())
        .with_field("ended", ended.to_vec())
}
