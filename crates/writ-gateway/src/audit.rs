//! The audit log's writer: every event of this gateway is sealed into its hash chain and
//! committed to the store; call decisions are committed before the call goes on.
//!
//! Events wait in one queue. Whoever finds nobody committing starts a *leader*: a task
//! on the runtime that takes every event waiting at that moment (up to [`MAX_BATCH`]),
//! seals them in order and appends them in one transaction, and goes on until the
//! queue is empty — group commit: concurrent calls share one write instead of queueing
//! behind one each. The leader writes through a store connection of its own (where the
//! store offers one), blocking its worker thread for the commit (tens of microseconds;
//! only one leader runs at a time, so the other workers go on serving requests). On a
//! runtime with a single worker the commit goes to the blocking pool instead: there,
//! a commit waiting for SQLite's write lock would stall the task that holds it.
//! It is a task and not a thread of its own because a hand-over between threads costs
//! two wake-ups per call, which on a shared two-core machine was most of the wait for
//! a decision's commit (BENCHMARKS.md, "Audit log"); a task spawned by the calling task
//! runs on the same worker right after it, with no wake-up at all.
//!
//! [`AuditLog::record`] waits until its event is committed: the pipeline uses it for
//! call decisions, which must be durable before a call is answered or forwarded.
//! [`AuditLog::note`] hands an event over without waiting, for what happens after the
//! decision (forwarded, completed, tools listed, tasks begun): recorded in order, in the
//! same chain, with the next decision's commit or at most [`NOTE_DELAY`] later, but
//! never holding up the call. When the queue is full, both wait for room.
//!
//! If a write fails, every waiting call of the batch is refused (fail closed), the
//! chain's head is put back, and the gateway reports itself unready until a write
//! succeeds again.
//!
//! Each gateway process is one writer with a chain of its own (`gw_` and a random id),
//! so replicas never contend for a chain head. The chain starts with an `audit.started`
//! record naming the Ed25519 key its checkpoints are signed with. The key is made for
//! this chain and its private half never leaves this process, so nobody who edits the
//! database later can sign a checkpoint in its name. A checkpoint is signed every
//! `checkpoint_every` records, `checkpoint_interval` after the last record none covers,
//! and when the gateway stops.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use sha2::Digest as _;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use writ_audit::{Chain, Checkpoint, Event, Record, kinds};
use writ_core::clock::Clock;
use writ_core::config::AuditConfig;
use writ_store::{AuditAppender, AuditKey, Store, StoreError};

/// The most events one transaction takes.
const MAX_BATCH: usize = 512;
/// Events waiting to be committed; beyond this, callers wait to hand theirs over. This
/// bounds what a writer that has fallen behind holds in memory (a page of a filtered
/// tool list is a record of a few kilobytes): at 8,192, a flood of lists kept the
/// gateway's resident memory 40 MiB higher, for no gain in throughput.
const QUEUE: usize = 2_048;
/// How often retention looks for records to prune.
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);
/// How long an event nobody waits for may wait to share a commit. Every commit rewrites
/// whole pages of the table and its indexes, so one transaction per event would write
/// tens of kilobytes for each; held this long, a call's `call.forwarded` and
/// `call.completed` ride along with the next decision's commit instead. A crash loses
/// at most this much of such events — never a decision, which is always waited for.
const NOTE_DELAY: Duration = Duration::from_millis(10);

/// Why an event was not recorded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the audit log could not be written: {0}")]
pub struct AuditError(String);

