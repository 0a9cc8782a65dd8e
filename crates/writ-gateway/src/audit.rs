//! The audit stage: every call decision is sealed into this gateway's hash chain and
//! committed to the store before the call goes on.
//!
//! Calls hand their event to one writer task and wait for its answer. The writer takes
//! every event waiting at that moment (up to [`MAX_BATCH`]), seals them in order and
//! appends them in one transaction — group commit: concurrent calls share one write
//! instead of queueing behind one each. If the write fails, every call of the batch is
//! refused (fail closed), the chain's head is put back, and the gateway reports itself
//! unready until a write succeeds again.
//!
//! Each gateway process is one writer with a chain of its own (`gw_` and a random id),
//! so replicas never contend for a chain head.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use writ_audit::{Chain, Event};
use writ_store::Store;

/// The most events one transaction takes.
const MAX_BATCH: usize = 512;
/// Events waiting for the writer; beyond this, calls wait to hand theirs over.
const QUEUE: usize = 4_096;

/// Why an event was not recorded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the audit log could not be written: {0}")]
pub struct AuditError(String);

struct Pending {
    event: Event,
    done: oneshot::Sender<Result<(), AuditError>>,
}

/// This gateway's writer of the audit log.
#[derive(Debug)]
pub struct AuditLog {
    writer: String,
    queue: mpsc::Sender<Pending>,
    healthy: Arc<AtomicBool>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("kind", &self.event.kind())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the writer for a new chain of this process.
    pub fn start(store: Arc<dyn Store>, shutdown: CancellationToken) -> Arc<Self> {
        let writer = format!("gw_{}", uuid::Uuid::new_v4().simple());
        let (queue, events) = mpsc::channel(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        tokio::spawn(write(
            store,
            Chain::new(writer.clone(), None),
            events,
            healthy.clone(),
            shutdown,
        ));
        tracing::info!(%writer, "audit log writer started");
        Arc::new(Self {
            writer,
            queue,
            healthy,
        })
    }

    /// This process's chain.
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// Records `event` and returns once it is committed.
    pub async fn record(&self, event: Event) -> Result<(), AuditError> {
        let (done, committed) = oneshot::channel();
        self.queue
            .send(Pending { event, done })
            .await
            .map_err(|_| AuditError("the audit writer has stopped".into()))?;
        committed
            .await
            .map_err(|_| AuditError("the audit writer has stopped".into()))?
    }

    /// False after a failed write, until a write succeeds.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }
}

async fn write(
    store: Arc<dyn Store>,
    mut chain: Chain,
    mut events: mpsc::Receiver<Pending>,
    healthy: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            first = events.recv() => first,
            () = shutdown.cancelled() => None,
        };
        let Some(first) = first else { return };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match events.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let before = chain.clone();
        let now = now_ms();
        let (records, waiting): (Vec<_>, Vec<_>) = batch
            .drain(..)
            .map(|p| (chain.seal(p.event, now), p.done))
            .unzip();
        let started = std::time::Instant::now();
        let outcome = store
            .append_audit(&records)
            .await
            .map_err(|e| AuditError(e.to_string()));
        tracing::debug!(records = records.len(), elapsed = ?started.elapsed(), "audit batch committed");
        match &outcome {
            Ok(()) => {
                if !healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!("the audit log is written again");
                }
            }
            Err(err) => {
                // The records were not stored: the next batch continues from the last
                // stored head, so the chain has no gap.
                chain = before;
                healthy.store(false, Ordering::Release);
                tracing::error!(%err, records = records.len(), "audit write failed; the calls are refused");
            }
        }
        for done in waiting {
            let _ = done.send(outcome.clone());
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
