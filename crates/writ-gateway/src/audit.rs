//! The audit log's writer: every event of this gateway is sealed into its hash chain and
//! committed to the store; call decisions are committed before the call goes on.
//!
//! Events go to one writer thread. It takes every event waiting at that moment (up to
//! [`MAX_BATCH`]), seals them in order and appends them in one transaction — group
//! commit: concurrent calls share one write instead of queueing behind one each. The
//! thread is an OS thread with a store connection of its own (where the store offers
//! one), so a commit never waits for a turn on the async runtime that is busy serving
//! requests, and request handling never waits for SQLite.
//!
//! [`AuditLog::record`] waits until its event is committed: the pipeline uses it for
//! call decisions, which must be durable before a call is answered or forwarded.
//! [`AuditLog::note`] hands an event over without waiting, for what happens after the
//! decision (forwarded, completed, tools listed, tasks begun): recorded in order, in the
//! same chain, but never holding up the call.
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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use sha2::Digest as _;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use writ_audit::{Chain, Checkpoint, Event, Record, kinds};
use writ_core::config::AuditConfig;
use writ_store::{AuditAppender, AuditKey, Store, StoreError};

/// The most events one transaction takes.
const MAX_BATCH: usize = 512;
/// Events waiting for the writer; beyond this, callers wait to hand theirs over. This
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

/// What the writer thread is asked to do.
enum Job {
    /// Seal and commit an event; answer on `done` if someone waits for it.
    Record {
        event: Event,
        done: Option<oneshot::Sender<Result<(), AuditError>>>,
    },
    /// Sign a checkpoint if records were committed since the last one.
    Checkpoint,
    /// Commit what is waiting, sign a last checkpoint, stop, and say so on `done`.
    Stop { done: oneshot::Sender<()> },
}

/// This gateway's writer of the audit log.
#[derive(Debug)]
pub struct AuditLog {
    writer: String,
    key_id: String,
    queue: mpsc::Sender<Job>,
    healthy: Arc<AtomicBool>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Record { event, .. } => write!(f, "Record({})", event.kind()),
            Job::Checkpoint => f.write_str("Checkpoint"),
            Job::Stop { .. } => f.write_str("Stop"),
        }
    }
}

impl AuditLog {
    /// Starts a new chain for this process: makes its checkpoint key, stores the public
    /// half, and starts the writer thread, whose first record is `audit.started`.
    pub async fn start(
        store: Arc<dyn Store>,
        settings: &AuditConfig,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, StoreError> {
        let writer = format!("gw_{}", uuid::Uuid::new_v4().simple());
        let key = SigningKey::generate(&mut rand_core::OsRng);
        let public_key = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
        let key_id = key_id(&public_key);
        let now = now_ms();
        store
            .add_audit_key(&AuditKey {
                key_id: key_id.clone(),
                writer: writer.clone(),
                public_key: public_key.clone(),
                created_ms: now,
            })
            .await?;
        let sink = match store.audit_appender()? {
            Some(own) => Sink::Own(own),
            None => Sink::Shared(store.clone(), tokio::runtime::Handle::current()),
        };
        let (queue, jobs) = mpsc::channel(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        let thread = WriterThread {
            sink,
            chain: Chain::new(writer.clone(), None),
            key,
            key_id: key_id.clone(),
            checkpoint_every: u64::try_from(settings.checkpoint_every).unwrap_or(u64::MAX),
            unsigned: 0,
            healthy: healthy.clone(),
        };
        std::thread::Builder::new()
            .name("writ-audit".into())
            .spawn(move || thread.run(jobs))
            .map_err(|e| StoreError::Database(format!("cannot start the audit writer: {e}")))?;
        let log = Arc::new(Self {
            writer,
            key_id,
            queue,
            healthy,
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
            log.queue.clone(),
            settings.checkpoint_interval,
            shutdown.clone(),
        ));
        if let Some(retain) = settings.retain {
            tokio::spawn(prune(store, retain, shutdown));
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
        self.queue
            .send(Job::Record {
                event,
                done: Some(done),
            })
            .await
            .map_err(|_| stopped())?;
        committed.await.map_err(|_| stopped())?
    }

    /// Hands `event` to the writer without waiting for it to be committed. A failure is
    /// logged by the writer (and turns the gateway unready); nobody else is told.
    pub async fn note(&self, event: Event) {
        if self
            .queue
            .send(Job::Record { event, done: None })
            .await
            .is_err()
        {
            tracing::error!("the audit writer has stopped; an event was not recorded");
        }
    }

    /// Commits everything handed over so far, signs a last checkpoint and stops the
    /// writer. Call it after in-flight calls have drained: their outcomes are recorded
    /// first, and anything recorded after this is refused.
    pub async fn close(&self) {
        let (done, stopped) = oneshot::channel();
        if self.queue.send(Job::Stop { done }).await.is_ok() {
            let _ = stopped.await;
        }
    }

    /// False after a failed write, until a write succeeds.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
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
    AuditError("the audit writer has stopped".into())
}

/// Asks for a checkpoint every `interval` until shutdown (the last one is
/// [`AuditLog::close`]'s, once calls have drained).
async fn tick(queue: mpsc::Sender<Job>, interval: Duration, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {
                // A checkpoint already waiting in a full queue is as good as this one.
                let _ = queue.try_send(Job::Checkpoint);
            }
            () = shutdown.cancelled() => return,
        }
    }
}

/// Retention: every [`PRUNE_EVERY`], removes records older than `retain`, leaving anchors.
async fn prune(store: Arc<dyn Store>, retain: Duration, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let keep = i64::try_from(retain.as_millis()).unwrap_or(i64::MAX);
        match store.prune_audit(now_ms().saturating_sub(keep)).await {
            Ok(pruned) if pruned.records > 0 => {
                tracing::info!(records = pruned.records, anchors = ?pruned.anchors, "audit retention pruned old records");
            }
            Ok(_) => {}
            Err(err) => tracing::error!(%err, "audit retention could not prune"),
        }
    }
}