/// This gateway's writer of the audit log.
pub struct AuditLog {
    writer: String,
    key_id: String,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("writer", &self.writer)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// What callers and the leader share.
struct Shared {
    queue: Mutex<Queue>,
    /// The chain and the store connection: held by the one leader committing.
    committer: tokio::sync::Mutex<Committer>,
    /// Woken after each commit, for callers waiting for room in a full queue.
    room: Notify,
    healthy: AtomicBool,
}

type Waiting = Option<oneshot::Sender<Result<(), AuditError>>>;

#[derive(Default)]
struct Queue {
    /// Handed over, not yet taken by a leader; in order.
    events: VecDeque<(Event, Waiting)>,
    /// A checkpoint was asked for (by the interval tick).
    checkpoint: bool,
    /// A leader is on its way or committing; it looks again before it leaves.
    leading: bool,
    /// A commit of held notes is scheduled, [`NOTE_DELAY`] after the first.
    flush_scheduled: bool,
    /// [`AuditLog::close`] ran: nothing more is taken.
    stopped: bool,
}

impl AuditLog {
    /// Starts a new chain for this process: makes its checkpoint key, stores the public
    /// half, and records `audit.started` as the chain's first record. Records and
    /// checkpoints are stamped with `clock`'s time.
    pub async fn start(
        store: Arc<dyn Store>,
        settings: &AuditConfig,
        shutdown: CancellationToken,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, StoreError> {
        let writer = format!("gw_{}", uuid::Uuid::new_v4().simple());
        let key = SigningKey::generate(&mut rand_core::OsRng);
        let public_key = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
        let key_id = key_id(&public_key);
        let now = clock.now_ms();
        store
            .add_audit_key(&AuditKey {
                key_id: key_id.clone(),
                writer: writer.clone(),
                public_key: public_key.clone(),
                created_ms: now,
            })
            .await?;
        let sink = match store.audit_appender()? {
            Some(own) => Sink::own(own),
            None => Sink::Shared(store.clone()),
        };
        let committer = Committer {
            sink,
            chain: Chain::new(writer.clone(), None),
            key,
            key_id: key_id.clone(),
            checkpoint_every: u64::try_from(settings.checkpoint_every).unwrap_or(u64::MAX),
            unsigned: 0,
            clock: clock.clone(),
        };
        let log = Arc::new(Self {
            writer,
            key_id,
            shared: Arc::new(Shared {
                queue: Mutex::default(),
                committer: tokio::sync::Mutex::new(committer),
                room: Notify::new(),
                healthy: AtomicBool::new(true),
            }),
        });
        let started = Event::new(kinds::AUDIT_STARTED)
            .map(|e| {
                e.with_field("key_id", log.key_id.clone())
                    .with_field("public_key", public_key)
                    .with_field("version", env!("CARGO_PKG_VERSION"))
            })
            .map_err(|e| StoreError::Database(e.to_string()))?;
        log.record(started)
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?;
        tokio::spawn(tick(
            log.shared.clone(),
            settings.checkpoint_interval,
            shutdown.clone(),
        ));
        if let Some(retain) = settings.retain {
            tokio::spawn(prune(store, retain, shutdown, clock));
        }
        tracing::info!(writer = %log.writer, key = %log.key_id, "audit log writer started");
        Ok(log)
    }

    /// This process's chain.
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// Records `event` and returns once it is committed.
    pub async fn record(&self, event: Event) -> Result<(), AuditError> {
        let (done, committed) = oneshot::channel();
        self.shared.hand_over(event, Some(done)).await?;
        committed.await.map_err(|_| stopped())?
    }

    /// Hands `event` over without waiting for it to be committed. A failure is logged
    /// (and turns the gateway unready); nobody else is told.
    pub async fn note(&self, event: Event) {
        if self.shared.hand_over(event, None).await.is_err() {
            tracing::error!("the audit log is closed; an event was not recorded");
        }
    }

    /// Commits everything handed over so far, signs a last checkpoint and closes the
    /// log. Call it after in-flight calls have drained: their outcomes are recorded
    /// first, and anything handed over after this is refused.
    pub async fn close(&self) {
        self.shared.lock_queue().stopped = true;
        // Waits for a leader at work, then commits what it left, if anything.
        let mut committer = self.shared.committer.lock().await;
        loop {
            let (batch, _) = self.shared.take(true);
            let last = batch.is_empty();
            self.shared.commit(&mut committer, batch, last).await;
            if last {
                return;
            }
        }
    }

    /// False after a failed write, until a write succeeds.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }
}

impl Shared {
    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        // The queue is consistent after every statement, so a panic elsewhere while it
        // was locked leaves nothing half done.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `event` (waiting for room when the queue is full) and makes sure it gets
    /// committed: at once when someone waits for it, otherwise with the next commit or
    /// after [`NOTE_DELAY`].
    async fn hand_over(self: &Arc<Self>, event: Event, done: Waiting) -> Result<(), AuditError> {
        let mut item = Some((event, done));
        loop {
            let room = self.room.notified();
            {
                let mut queue = self.lock_queue();
                if queue.stopped {
                    return Err(stopped());
                }
                if queue.events.len() < QUEUE {
                    let waited_for = item.as_ref().is_some_and(|(_, done)| done.is_some());
                    queue.events.extend(item.take());
                    if waited_for {
                        self.lead_locked(&mut queue);
                    } else if !queue.leading && !queue.flush_scheduled {
                        queue.flush_scheduled = true;
                        let shared = self.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(NOTE_DELAY).await;
                            let mut queue = shared.lock_queue();
                            queue.flush_scheduled = false;
                            if !queue.events.is_empty() {
                                shared.lead_locked(&mut queue);
                            }
                        });
                    }
                    return Ok(());
                }
                // Full: a leader is on its way (whoever filled it started one).
                self.lead_locked(&mut queue);
            }
            room.await;
        }
    }

