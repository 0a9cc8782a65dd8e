//! The audit writer's own connection: blocking, outside the pool, used by whichever
//! task leads a commit (on its worker thread, or the blocking pool).
//!
//! Through the pool, one small append is a handful of hand-offs between the runtime and
//! sqlx's connection thread, and on a busy gateway each of them waits behind request
//! handling: group commit then degrades to one record per commit (measured: batches of
//! one, 0.2 ms per commit, the audit stage adding 1.7 ms to a call). A connection of the
//! writer's own commits in tens of microseconds, called directly, with no hand-offs.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, params};
use writ_audit::{Checkpoint, Record};

use super::BUSY_TIMEOUT;
use crate::{AuditAppender, StoreError, StoreResult};

const INSERT_RECORD: &str = "INSERT INTO audit_records \
     (writer, seq, time_ms, kind, actor, task, tool, decision, fields, prev_hash, hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

const INSERT_CHECKPOINT: &str = "INSERT INTO audit_checkpoints \
     (writer, seq, hash, time_ms, key_id, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// A blocking connection to the store's file that appends audit records.
#[derive(Debug)]
pub(super) struct SqliteAppender {
    conn: Connection,
    /// Commits since the log was last folded back.
    since_tidy: u32,
    /// Folds the log back on a connection of its own, so the writer never syncs the
    /// whole of it; `None` if that connection could not be opened (the writer then
    /// folds it back itself).
    helper: Option<Checkpointer>,
}

/// Commits between checkpoints of the write-ahead log. A commit of one call's records
/// writes about 20 KiB of whole pages, so this keeps the log near the 4 MiB SQLite
/// itself would keep it at.
const TIDY_EVERY: u32 = 200;

/// Bytes the write-ahead log file is cut back to when it starts over.
const WAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;

/// A thread with its own connection that folds the write-ahead log back into the
/// database when asked (a passive checkpoint, with its syncs: 5 to 15 ms on the disks
/// measured) while the writer goes on committing. What the writer adds meanwhile it
/// folds back itself once told this one is done — a small checkpoint (1 to 4 ms
/// measured) after which SQLite can start the log over. A checkpoint on another
/// connection alone never lets it: under steady commits the log is never wholly folded
/// back at the moment a new transaction begins, and it grows without bound.
#[derive(Debug)]
struct Checkpointer {
    ask: mpsc::Sender<()>,
    done: mpsc::Receiver<StoreResult<()>>,
    busy: bool,
}

