//! Recomputing a chain and its checkpoints, and naming the first thing that is wrong.

use std::borrow::Borrow;
use std::fmt;

use ed25519_dalek::VerifyingKey;

use crate::{Checkpoint, Error, GENESIS, Record, is_valid_kind};

/// What a verified chain looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The writer whose chain it is.
    pub writer: String,
    /// How many records were present and checked.
    pub records: u64,
    /// The last record's seq (the anchor's, or 0, when no record is present).
    pub last_seq: u64,
    /// The last record's hash (the anchor's, or [`GENESIS`]).
    pub last_hash: String,
    /// How many checkpoints were checked.
    pub checkpoints: usize,
    /// The highest seq a checkpoint vouches for. Records after it could be cut without
    /// trace until the next checkpoint is signed.
    pub checkpointed: Option<u64>,
}

/// Where a chain is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// At the record with this seq (or where it should be).
    Record(u64),
    /// At the checkpoint for this seq.
    Checkpoint(u64),
}

/// What comes just before the place where a record was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before {
    /// Nothing: the chain starts at seq 1.
    Genesis,
    /// An anchor at this seq: records up to it were pruned.
    Anchor(u64),
    /// The record with this seq.
    Record(u64),
}

/// The first thing wrong with a chain, in seq order, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    /// A record is missing: the next one present has a higher seq.
    Missing {
        /// The missing record.
        seq: u64,
        /// What comes before it.
        before: Before,
        /// The seq of the record present in its place.
        found: u64,
    },
    /// Where record `seq` should be is a record whose seq is not higher than the one
    /// before it.
    Misplaced {
        /// The record expected here.
        seq: u64,
        /// What comes before it.
        before: Before,
        /// The seq the record in its place says it has.
        found: u64,
    },
    /// A record's hash is not the hash of its contents.
    Altered {
        /// The record.
        seq: u64,
    },
    /// A record's `prev_hash` is not the hash of what comes before it.
    Unlinked {
        /// The record.
        seq: u64,
        /// What comes before it.
        before: Before,
    },
    /// A record of another writer is in the chain.
    ForeignRecord {
        /// The record.
        seq: u64,
        /// The writer it names.
        found: String,
        /// The writer being verified.
        expected: String,
    },
    /// A record's kind is not a well-formed kind.
    BadKind {
        /// The record.
        seq: u64,
        /// Its kind.
        kind: String,
    },
    /// A checkpoint of another writer was given.
    ForeignCheckpoint {
        /// The checkpoint's seq.
        seq: u64,
        /// The writer it names.
        found: String,
        /// The writer being verified.
        expected: String,
    },
    /// A checkpoint names a key that is not known.
    UnknownKey {
        /// The checkpoint's seq.
        seq: u64,
        /// The key it names.
        key_id: String,
    },
    /// A checkpoint's signature does not verify.
    BadSignature {
        /// The checkpoint's seq.
        seq: u64,
        /// Whether it was not even a well-formed signature.
        malformed: bool,
    },
    /// A checkpoint names another hash than the chain has at its seq.
    Rewritten {
        /// The checkpoint's seq.
        seq: u64,
        /// When it was signed.
        time_ms: i64,
        /// Which key signed it.
        key_id: String,
    },
    /// The chain ends before a checkpoint says it reached.
    TailCut {
        /// The last seq present (the anchor's, or 0, when none is).
        end: u64,
        /// The checkpoint's seq.
        seq: u64,
        /// When it was signed.
        time_ms: i64,
        /// Which key signed it.
        key_id: String,
    },
}