    /// Starts a leader unless one is on its way or at work.
    fn lead_locked(self: &Arc<Self>, queue: &mut Queue) {
        if queue.leading {
            return;
        }
        queue.leading = true;
        let shared = self.clone();
        tokio::spawn(async move { shared.lead().await });
    }

    /// The leader: commits what is queued, batch after batch, until the queue is empty.
    async fn lead(self: Arc<Self>) {
        let mut committer = self.committer.lock().await;
        loop {
            let (batch, checkpoint) = self.take(false);
            if batch.is_empty() && !checkpoint {
                // `take` found the queue empty and stepped down under the same lock, so
                // anything queued after it starts a leader of its own.
                return;
            }
            self.commit(&mut committer, batch, checkpoint).await;
        }
    }

    /// Takes up to [`MAX_BATCH`] queued events and whether a checkpoint was asked for.
    /// Finding nothing, the leader steps down (unless `closing`: `close` commits itself).
    fn take(&self, closing: bool) -> (Vec<(Event, Waiting)>, bool) {
        let mut queue = self.lock_queue();
        let count = queue.events.len().min(MAX_BATCH);
        let batch: Vec<(Event, Waiting)> = queue.events.drain(..count).collect();
        let checkpoint = std::mem::take(&mut queue.checkpoint);
        if batch.is_empty() && !checkpoint && !closing {
            queue.leading = false;
        }
        (batch, checkpoint)
    }

    /// Seals and commits `events`, answers everyone waiting, and makes room.
    async fn commit(
        &self,
        committer: &mut Committer,
        events: Vec<(Event, Waiting)>,
        checkpoint: bool,
    ) {
        committer.commit(events, checkpoint, &self.healthy).await;
        self.room.notify_waiters();
    }
}

/// A checkpoint key's id: `ak_` and the first 16 hex digits of the SHA-256 of the public
/// key, so the id itself commits to the key.
fn key_id(public_key: &str) -> String {
    let digest = sha2::Sha256::digest(public_key.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("ak_{hex}")
}

fn stopped() -> AuditError {
    AuditError("the audit log is closed".into())
}

/// Asks for a checkpoint every `interval` until shutdown (the last one is
/// [`AuditLog::close`]'s, once calls have drained).
async fn tick(shared: Arc<Shared>, interval: Duration, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {
                let mut queue = shared.lock_queue();
                if !queue.stopped {
                    queue.checkpoint = true;
                    shared.lead_locked(&mut queue);
                }
            }
            () = shutdown.cancelled() => return,
        }
    }
}

/// Retention: every [`PRUNE_EVERY`], removes records older than `retain`, leaving anchors.
async fn prune(
    store: Arc<dyn Store>,
    retain: Duration,
    shutdown: CancellationToken,
    clock: Arc<dyn Clock>,
) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let keep = i64::try_from(retain.as_millis()).unwrap_or(i64::MAX);
        match store.prune_audit(clock.now_ms().saturating_sub(keep)).await {
            Ok(pruned) if pruned.records > 0 => {
                tracing::info!(records = pruned.records, anchors = ?pruned.anchors, "audit retention pruned old records");
            }
            Ok(_) => {}
            Err(err) => tracing::error!(%err, "audit retention could not prune"),
        }
    }
}

/// Where the leader commits.
enum Sink {
    /// A blocking connection of its own (`None` only while a blocking-pool thread has it).
    Own {
        appender: Option<Box<dyn AuditAppender>>,
        /// Whether the leader may block its worker for the commit: only on a runtime with
        /// other workers to go on meanwhile. With one worker, a commit waiting for SQLite's
        /// write lock would stall the very task that holds it (a store transaction on the
        /// pool) until the busy timeout; there the commit goes to the blocking pool.
        inline: bool,
    },
    /// The store's async methods (in-memory stores).
    Shared(Arc<dyn Store>),
}

impl Sink {
    fn own(appender: Box<dyn AuditAppender>) -> Self {
        let runtime = tokio::runtime::Handle::current();
        let inline = runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
            && runtime.metrics().num_workers() >= 2;
        Sink::Own {
            appender: Some(appender),
            inline,
        }
    }

