//! The issuer's writer of new tasks: every task begun, with the single-use identifier
//! its request spent, is recorded in one store transaction with every other waiting at
//! that moment (group commit, as the audit log commits its records).
//!
//! Whoever finds nobody writing spawns a *leader*: a task that takes every task waiting
//! (up to [`MAX_BATCH`]), records them, answers each, and goes on until nothing waits.
//! It writes through a connection of its own where the store gives one
//! ([`TaskStore::task_appender`]), blocking its worker for the commit as the audit
//! log's leader does (on a runtime with a single worker it hands the commit to the
//! blocking pool instead), and through [`TaskStore::begin_tasks`] otherwise. One
//! transaction for a batch replaces, per exchange, one for the identifier and one for
//! the task, each a few round trips to the pool's connection thread and a turn at
//! SQLite's write lock. Nobody is answered before the transaction is committed.
//!
//! A batch that fails because one of its tasks cannot be recorded (its parent gone,
//! say) is tried again task by task, so that only that task's exchange is refused; a
//! failure of the store itself refuses every exchange of the batch.
//!
//! [`TaskStore::task_appender`]: writ_store::TaskStore::task_appender
//! [`TaskStore::begin_tasks`]: writ_store::TaskStore::begin_tasks

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;
use writ_core::clock::Clock;
use writ_store::{Begun, NewTask, Store, StoreError, StoreResult, TaskAppender};

/// The most tasks one transaction takes.
const MAX_BATCH: usize = 256;

type Answer = oneshot::Sender<StoreResult<Begun>>;

/// Records the tasks the issuer begins, in batches.
pub struct TaskWriter {
    store: Arc<dyn Store>,
    /// The time identifiers expire by.
    clock: Arc<dyn Clock>,
    queue: Mutex<Queue>,
    /// Where the leader commits.
    sink: Mutex<Sink>,
}

impl std::fmt::Debug for TaskWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskWriter").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Queue {
    waiting: Vec<(NewTask, Answer)>,
    /// A leader is on its way or writing; it looks again before it leaves.
    leading: bool,
}

enum Sink {
    /// A blocking connection of the writer's own (`None` while a blocking-pool thread
    /// has it).
    Own {
        appender: Option<Box<dyn TaskAppender>>,
        /// Whether the leader may block its worker for the commit: only on a runtime
        /// with other workers to go on meanwhile (see `audit`'s `Sink`).
        inline: bool,
    },
    /// The store's async method (in-memory stores).
    Shared,
}

