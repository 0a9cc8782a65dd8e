//! Sealed records and the chain that seals them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::Event;
use crate::canonical::{Sink, hex, put_i64, put_object, put_opt, put_str, put_u64};

/// The `prev_hash` of a writer's first record (seq 1): 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The version tag every encoded record starts with.
pub const RECORD_TAG: &str = "writ-audit-record-v1";

/// An event sealed into a writer's chain. Members are public so a store can load and
/// save them; [`verify_chain`](crate::verify_chain) is what says whether they are intact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The writer instance whose chain this is (one chain per writer, so replicas never
    /// contend for a head).
    pub writer: String,
    /// Position in the writer's chain: 1, 2, 3…
    pub seq: u64,
    /// When it was sealed, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The event's kind (`call.decided`).
    pub kind: String,
    /// The actor chain: the acting agent first, then on whose behalf it acts.
    pub actor: Vec<String>,
    /// The task, if any.
    pub task: Option<String>,
    /// The tool, if any.
    pub tool: Option<String>,
    /// The decision, if any.
    pub decision: Option<String>,
    /// Everything else.
    pub fields: Map<String, Value>,
    /// The hash of the record before it ([`GENESIS`] for seq 1).
    pub prev_hash: String,
    /// Lowercase hex SHA-256 of [`Record::canonical`].
    pub hash: String,
}

impl Record {
    /// The canonical encoding of everything but `hash` (see the crate docs).
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode(&mut out);
        out
    }

    /// The hash this record should have: lowercase hex SHA-256 of
    /// [`canonical`](Self::canonical), computed without building the encoding.
    pub fn expected_hash(&self) -> String {
        let mut hasher = Sha256::new();
        self.encode(&mut hasher);
        hex(&hasher.finalize())
    }

    /// The head a chain has once this record is its last.
    pub fn head(&self) -> Head<'_> {
        Head {
            writer: &self.writer,
            seq: self.seq,
            hash: &self.hash,
        }
    }

    fn encode(&self, out: &mut impl Sink) {
        put_str(out, RECORD_TAG);
        put_str(out, &self.writer);
        put_u64(out, self.seq);
        put_i64(out, self.time_ms);
        put_str(out, &self.kind);
        put_u64(out, self.actor.len() as u64);
        for actor in &self.actor {
            put_str(out, actor);
        }
        put_opt(out, self.task.as_deref());
        put_opt(out, self.tool.as_deref());
        put_opt(out, self.decision.as_deref());
        put_str(out, &self.prev_hash);
        // Last and not length-prefixed: canonical JSON is self-delimiting, and this lets
        // the hash be streamed.
        put_object(out, &self.fields);
    }
}

/// A chain's head: how many records writer `writer` has sealed and the last one's hash.
/// An empty chain's head is seq 0 and [`GENESIS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head<'a> {
    /// The writer instance.
    pub writer: &'a str,
    /// The last record's seq.
    pub seq: u64,
    /// The last record's hash.
    pub hash: &'a str,
}

/// One writer's chain, as far as it has been sealed. Seals events into records in order;
/// storing them is the caller's business.
#[derive(Debug, Clone)]
pub struct Chain {
    writer: String,
    seq: u64,
    hash: String,
}

impl Chain {
    /// The chain of `writer`, continuing from `head` (the last stored record's seq and
    /// hash, or an anchor's), or empty when `head` is `None`.
    pub fn new(writer: impl Into<String>, head: Option<(u64, String)>) -> Self {
        let (seq, hash) = head.unwrap_or_else(|| (0, GENESIS.to_owned()));
        Chain {
            writer: writer.into(),
            seq,
            hash,
        }
    }

    /// The writer and the last sealed record's seq and hash.
    pub fn head(&self) -> Head<'_> {
        Head {
            writer: &self.writer,
            seq: self.seq,
            hash: &self.hash,
        }
    }

    /// Seals `event` as the chain's next record, at `time_ms`.
    pub fn seal(&mut self, event: Event, time_ms: i64) -> Record {
        let Event {
            kind,
            actor,
            task,
            tool,
            decision,
            fields,
        } = event;
        // A u64 does not run out (a million records a second for 500,000 years); if it
        // ever did, the repeated seq would fail verification rather than wrap silently.
        self.seq = self.seq.saturating_add(1);
        let mut record = Record {
            writer: self.writer.clone(),
            seq: self.seq,
            time_ms,
            kind,
            actor,
            task,
            tool,
            decision,
            fields,
            prev_hash: std::mem::take(&mut self.hash),
            hash: String::new(),
        };
        record.hash = record.expected_hash();
        self.hash.clone_from(&record.hash);
        record
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::kinds;

    #[test]
    fn sealing_links_each_record_to_the_one_before() {
        let mut chain = Chain::new("w1", None);
        let first = chain.seal(Event::new(kinds::CONFIG_LOADED).unwrap(), 10);
        let second = chain.seal(Event::new(kinds::POLICY_LOADED).unwrap(), 11);
        assert_eq!((first.seq, first.prev_hash.as_str()), (1, GENESIS));
        assert_eq!(
            (second.seq, second.prev_hash.as_str()),
            (2, first.hash.as_str())
        );
        assert_eq!(second.hash, second.expected_hash());
        assert_eq!(chain.head(), second.head());
        assert_eq!(first.hash.len(), 64);
    }

    #[test]
    fn a_chain_continues_from_a_stored_head() {
        let mut chain = Chain::new("w1", None);
        let first = chain.seal(Event::new(kinds::CONFIG_LOADED).unwrap(), 10);
        let mut resumed = Chain::new("w1", Some((first.seq, first.hash.clone())));
        let mut fresh = chain.clone();
        let event = Event::new(kinds::TASK_BEGUN).unwrap().with_task("t");
        assert_eq!(resumed.seal(event.clone(), 12), fresh.seal(event, 12));
    }

    #[test]
    fn the_hash_covers_prev_hash_but_not_itself() {
        let mut record = Chain::new("w", None).seal(Event::new("a.b").unwrap(), 0);
        let sealed = record.expected_hash();
        record.hash = "x".into();
        assert_eq!(record.expected_hash(), sealed);
        record.prev_hash = "1".repeat(64);
        assert_ne!(record.expected_hash(), sealed);
        assert_eq!(
            hex(&Sha256::digest(record.canonical())),
            record.expected_hash()
        );
    }

    #[test]
    fn absent_and_empty_members_encode_differently() {
        let mut record = Chain::new("w", None).seal(Event::new("a.b").unwrap(), 0);
        let none = record.expected_hash();
        record.task = Some(String::new());
        let empty = record.expected_hash();
        assert_ne!(none, empty);
        // Moving a string between adjacent members changes the hash too.
        record.task = None;
        record.writer = "wa".into();
        record.kind = ".b".into();
        let moved = record.expected_hash();
        record.writer = "w".into();
        record.kind = "a.b".into();
        assert_eq!(record.expected_hash(), none);
        assert_ne!(moved, none);
    }
}