/// Where the writer thread commits.
enum Sink {
    /// A blocking connection of its own.
    Own(Box<dyn AuditAppender>),
    /// The store's async methods, driven from the thread (in-memory stores).
    Shared(Arc<dyn Store>, tokio::runtime::Handle),
}

impl Sink {
    fn append(
        &mut self,
        records: &[Record],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), StoreError> {
        match self {
            Sink::Own(appender) => appender.append(records, checkpoint),
            Sink::Shared(store, runtime) => runtime.block_on(async {
                store.append_audit(records).await?;
                match checkpoint {
                    Some(checkpoint) => store.add_audit_checkpoint(checkpoint).await,
                    None => Ok(()),
                }
            }),
        }
    }
}

struct WriterThread {
    sink: Sink,
    chain: Chain,
    key: SigningKey,
    key_id: String,
    checkpoint_every: u64,
    /// Records committed since the last checkpoint.
    unsigned: u64,
    healthy: Arc<AtomicBool>,
}

type Waiting = Option<oneshot::Sender<Result<(), AuditError>>>;

impl WriterThread {
    fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        // A runtime of the thread's own, for waiting on the queue with a deadline.
        let waiter = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(runtime) => runtime,
            Err(err) => {
                tracing::error!(%err, "the audit writer cannot wait for events; it stops");
                self.healthy.store(false, Ordering::Release);
                return;
            }
        };
        let mut events: Vec<(Event, Waiting)> = Vec::with_capacity(MAX_BATCH);
        // Since when events nobody waits for have been held for a shared commit.
        let mut held_since: Option<Instant> = None;
        loop {
            // The next job, or `None` when the held events are due first.
            let first = match held_since {
                None => waiter.block_on(jobs.recv()).map(Some),
                // The timer is made inside `block_on`, where its runtime is.
                Some(since) => waiter
                    .block_on(async {
                        tokio::time::timeout_at((since + NOTE_DELAY).into(), jobs.recv()).await
                    })
                    .map_or(Some(None), |received| received.map(Some)),
            };
            let Some(mut job) = first else {
                // Every sender is gone (the gateway was dropped without closing).
                self.commit(&mut events, true);
                return;
            };
            let mut checkpoint = false;
            let mut stop = None;
            while let Some(next) = job.take() {
                match next {
                    Job::Record { event, done } => events.push((event, done)),
                    Job::Checkpoint => checkpoint = true,
                    Job::Stop { done } => stop = Some(done),
                }
                if stop.is_none() && events.len() < MAX_BATCH {
                    job = jobs.try_recv().ok();
                }
            }
            let waited_for = events.iter().any(|(_, done)| done.is_some());
            let since = *held_since.get_or_insert_with(Instant::now);
            let due = waited_for
                || checkpoint
                || stop.is_some()
                || events.len() >= MAX_BATCH
                || since.elapsed() >= NOTE_DELAY;
            if due {
                self.commit(&mut events, checkpoint || stop.is_some());
                held_since = None;
            }
            if let Some(done) = stop {
                let _ = done.send(());
                return;
            }
        }
    }

    /// Seals and commits `events` (leaving it empty), with a checkpoint if one is due or
    /// `checkpoint` asks for one, and answers everyone waiting.
    fn commit(&mut self, events: &mut Vec<(Event, Waiting)>, checkpoint: bool) {
        if events.is_empty() && (!checkpoint || self.unsigned == 0) {
            return;
        }
        let before = self.chain.clone();
        let now = now_ms();
        let (records, waiting): (Vec<Record>, Vec<Waiting>) = events
            .drain(..)
            .map(|(event, done)| (self.chain.seal(event, now), done))
            .unzip();
        let count = records.len() as u64;
        let due = checkpoint || self.unsigned + count >= self.checkpoint_every;
        let signed = (due && self.unsigned + count > 0)
            .then(|| Checkpoint::sign(self.chain.head(), now, &self.key_id, &self.key));
        let started = Instant::now();
        let outcome = self
            .sink
            .append(&records, signed.as_ref())
            .map_err(|e| AuditError(e.to_string()));
        tracing::debug!(records = records.len(), checkpoint = signed.is_some(), elapsed = ?started.elapsed(), "audit batch committed");
        match &outcome {
            Ok(()) => {
                self.unsigned = if signed.is_some() {
                    0
                } else {
                    self.unsigned + count
                };
                if !self.healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!("the audit log is written again");
                }
            }
            Err(err) => {
                // The records were not stored: the next batch continues from the last
                // stored head, so the chain has no gap.
                self.chain = before;
                self.healthy.store(false, Ordering::Release);
                tracing::error!(%err, records = records.len(), "audit write failed; the calls waiting on it are refused");
            }
        }
        for done in waiting.into_iter().flatten() {
            let _ = done.send(outcome.clone());
        }
        if let Sink::Own(appender) = &mut self.sink
            && let Err(err) = appender.tidy()
        {
            tracing::warn!(%err, "audit store housekeeping failed; it is tried again later");
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
