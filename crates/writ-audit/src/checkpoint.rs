//! Signed checkpoints: what makes cutting the tail of a chain detectable.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::canonical::{put_i64, put_str, put_u64};
use crate::{Error, Head};

/// The version tag every encoded checkpoint starts with.
pub const CHECKPOINT_TAG: &str = "writ-audit-checkpoint-v1";

/// A signed statement: "writer `writer`'s chain had `seq` records, the last with hash
/// `hash`, at `time_ms`". A chain that ends before `seq`, or whose record `seq` has
/// another hash, was cut or rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The writer instance.
    pub writer: String,
    /// The number of records the chain had (the last one's seq).
    pub seq: u64,
    /// The hash of record `seq`.
    pub hash: String,
    /// When it was signed, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// Which key signed it, so verification can find the public half after rotation.
    pub key_id: String,
    /// Ed25519 over [`Checkpoint::signed_bytes`], base64url without padding.
    pub signature: String,
}

impl Checkpoint {
    /// Signs `head` at `time_ms` with `key`, known as `key_id`.
    pub fn sign(head: Head<'_>, time_ms: i64, key_id: &str, key: &SigningKey) -> Self {
        let mut checkpoint = Checkpoint {
            writer: head.writer.to_owned(),
            seq: head.seq,
            hash: head.hash.to_owned(),
            time_ms,
            key_id: key_id.to_owned(),
            signature: String::new(),
        };
        let signature = key.sign(&checkpoint.signed_bytes());
        checkpoint.signature = URL_SAFE_NO_PAD.encode(signature.to_bytes());
        checkpoint
    }

    /// The canonical encoding of every member but `signature` (see the crate docs).
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + CHECKPOINT_TAG.len() + self.writer.len() + self.hash.len() + self.key_id.len(),
        );
        put_str(&mut out, CHECKPOINT_TAG);
        put_str(&mut out, &self.writer);
        put_u64(&mut out, self.seq);
        put_str(&mut out, &self.hash);
        put_i64(&mut out, self.time_ms);
        put_str(&mut out, &self.key_id);
        out
    }

    /// Whether `key` signed exactly these members. Verification is strict (RFC 8032
    /// with the checks `verify_strict` adds: no small-order keys, no malleable signatures).
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), Error> {
        let bytes = URL_SAFE_NO_PAD
            .decode(&self.signature)
            .map_err(|_| Error::MalformedSignature)?;
        let signature = Signature::from_slice(&bytes).map_err(|_| Error::MalformedSignature)?;
        key.verify_strict(&self.signed_bytes(), &signature)
            .map_err(|_| Error::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::{Chain, Event};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn checkpoint() -> Checkpoint {
        let mut chain = Chain::new("w1", None);
        chain.seal(Event::new("config.loaded").unwrap(), 1);
        Checkpoint::sign(chain.head(), 2, "k1", &key(1))
    }

    #[test]
    fn a_checkpoint_verifies_with_its_key_only() {
        let checkpoint = checkpoint();
        assert_eq!(checkpoint.seq, 1);
        assert_eq!(checkpoint.signature.len(), 86);
        checkpoint.verify(&key(1).verifying_key()).unwrap();
        assert_eq!(
            checkpoint.verify(&key(2).verifying_key()),
            Err(Error::BadSignature)
        );
    }

    #[test]
    fn every_signed_member_is_covered() {
        let good = checkpoint();
        let public = key(1).verifying_key();
        let changes: [fn(&mut Checkpoint); 5] = [
            |c| c.writer.push('x'),
            |c| c.seq += 1,
            |c| c.hash = "0".repeat(64),
            |c| c.time_ms += 1,
            |c| c.key_id.push('x'),
        ];
        for change in changes {
            let mut bad = good.clone();
            change(&mut bad);
            assert_eq!(bad.verify(&public), Err(Error::BadSignature), "{bad:?}");
        }
    }

    #[test]
    fn a_signature_that_is_not_base64url_or_not_64_bytes_is_malformed() {
        let public = key(1).verifying_key();
        for signature in ["!!", "", "AAAA", "a+b/"] {
            let mut bad = checkpoint();
            bad.signature = signature.into();
            assert_eq!(
                bad.verify(&public),
                Err(Error::MalformedSignature),
                "{signature}"
            );
        }
    }
}