impl TaskWriter {
    /// A writer through `store`, on a connection of its own where the store gives one.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Result<Arc<Self>, StoreError> {
        let sink = match store.task_appender()? {
            Some(appender) => {
                let runtime = tokio::runtime::Handle::current();
                let inline = runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                    && runtime.metrics().num_workers() >= 2;
                Sink::Own {
                    appender: Some(appender),
                    inline,
                }
            }
            None => Sink::Shared,
        };
        Ok(Arc::new(Self {
            store,
            clock,
            queue: Mutex::default(),
            sink: Mutex::new(sink),
        }))
    }

    /// Records `task` and spends its identifier; returns once that is committed, or
    /// what refused it.
    pub async fn begin(self: &Arc<Self>, task: NewTask) -> StoreResult<Begun> {
        let (answer, answered) = oneshot::channel();
        {
            let mut queue = lock(&self.queue);
            queue.waiting.push((task, answer));
            if !queue.leading {
                queue.leading = true;
                let writer = self.clone();
                tokio::spawn(async move { writer.lead().await });
            }
        }
        answered
            .await
            .map_err(|_| StoreError::Database("the task writer stopped".into()))?
    }

    /// The leader: writes what waits, batch after batch, until nothing does.
    async fn lead(self: Arc<Self>) {
        loop {
            // The exchanges already able to run go first and join this batch: a task
            // spawned from a worker runs next, ahead of them, and without this the
            // leader takes one task a batch at a steady rate of exchanges.
            tokio::task::yield_now().await;
            let batch: Vec<(NewTask, Answer)> = {
                let mut queue = lock(&self.queue);
                if queue.waiting.is_empty() {
                    // Stepping down under the same lock: whoever queues next leads.
                    queue.leading = false;
                    return;
                }
                let count = queue.waiting.len().min(MAX_BATCH);
                queue.waiting.drain(..count).collect()
            };
            self.write(batch).await;
        }
    }

    /// Records one batch and answers everyone in it.
    async fn write(&self, batch: Vec<(NewTask, Answer)>) {
        let (tasks, answers): (Vec<NewTask>, Vec<Answer>) = batch.into_iter().unzip();
        let count = tasks.len();
        let started = std::time::Instant::now();
        let (tasks, outcome) = self.record(tasks).await;
        tracing::debug!(tasks = count, elapsed = ?started.elapsed(), "new tasks recorded");
        match outcome {
            Ok(begun) if begun.len() == count => {
                for (answer, begun) in answers.into_iter().zip(begun) {
                    let _ = answer.send(Ok(begun));
                }
            }
            Ok(begun) => {
                let err = format!("the store answered {} of {count} tasks", begun.len());
                tracing::error!(%err, "could not record new tasks");
                for answer in answers {
                    let _ = answer.send(Err(StoreError::Database(err.clone())));
                }
            }
            Err(err @ (StoreError::Conflict(_) | StoreError::NotFound(_))) if count > 1 => {
                // Nothing of the batch was recorded, and one of its tasks was why: each on
                // its own, so that only that one is refused.
                tracing::warn!(%err, tasks = count, "a batch of new tasks failed; recording them one by one");
                for (task, answer) in tasks.into_iter().zip(answers) {
                    let (_, alone) = self.record(vec![task]).await;
                    let alone = alone.and_then(|begun| {
                        begun.first().copied().ok_or_else(|| {
                            StoreError::Database("the store answered no task".into())
                        })
                    });
                    let _ = answer.send(alone);
                }
            }
            Err(err) => {
                tracing::error!(%err, tasks = count, "could not record new tasks");
                let text = err.to_string();
                let mut answers = answers.into_iter();
                if let Some(first) = answers.next() {
                    let _ = first.send(Err(err));
                }
                for answer in answers {
                    let _ = answer.send(Err(StoreError::Database(text.clone())));
                }
            }
        }
    }

    /// Records `tasks` in one transaction; gives them back with the outcome.
    async fn record(&self, tasks: Vec<NewTask>) -> (Vec<NewTask>, StoreResult<Vec<Begun>>) {
        let now = self.clock.now();
        let own = {
            let mut sink = lock(&self.sink);
            match &mut *sink {
                Sink::Own { appender, inline } => Some((appender.take(), *inline)),
                Sink::Shared => None,
            }
        };
        let Some((appender, inline)) = own else {
            let outcome = self.store.begin_tasks(&tasks, now).await;
            return (tasks, outcome);
        };
        let Some(mut appender) = appender else {
            let lost = StoreError::Database("the new tasks' store connection was lost".into());
            return (tasks, Err(lost));
        };
        let (appender, tasks, outcome) = if inline {
            let outcome = appender.begin_tasks(&tasks, now);
            (appender, tasks, outcome)
        } else {
            let blocking = tokio::task::spawn_blocking(move || {
                let outcome = appender.begin_tasks(&tasks, now);
                (appender, tasks, outcome)
            })
            .await;
            match blocking {
                Ok(done) => done,
                Err(err) => {
                    let stopped = StoreError::Database(format!("the task commit stopped: {err}"));
                    return (Vec::new(), Err(stopped));
                }
            }
        };
        if let Sink::Own { appender: slot, .. } = &mut *lock(&self.sink) {
            *slot = Some(appender);
        }
        (tasks, outcome)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Both are consistent after every statement, so a panic elsewhere while one was
    // locked leaves nothing half done.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