impl Broken {
    /// The record or checkpoint that is broken.
    pub fn place(&self) -> Place {
        match self {
            Broken::Missing { seq, .. }
            | Broken::Misplaced { seq, .. }
            | Broken::Altered { seq }
            | Broken::Unlinked { seq, .. }
            | Broken::ForeignRecord { seq, .. }
            | Broken::BadKind { seq, .. } => Place::Record(*seq),
            Broken::ForeignCheckpoint { seq, .. }
            | Broken::UnknownKey { seq, .. }
            | Broken::BadSignature { seq, .. }
            | Broken::Rewritten { seq, .. }
            | Broken::TailCut { seq, .. } => Place::Checkpoint(*seq),
        }
    }
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::Missing { seq, before, found } => {
                write!(f, "record {seq} is missing (")?;
                match before {
                    Before::Genesis => write!(f, "the chain starts at {found}")?,
                    Before::Anchor(a) => write!(f, "the anchor at {a} is followed by {found}")?,
                    Before::Record(p) => write!(f, "{p} is followed by {found}")?,
                }
                f.write_str(")")
            }
            Broken::Misplaced { seq, before, found } => {
                write!(f, "record {seq} is missing: ")?;
                match before {
                    Before::Genesis => f.write_str("the chain starts with")?,
                    Before::Anchor(a) => write!(f, "the anchor at {a} is followed by")?,
                    Before::Record(p) => write!(f, "{p} is followed by")?,
                }
                write!(
                    f,
                    " a record that says it is {found} \
                     (records were reordered or repeated, or a seq was changed)"
                )
            }
            Broken::Altered { seq } => write!(
                f,
                "record {seq}: hash does not match its contents (a field was changed)"
            ),
            Broken::Unlinked { seq, before } => {
                write!(f, "record {seq}: prev_hash is not ")?;
                match before {
                    Before::Genesis => f.write_str("the genesis value (64 zeros)"),
                    Before::Anchor(a) => write!(
                        f,
                        "the anchor's hash (the records up to {a} that were pruned \
                         ended with another record)"
                    ),
                    Before::Record(p) => write!(
                        f,
                        "the hash of record {p} (a record was replaced, or the chain was \
                         rewritten from here)"
                    ),
                }
            }
            Broken::ForeignRecord {
                seq,
                found,
                expected,
            } => write!(f, "record {seq}: written by `{found}`, not `{expected}`"),
            Broken::BadKind { seq, kind } => {
                write!(f, "record {seq}: kind `{kind}` is not a valid event kind")
            }
            Broken::ForeignCheckpoint {
                seq,
                found,
                expected,
            } => write!(
                f,
                "checkpoint at {seq}: signed for `{found}`, not `{expected}`"
            ),
            Broken::UnknownKey { seq, key_id } => {
                write!(f, "checkpoint at {seq}: signed with unknown key `{key_id}`")
            }
            Broken::BadSignature { seq, malformed } => {
                write!(f, "checkpoint at {seq}: bad signature")?;
                if *malformed {
                    f.write_str(" (not a base64url Ed25519 signature)")?;
                }
                Ok(())
            }
            Broken::Rewritten {
                seq,
                time_ms,
                key_id,
            } => write!(
                f,
                "checkpoint at {seq} (signed {} with key `{key_id}`) names another hash \
                 than the chain has at {seq}: the chain was rewritten",
                Utc(*time_ms)
            ),
            Broken::TailCut {
                end,
                seq,
                time_ms,
                key_id,
            } => write!(
                f,
                "the chain ends at {end} but checkpoint at {seq} (signed {} with key \
                 `{key_id}`) says it reached {seq}: the tail was cut",
                Utc(*time_ms)
            ),
        }
    }
}

impl std::error::Error for Broken {}

