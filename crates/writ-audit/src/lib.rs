//! Writ's tamper-evident audit record chain. Pure: no I/O, no clock, no storage.
//!
//! An [`Event`] says what happened. A writer's [`Chain`] seals events into [`Record`]s,
//! each carrying the hash of the one before, so changing, deleting or reordering a
//! record breaks the chain at that record. A signed [`Checkpoint`] says how long the
//! chain was, which makes cutting its tail detectable too. [`verify_chain`] recomputes
//! all of it and names the first record or checkpoint that is wrong ([`Broken`]).
//! [`redact`] and [`digest`] prepare call arguments and results for recording.
//!
//! Each writer instance (a gateway replica) has its own chain, so replicas never
//! contend for a head.
//!
//! # Canonical encoding, version 1
//!
//! This is what `writ audit verify` recomputes; it is written down precisely enough to
//! re-implement in another language, and pinned by a golden test.
//!
//! ## Building blocks
//!
//! - `u64(n)`: 8 bytes, big-endian.
//! - `i64(n)`: 8 bytes, big-endian two's complement.
//! - `str(s)`: `u64(len)`, where `len` is the number of bytes of `s` in UTF-8, then
//!   those bytes.
//! - `opt(s)`: the byte `0x00` when absent; the byte `0x01` then `str(s)` when present
//!   (so an absent member and an empty string differ).
//! - `json(v)`: the canonical JSON of `v`, below. Not length-prefixed: it is only ever
//!   the last thing encoded, and JSON delimits itself.
//!
//! ## Record
//!
//! ```text
//! record(r) = str("writ-audit-record-v1")
//!             str(r.writer)  u64(r.seq)  i64(r.time_ms)  str(r.kind)
//!             u64(number of actors)  str(r.actor[0]) … str(r.actor[n-1])
//!             opt(r.task)  opt(r.tool)  opt(r.decision)
//!             str(r.prev_hash)
//!             json(r.fields)
//! r.hash    = lowercase hex of SHA-256(record(r))          (64 characters)
//! ```
//!
//! `hash` itself is the only member not encoded. `prev_hash` is the previous record's
//! `hash`; for seq 1 it is the genesis value, 64 `0` characters ([`GENESIS`]). A record's
//! `seq` is one more than the previous record's; the first is 1. `time_ms` is
//! milliseconds since the Unix epoch.
//!
//! ## Checkpoint
//!
//! ```text
//! signed(c)   = str("writ-audit-checkpoint-v1")
//!               str(c.writer)  u64(c.seq)  str(c.hash)  i64(c.time_ms)  str(c.key_id)
//! c.signature = base64url without padding (RFC 4648 §5) of the 64-byte Ed25519
//!               signature (RFC 8032) over signed(c)
//! ```
//!
//! Signatures are verified strictly (small-order public keys and non-canonical `S`
//! are rejected, as in `ed25519-dalek`'s `verify_strict`).
//!
//! ## Canonical JSON
//!
//! The JSON text serde_json writes compactly, with object members sorted:
//!
//! - No whitespace anywhere.
//! - `null`, `true`, `false`.
//! - Numbers: a number that is an integer and fits in `u64` or `i64` is written in
//!   decimal (`-` for negatives, no `+`, no leading zeros, no fraction or exponent).
//!   Any other number is a 64-bit float written in the shortest form that reads back
//!   as the same float (the `ryu` algorithm): plain decimal with at least one digit
//!   after the point when `1e-5 <= |x| < 1e16` (`1.0`, `0.5`, `100.0`, `0.00001`),
//!   otherwise `d.ddde+N` / `d.ddde-N` with the fraction left out when empty (`1e+16`,
//!   `1.5e-7`, `1e-6`). A number written in the input with a fraction or an exponent is
//!   a float even when integral: `1.00` and `1e2` are written `1.0` and `100.0`. Writ
//!   itself puts only integers in fields; floats come from agents' arguments.
//! - Strings: `"`, then each character as its UTF-8 bytes except these escapes: `"` as
//!   `\"`, `\` as `\\`, U+0008 as `\b`, U+0009 as `\t`, U+000A as `\n`, U+000C as `\f`,
//!   U+000D as `\r`, any other character below U+0020 as `\u00xx` with two lowercase hex
//!   digits; then `"`. Nothing else is escaped: not `/`, not U+007F, not non-ASCII.
//! - Arrays: `[`, the elements in order joined by `,`, `]`.
//! - Objects: `{`, the members as `key:value` (the key as a string, above) joined by
//!   `,`, `}`, sorted by the key's UTF-8 bytes compared bytewise (a key that is a prefix
//!   of another comes first), at every level. Keys are unique.
//!
//! [`digest`] is the lowercase hex SHA-256 of `json(v)`, used for argument and result
//! digests; [`canonical_json`] gives the bytes.
//!
//! ## Verifying
//!
//! For one writer, with its records in seq order, its checkpoints, and optionally the
//! anchor left by retention (the seq and hash of the last pruned record):
//!
//! 1. Start from the anchor, or from seq 0 and the genesis value.
//! 2. Each checkpoint at or before the start: check its signature; if it is at the
//!    start's seq, its hash must be the start's hash.
//! 3. Each record: its seq is one more than the one before (higher means records are
//!    missing, lower means they were reordered or repeated); `hash` equals the hash
//!    recomputed from its contents; `prev_hash` equals the hash before it; `writer` is
//!    the writer; `kind` is well-formed (see [`is_valid_kind`]). Then each checkpoint at
//!    its seq: its signature holds and its hash equals the record's.
//! 4. A checkpoint beyond the last record, once its signature holds, means the tail was
//!    cut.
//!
//! The first failure, in seq order, is the answer. Records sealed after the latest
//! checkpoint can be cut without trace until the next checkpoint; an anchor is as
//! trustworthy as the checkpoint at its seq, if there is one.

mod canonical;
mod checkpoint;
mod credential;
mod event;
mod record;
mod redact;
mod verify;

pub use canonical::{canonical_json, digest, sha256_hex};
pub use checkpoint::{CHECKPOINT_TAG, Checkpoint};
pub use credential::looks_like_credential;
pub use event::{Event, MAX_KIND_LEN, is_valid_kind, kinds};
pub use record::{Chain, GENESIS, Head, RECORD_TAG, Record};
pub use redact::{
    CREDENTIAL_KEYS, MIN_SECRET_LEN, REDACTED_CREDENTIAL, REDACTED_PATH, REDACTED_SECRET,
    RedactRules, redact,
};
pub use verify::{Before, Broken, Place, Verified, verify_chain};

/// What can go wrong making events, rules and checkpoint signatures. (A chain that does
/// not verify is a [`Broken`], not an error of the caller's.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The caller gave a malformed event kind.
    #[error(
        "event kind `{0}` is not valid: use 1 to 64 characters of dot-separated \
         lowercase `a-z`, `0-9` and `_`, starting with a letter"
    )]
    InvalidKind(String),
    /// The caller gave a malformed redaction path.
    #[error("redaction path `{0}` has an empty segment")]
    InvalidPath(String),
    /// A checkpoint's signature is not base64url of 64 bytes.
    #[error("checkpoint signature is not a base64url Ed25519 signature")]
    MalformedSignature,
    /// A checkpoint's signature does not verify with the key.
    #[error("checkpoint signature does not verify")]
    BadSignature,
}