impl Checkpointer {
    fn start(path: &Path) -> StoreResult<Self> {
        let conn = connect(path)?;
        let (ask, asked) = mpsc::channel::<()>();
        let (report, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("writ-checkpoint".into())
            .spawn(move || {
                // Ends when the appender (and with it `ask`) is dropped.
                while asked.recv().is_ok() {
                    if report.send(checkpoint(&conn)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| {
                StoreError::Database(format!("cannot start the checkpoint thread: {e}"))
            })?;
        Ok(Self {
            ask,
            done,
            busy: false,
        })
    }
}

/// A passive checkpoint: never waits for readers or writers; what it cannot fold back
/// now, a later one will.
fn checkpoint(conn: &Connection) -> StoreResult<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        .map_err(|e| database(&e))
}

/// A blocking read-write connection to the store's file.
pub(super) fn connect(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| database(&e))?;
    conn.busy_handler(Some(wait_briefly))
        .map_err(|e| database(&e))?;
    Ok(conn)
}

/// Steps of the first wait for another connection's write lock, and how many.
const BRIEF_STEP: Duration = Duration::from_micros(50);
const BRIEF_STEPS: i32 = 2_000;

/// Waits for another connection's write lock, until [`BUSY_TIMEOUT`]: in steps of 50 µs
/// for the first 100 ms, then of 1 ms. SQLite's own handler sleeps 1 ms at the first
/// try and longer after, while the gateway's writers (audit records, new tasks) hold
/// the lock for tens of microseconds each: one writer meeting the other then waited
/// far longer than both commits took.
fn wait_briefly(tries: i32) -> bool {
    let (step, waited) = if tries < BRIEF_STEPS {
        (BRIEF_STEP, BRIEF_STEP * tries.unsigned_abs())
    } else {
        let later = (tries - BRIEF_STEPS).unsigned_abs();
        (
            Duration::from_millis(1),
            BRIEF_STEP * BRIEF_STEPS.unsigned_abs() + Duration::from_millis(u64::from(later)),
        )
    };
    if waited >= BUSY_TIMEOUT {
        return false;
    }
    std::thread::sleep(step);
    true
}

impl SqliteAppender {
    pub(super) fn open(path: &Path) -> StoreResult<Self> {
        let conn = connect(path)?;
        // The same durability as the pool's connections (WAL is a property of the file,
        // set when the store opened it): a commit survives the process being killed;
        // power loss may take the last ones.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| database(&e))?;
        // SQLite would fold the log back into the database inside the commit that
        // crosses the threshold, syncing the file while that commit's callers wait. The
        // writer asks for it after answering them instead (`tidy`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|e| database(&e))?;
        // Each time the log starts over, a file grown past this (by a burst of large
        // batches) is cut back to it.
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(|e| database(&e))?;
        let helper = match Checkpointer::start(path) {
            Ok(helper) => Some(helper),
            Err(err) => {
                tracing::warn!(%err, "the audit writer folds its log back itself");
                None
            }
        };
        Ok(Self {
            conn,
            since_tidy: 0,
            helper,
        })
    }

    fn append_in(
        &mut self,
        records: &[Record],
        checkpoint: Option<&Checkpoint>,
    ) -> StoreResult<()> {
        // IMMEDIATE: take the write lock up front, as every writing transaction of the
        // store does, so the busy timeout applies instead of an upgrade failing.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| database(&e))?;
        {
            let mut insert = tx.prepare_cached(INSERT_RECORD).map_err(|e| database(&e))?;
            for record in records {
                let actor = json(&record.actor, "an audit actor chain")?;
                let fields = json(&record.fields, "audit fields")?;
                let seq = i64::try_from(record.seq).map_err(|_| {
                    StoreError::Database(format!("audit seq {} too large", record.seq))
                })?;
                insert
                    .execute(params![
                        record.writer,
                        seq,
                        record.time_ms,
                        record.kind,
                        actor,
                        record.task,
                        record.tool,
                        record.decision,
                        fields,
                        record.prev_hash,
                        record.hash,
                    ])
                    .map_err(|e| write_error(&e, "an audit record with that writer and seq"))?;
            }
            if let Some(checkpoint) = checkpoint {
                let seq = i64::try_from(checkpoint.seq).map_err(|_| {
                    StoreError::Database(format!("checkpoint seq {} too large", checkpoint.seq))
                })?;
                tx.prepare_cached(INSERT_CHECKPOINT)
                    .map_err(|e| database(&e))?
                    .execute(params![
                        checkpoint.writer,
                        seq,
                        checkpoint.hash,
                        checkpoint.time_ms,
                        checkpoint.key_id,
                        checkpoint.signature,
                    ])
                    .map_err(|e| write_error(&e, "a checkpoint with that writer and seq"))?;
            }
        }
        tx.commit().map_err(|e| database(&e))
    }
}

impl AuditAppender for SqliteAppender {
    fn append(&mut self, records: &[Record], checkpoint: Option<&Checkpoint>) -> StoreResult<()> {
        if records.is_empty() && checkpoint.is_none() {
            return Ok(());
        }
        // A failed statement rolls the transaction back when it is dropped.
        self.append_in(records, checkpoint)?;
        self.since_tidy = self.since_tidy.saturating_add(1);
        Ok(())
    }

    fn tidy(&mut self) -> StoreResult<()> {
        let Some(helper) = &mut self.helper else {
            if self.since_tidy >= TIDY_EVERY {
                self.since_tidy = 0;
                return checkpoint(&self.conn);
            }
            return Ok(());
        };
        if helper.busy {
            match helper.done.try_recv() {
                Err(mpsc::TryRecvError::Empty) => Ok(()),
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.helper = None;
                    Err(StoreError::Database("the checkpoint thread stopped".into()))
                }
                Ok(folded) => {
                    helper.busy = false;
                    folded?;
                    // The rest, small, so that the next commit can start the log over.
                    checkpoint(&self.conn)
                }
            }
        } else if self.since_tidy >= TIDY_EVERY {
            self.since_tidy = 0;
            helper.busy = helper.ask.send(()).is_ok();
            Ok(())
        } else {
            Ok(())
        }
    }
}

fn json(value: &impl serde::Serialize, what: &str) -> StoreResult<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Database(format!("cannot encode {what}: {e}")))
}

pub(super) fn database(err: &rusqlite::Error) -> StoreError {
    StoreError::Database(err.to_string())
}

/// A unique or primary key violation is a conflict over `what`; anything else a
/// database error.
pub(super) fn write_error(err: &rusqlite::Error, what: &str) -> StoreError {
    match err {
        rusqlite::Error::SqliteFailure(e, _)
            if e.code == ErrorCode::ConstraintViolation
                && matches!(
                    e.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                        | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                ) =>
        {
            StoreError::Conflict(what.to_owned())
        }
        _ => database(err),
    }
}