/// Verifies writer `writer`'s chain: every record's hash against its contents, seq
/// continuity (a gap is a deleted record), `prev_hash` linkage, writer and kind, then
/// every checkpoint's signature and that the chain reaches it with the same hash.
///
/// `records` must come in seq order, as stored. `anchor` is the seq and hash of the
/// last record pruned by retention: the first record present must follow it. `key`
/// finds the public key a checkpoint's `key_id` names. Problems are found in seq order
/// and the first one is returned.
pub fn verify_chain<R, K>(
    writer: &str,
    anchor: Option<(u64, String)>,
    records: R,
    checkpoints: &[Checkpoint],
    key: K,
) -> Result<Verified, Broken>
where
    R: IntoIterator,
    R::Item: Borrow<Record>,
    K: Fn(&str) -> Option<VerifyingKey>,
{
    let (start, start_hash, start_before) = match anchor {
        Some((seq, hash)) => (seq, hash, Before::Anchor(seq)),
        None => (0, GENESIS.to_owned(), Before::Genesis),
    };
    let mut pending: Vec<&Checkpoint> = checkpoints.iter().collect();
    pending.sort_by_key(|checkpoint| checkpoint.seq);
    let mut pending = pending.into_iter().peekable();

    // Checkpoints at or before the start vouch for pruned records: only their
    // signatures can be checked, and the anchor's hash against one at its seq.
    while let Some(checkpoint) = pending.next_if(|c| c.seq <= start) {
        check_signature(checkpoint, writer, &key)?;
        if checkpoint.seq == start && checkpoint.hash != start_hash {
            return Err(rewritten(checkpoint));
        }
    }

    let mut last_seq = start;
    let mut last_hash = start_hash;
    let mut before = start_before;
    let mut count = 0u64;
    for record in records {
        let record = record.borrow();
        let seq = last_seq.saturating_add(1);
        if record.seq > seq {
            return Err(Broken::Missing {
                seq,
                before,
                found: record.seq,
            });
        }
        if record.seq < seq {
            return Err(Broken::Misplaced {
                seq,
                before,
                found: record.seq,
            });
        }
        let hash = record.expected_hash();
        if hash != record.hash {
            return Err(Broken::Altered { seq });
        }
        if record.prev_hash != last_hash {
            return Err(Broken::Unlinked { seq, before });
        }
        if record.writer != writer {
            return Err(Broken::ForeignRecord {
                seq,
                found: record.writer.clone(),
                expected: writer.to_owned(),
            });
        }
        if !is_valid_kind(&record.kind) {
            return Err(Broken::BadKind {
                seq,
                kind: record.kind.clone(),
            });
        }
        while let Some(checkpoint) = pending.next_if(|c| c.seq == seq) {
            check_signature(checkpoint, writer, &key)?;
            if checkpoint.hash != hash {
                return Err(rewritten(checkpoint));
            }
        }
        last_seq = seq;
        last_hash = hash;
        before = Before::Record(seq);
        count += 1;
    }

    // Whatever is left vouches for records that are not there. A forged checkpoint
    // must not pass for a cut tail, so its signature is checked first.
    if let Some(checkpoint) = pending.next() {
        check_signature(checkpoint, writer, &key)?;
        return Err(Broken::TailCut {
            end: last_seq,
            seq: checkpoint.seq,
            time_ms: checkpoint.time_ms,
            key_id: checkpoint.key_id.clone(),
        });
    }

    Ok(Verified {
        writer: writer.to_owned(),
        records: count,
        last_seq,
        last_hash,
        checkpoints: checkpoints.len(),
        checkpointed: checkpoints.iter().map(|c| c.seq).max(),
    })
}

fn check_signature(
    checkpoint: &Checkpoint,
    writer: &str,
    key: &impl Fn(&str) -> Option<VerifyingKey>,
) -> Result<(), Broken> {
    let seq = checkpoint.seq;
    if checkpoint.writer != writer {
        return Err(Broken::ForeignCheckpoint {
            seq,
            found: checkpoint.writer.clone(),
            expected: writer.to_owned(),
        });
    }
    let Some(public) = key(&checkpoint.key_id) else {
        return Err(Broken::UnknownKey {
            seq,
            key_id: checkpoint.key_id.clone(),
        });
    };
    checkpoint
        .verify(&public)
        .map_err(|err| Broken::BadSignature {
            seq,
            malformed: err == Error::MalformedSignature,
        })
}

fn rewritten(checkpoint: &Checkpoint) -> Broken {
    Broken::Rewritten {
        seq: checkpoint.seq,
        time_ms: checkpoint.time_ms,
        key_id: checkpoint.key_id.clone(),
    }
}

/// Milliseconds since the epoch as an RFC 3339 UTC time, for messages.
struct Utc(i64);

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(86_400_000);
        let ms = self.0.rem_euclid(86_400_000);
        // Days to a civil date (Howard Hinnant's `civil_from_days`).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1_000 % 60,
            ms % 1_000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_rfc3339_utc() {
        assert_eq!(Utc(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Utc(951_782_400_000).to_string(), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            Utc(1_772_366_400_123).to_string(),
            "2026-03-01T12:00:00.123Z"
        );
        assert_eq!(Utc(-1).to_string(), "1969-12-31T23:59:59.999Z");
        // Extremes do not overflow.
        let _ = Utc(i64::MIN).to_string();
        let _ = Utc(i64::MAX).to_string();
    }
}