    /// Appends `records` (and `checkpoint`) in one transaction.
    async fn append(
        &mut self,
        records: Vec<Record>,
        checkpoint: Option<Checkpoint>,
    ) -> Result<(), StoreError> {
        match self {
            Sink::Own {
                appender: slot,
                inline,
            } => {
                let Some(mut appender) = slot.take() else {
                    return Err(StoreError::Database(
                        "the audit store connection was lost".into(),
                    ));
                };
                if *inline {
                    let outcome = appender.append(&records, checkpoint.as_ref());
                    *slot = Some(appender);
                    return outcome;
                }
                let (appender, outcome) = tokio::task::spawn_blocking(move || {
                    let outcome = appender.append(&records, checkpoint.as_ref());
                    (appender, outcome)
                })
                .await
                .map_err(|e| StoreError::Database(format!("the audit commit stopped: {e}")))?;
                *slot = Some(appender);
                outcome
            }
            Sink::Shared(store) => {
                store.append_audit(&records).await?;
                match checkpoint {
                    Some(checkpoint) => store.add_audit_checkpoint(&checkpoint).await,
                    None => Ok(()),
                }
            }
        }
    }

    /// The store's housekeeping after a commit, where it may block.
    async fn tidy(&mut self) {
        let Sink::Own {
            appender: slot,
            inline,
        } = self
        else {
            return;
        };
        let Some(mut appender) = slot.take() else {
            return;
        };
        let (appender, outcome) = if *inline {
            let outcome = appender.tidy();
            (appender, outcome)
        } else {
            match tokio::task::spawn_blocking(move || {
                let outcome = appender.tidy();
                (appender, outcome)
            })
            .await
            {
                Ok(done) => done,
                Err(err) => {
                    tracing::error!(%err, "audit store housekeeping stopped; the store connection is lost");
                    return;
                }
            }
        };
        *slot = Some(appender);
        if let Err(err) = outcome {
            tracing::warn!(%err, "audit store housekeeping failed; it is tried again later");
        }
    }
}

/// The chain's head and what it takes to extend it.
struct Committer {
    sink: Sink,
    chain: Chain,
    key: SigningKey,
    key_id: String,
    checkpoint_every: u64,
    /// Records committed since the last checkpoint.
    unsigned: u64,
    /// What records and checkpoints are stamped with.
    clock: Arc<dyn Clock>,
}

impl Committer {
    /// Seals and commits `events`, with a checkpoint if one is due or `checkpoint` asks
    /// for one, and answers everyone waiting. `healthy` takes the outcome before anyone
    /// is answered, so a caller answered after a recovered write finds the gateway
    /// ready again.
    async fn commit(
        &mut self,
        events: Vec<(Event, Waiting)>,
        checkpoint: bool,
        healthy: &AtomicBool,
    ) {
        if events.is_empty() && (!checkpoint || self.unsigned == 0) {
            return;
        }
        let before = self.chain.clone();
        let now = self.clock.now_ms();
        let (records, waiting): (Vec<Record>, Vec<Waiting>) = events
            .into_iter()
            .map(|(event, done)| (self.chain.seal(event, now), done))
            .unzip();
        let count = records.len() as u64;
        let due = checkpoint || self.unsigned + count >= self.checkpoint_every;
        let signed = (due && self.unsigned + count > 0)
            .then(|| Checkpoint::sign(self.chain.head(), now, &self.key_id, &self.key));
        let started = std::time::Instant::now();
        let signing = signed.is_some();
        let outcome = self
            .sink
            .append(records, signed)
            .await
            .map_err(|e| AuditError(e.to_string()));
        tracing::debug!(records = count, checkpoint = signing, elapsed = ?started.elapsed(), "audit batch committed");
        match &outcome {
            Ok(()) => {
                self.unsigned = if signing { 0 } else { self.unsigned + count };
            }
            Err(err) => {
                // The records were not stored: the next batch continues from the last
                // stored head, so the chain has no gap.
                self.chain = before;
                tracing::error!(%err, records = count, "audit write failed; the calls waiting on it are refused");
            }
        }
        let written = outcome.is_ok();
        if healthy.swap(written, Ordering::AcqRel) != written && written {
            tracing::info!("the audit log is written again");
        }
        for done in waiting.into_iter().flatten() {
            let _ = done.send(outcome.clone());
        }
        self.sink.tidy().await;
    }
}
