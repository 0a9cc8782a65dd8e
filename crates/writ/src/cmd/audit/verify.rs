//! `writ audit verify`: every writer's chain recomputed from the store, every checkpoint's
//! signature checked with the key the chain itself names.

use std::collections::HashMap;
use std::io::Write;

use anyhow::bail;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::VerifyingKey;
use writ_audit::{Broken, Checkpoint, Record, Verified, kinds, verify_chain};
use writ_store::{AuditKey, Store};

use super::{PAGE, field, short_hash};

pub(super) async fn verify(store: &dyn Store, out: &mut impl Write) -> anyhow::Result<()> {
    let writers = store.audit_writers().await?;
    if writers.is_empty() {
        writeln!(out, "the audit log is empty")?;
        return Ok(());
    }
    let keys = store.audit_keys().await?;
    let mut broken = 0;
    for writer in &writers {
        let mut records: Vec<Record> = Vec::new();
        loop {
            let after = records.last().map_or(0, |r| r.seq);
            let page = store.audit_records(writer, after, PAGE).await?;
            if page.is_empty() {
                break;
            }
            records.extend(page);
        }
        let checkpoints = store.audit_checkpoints(writer).await?;
        let anchor = store.audit_anchor(writer).await?;
        match check(writer, anchor, &records, &checkpoints, &keys) {
            Ok(verified) => writeln!(out, "{writer}: {}", said(&verified))?,
            Err(why) => {
                broken += 1;
                writeln!(out, "{writer}: BROKEN: {why}")?;
            }
        }
    }
    if broken > 0 {
        bail!("{broken} of {} audit chains do not verify", writers.len());
    }
    writeln!(out, "{} audit chains verified", writers.len())?;
    Ok(())
}

/// How a verified chain is reported.
fn said(verified: &Verified) -> String {
    let mut line = format!(
        "{} verified, last {} ({})",
        count(verified.records, "record"),
        verified.last_seq,
        short_hash(&verified.last_hash)
    );
    match verified.checkpointed {
        Some(seq) => {
            line.push_str(&format!(
                "; {} verified, the latest at {seq}",
                count(verified.checkpoints as u64, "checkpoint")
            ));
            if seq < verified.last_seq {
                line.push_str(&format!(
                    " (the {} since could be cut without trace until the next one)",
                    count(verified.last_seq - seq, "record")
                ));
            }
        }
        None => line.push_str("; no checkpoint (its tail could be cut without trace)"),
    }
    line
}

fn count(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// One writer's chain: its checkpoint key, then everything [`verify_chain`] checks.
fn check(
    writer: &str,
    anchor: Option<(u64, String)>,
    records: &[Record],
    checkpoints: &[Checkpoint],
    keys: &[AuditKey],
) -> Result<Verified, String> {
    let trusted = checkpoint_keys(writer, records, keys)?;
    verify_chain(writer, anchor, records, checkpoints, |id| {
        trusted.keys.get(id).copied()
    })
    .map_err(|broken| match broken {
        Broken::UnknownKey { seq, key_id } if trusted.named.is_some() => {
            let named = trusted.named.as_deref().unwrap_or_default();
            let stored = keys.iter().any(|k| k.key_id == key_id);
            format!(
                "checkpoint at {seq}: signed with key `{key_id}`{}, not with `{named}`, the \
                 key record 1 (audit.started) names",
                if stored {
                    " (stored, but not this chain's)"
                } else {
                    ""
                }
            )
        }
        other => other.to_string(),
    })
}

/// The keys a writer's checkpoints may be signed with.
#[derive(Debug)]
struct Trusted {
    keys: HashMap<String, VerifyingKey>,
    /// The key id the chain's own first record names, when that record is present.
    named: Option<String>,
}

/// When the chain still starts with its `audit.started` record, the key that record
/// names — hash-chained, so it cannot be swapped without breaking the chain — is the only
/// one trusted, and the stored copy must be the same key: a replaced row is reported
/// rather than used. Once retention has pruned that record, the stored keys of the
/// writer are all there is.
fn checkpoint_keys(writer: &str, records: &[Record], keys: &[AuditKey]) -> Result<Trusted, String> {
    let started = records
        .first()
        .filter(|r| r.seq == 1 && r.kind == kinds::AUDIT_STARTED);
    let Some(started) = started else {
        let mut trusted = HashMap::new();
        for key in keys.iter().filter(|k| k.writer == writer) {
            let public = decode(&key.public_key).ok_or_else(|| {
                format!(
                    "stored checkpoint key `{}` is not a base64url Ed25519 public key",
                    key.key_id
                )
            })?;
            trusted.insert(key.key_id.clone(), public);
        }
        return Ok(Trusted {
            keys: trusted,
            named: None,
        });
    };
    let key_id = field(started, "key_id")
        .ok_or("record 1 (audit.started) names no checkpoint key (`key_id`)")?;
    let named = field(started, "public_key")
        .and_then(decode)
        .ok_or_else(|| {
            format!(
                "record 1 (audit.started) gives no base64url Ed25519 public key for key `{key_id}`"
            )
        })?;
    let Some(row) = keys.iter().find(|k| k.key_id == key_id) else {
        return Err(format!(
            "the checkpoint key was removed: record 1 (audit.started) names key `{key_id}`, \
             which the store does not have"
        ));
    };
    if row.writer != writer {
        return Err(format!(
            "the checkpoint key was replaced: key `{key_id}`, named by record 1 \
             (audit.started), is stored for writer `{}`",
            row.writer
        ));
    }
    if decode(&row.public_key) != Some(named) {
        return Err(format!(
            "the checkpoint key was replaced: record 1 (audit.started) names key `{key_id}` \
             with public key `{}`, but the store has `{}`",
            URL_SAFE_NO_PAD.encode(named.as_bytes()),
            row.public_key
        ));
    }
    Ok(Trusted {
        keys: HashMap::from([(key_id.to_owned(), named)]),
        named: Some(key_id.to_owned()),
    })
}

/// An Ed25519 public key from base64url without padding.
fn decode(text: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}
