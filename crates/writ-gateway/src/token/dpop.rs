//! DPoP (RFC 9449): proof that whoever presents a writ holds the private key it is bound to.
//!
//! A proof is a JWT the agent signs for each request, carrying its public key in the
//! header. Checked here, in this order: `typ`, `alg` (asymmetric only), `jwk` (public
//! only), signature, `htm`, `htu`, `iat` window, `ath` (hash of the writ), server nonce,
//! and `jti` against the replay cache.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand_core::{OsRng, RngCore};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The algorithms Writ accepts in proofs, as advertised in its metadata.
pub const PROOF_ALGORITHMS: &[Algorithm] = &[
    Algorithm::EdDSA,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::PS256,
];

/// How long one server nonce stays good (it is accepted for two such windows).
const NONCE_WINDOW_SECS: i64 = 300;

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofError {
    /// The proof is missing, malformed, or fails a check (`invalid_dpop_proof`).
    Invalid(String),
    /// The proof lacks the current server nonce (`use_dpop_nonce`); send this one.
    UseNonce(String),
}

/// Checks proofs and remembers their `jti`s.
#[derive(Debug)]
pub struct ProofChecker {
    max_age_secs: i64,
    skew_secs: i64,
    nonce_key: Option<[u8; 32]>,
    seen: Mutex<ReplayCache>,
}

/// The proofs seen recently, by `jkt:jti`, in two generations of `span` seconds each
/// (the longest a proof can stay acceptable: its age limit plus the clock skew on both
/// sides). New proofs go into `current`; when a span has passed, `current` becomes
/// `previous` and the old `previous` is dropped whole. So a proof is remembered for at
/// least one span, memory holds at most two spans of traffic, and no request ever
/// scans the cache — sweeping it on every insert once it was large is what made
/// DPoP-bound calls cost more and more late in a long run.
#[derive(Debug, Default)]
struct ReplayCache {
    current: HashMap<String, i64>,
    previous: HashMap<String, i64>,
    rotated_at: i64,
    span: i64,
}

impl ReplayCache {
    fn new(span: i64) -> Self {
        Self {
            span: span.max(1),
            ..Self::default()
        }
    }

    /// Remembers `key` until `until`; false when it was already remembered and live.
    fn first_sight(&mut self, key: &str, until: i64, now: i64) -> bool {
        let age = now.saturating_sub(self.rotated_at);
        if age >= self.span {
            self.previous = if age >= 2 * self.span {
                HashMap::new()
            } else {
                std::mem::take(&mut self.current)
            };
            self.current.clear();
            self.rotated_at = now;
        }
        let live = |map: &HashMap<String, i64>| map.get(key).is_some_and(|u| *u > now);
        if live(&self.current) || live(&self.previous) {
            return false;
        }
        self.current.insert(key.to_owned(), until);
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[derive(Deserialize)]
struct ProofClaims {
    jti: String,
    htm: String,
    htu: String,
    iat: i64,
    ath: Option<String>,
    nonce: Option<String>,
}

/// What a request proves with its DPoP header.
#[derive(Debug, Clone, Copy)]
pub struct ProofTarget<'a> {
    /// The HTTP method, uppercase.
    pub method: &'a str,
    /// The request URL as Writ's public address names it.
    pub url: &'a str,
    /// The writ sent with the proof, when there is one (`ath` must match it).
    pub access_token: Option<&'a str>,
}

impl ProofChecker {
    pub fn new(max_age_secs: i64, skew_secs: i64, require_nonce: bool) -> Self {
        let nonce_key = require_nonce.then(|| {
            let mut key = [0u8; 32];
            OsRng.fill_bytes(&mut key);
            key
        });
        Self {
            max_age_secs,
            skew_secs,
            nonce_key,
            seen: Mutex::new(ReplayCache::new(max_age_secs + 2 * skew_secs)),
        }
    }

    /// A nonce for the `DPoP-Nonce` header, when nonces are required.
    pub fn nonce(&self, now: i64) -> Option<String> {
        self.nonce_key
            .map(|key| make_nonce(&key, now.div_euclid(NONCE_WINDOW_SECS)))
    }

    /// Checks `proof` for `target`; returns the RFC 7638 thumbprint of its key (`jkt`).
    pub fn check(
        &self,
        proof: &str,
        target: ProofTarget<'_>,
        now: i64,
    ) -> Result<String, ProofError> {
        let invalid = |m: &str| ProofError::Invalid(m.to_owned());
        let header_json = proof
            .split('.')
            .next()
            .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
            .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
            .ok_or_else(|| invalid("the DPoP proof is not a JWT"))?;
        if header_json.get("typ").and_then(|t| t.as_str()) != Some("dpop+jwt") {
            return Err(invalid("the DPoP proof's `typ` must be `dpop+jwt`"));
        }
        let jwk_json = header_json
            .get("jwk")
            .and_then(|j| j.as_object())
            .ok_or_else(|| invalid("the DPoP proof carries no `jwk`"))?;
        if ["d", "p", "q", "dp", "dq", "qi", "k"]
            .iter()
            .any(|private| jwk_json.contains_key(*private))
        {
            return Err(invalid("the DPoP proof's `jwk` holds a private key"));
        }
        let header = jsonwebtoken::decode_header(proof).map_err(|_| {
            invalid("the DPoP proof's `alg` is not an accepted asymmetric algorithm")
        })?;
        if !PROOF_ALGORITHMS.contains(&header.alg) {
            return Err(invalid(
                "the DPoP proof's `alg` is not an accepted asymmetric algorithm",
            ));
        }
        let jwk: Jwk = header
            .jwk
            .ok_or_else(|| invalid("the DPoP proof carries no usable `jwk`"))?;
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|_| invalid("the DPoP proof's `jwk` is not a usable public key"))?;
        let mut validation = Validation::new(header.alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<ProofClaims>(proof, &key, &validation)
            .map_err(|e| ProofError::Invalid(format!("the DPoP proof does not verify: {e}")))?
            .claims;
        if claims.htm != target.method {
            return Err(invalid(
                "the DPoP proof's `htm` does not match the request method",
            ));
        }
        if !same_target_uri(&claims.htu, target.url) {
            return Err(invalid(
                "the DPoP proof's `htu` does not match the request URL",
            ));
        }
        if claims.iat > now + self.skew_secs
            || claims.iat < now - self.max_age_secs - self.skew_secs
        {
            return Err(invalid(
                "the DPoP proof's `iat` is outside the accepted window",
            ));
        }
        if let Some(token) = target.access_token {
            let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
            if claims.ath.as_deref() != Some(expected.as_str()) {
                return Err(invalid(
                    "the DPoP proof's `ath` does not match the access token",
                ));
            }
        }
        if let Some(key) = &self.nonce_key {
            let window = now.div_euclid(NONCE_WINDOW_SECS);
            let good = claims
                .nonce
                .as_deref()
                .is_some_and(|n| n == make_nonce(key, window) || n == make_nonce(key, window - 1));
            if !good {
                return Err(ProofError::UseNonce(make_nonce(key, window)));
            }
        }
        if claims.jti.is_empty() || claims.jti.len() > 256 {
            return Err(invalid(
                "the DPoP proof's `jti` must be 1 to 256 characters",
            ));
        }
        let jkt = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|_| invalid("the DPoP proof's `jwk` has no thumbprint"))?;
        self.remember(
            &format!("{jkt}:{}", claims.jti),
            claims.iat + self.max_age_secs + self.skew_secs,
            now,
        )?;
        Ok(jkt)
    }

    fn remember(&self, key: &str, until: i64, now: i64) -> Result<(), ProofError> {
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| ProofError::Invalid("the DPoP replay cache is unusable".into()))?;
        if seen.first_sight(key, until, now) {
            Ok(())
        } else {
            Err(ProofError::Invalid(
                "the DPoP proof was used before; make a new proof for every request".into(),
            ))
        }
    }
}

fn make_nonce(key: &[u8; 32], window: i64) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(&window.to_be_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// `htu` compared as RFC 9449 says: without query and fragment, after normalising case
/// and default ports.
fn same_target_uri(htu: &str, url: &str) -> bool {
    let normal = |text: &str| {
        reqwest::Url::parse(text).ok().map(|mut u| {
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        })
    };
    match (normal(htu), normal(url)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod replay_tests {
    use super::ReplayCache;

    #[test]
    fn a_proof_is_remembered_for_a_span_and_memory_holds_two() {
        let mut cache = ReplayCache::new(60);
        assert!(cache.first_sight("a", 100, 0));
        assert!(!cache.first_sight("a", 100, 30), "a replay within its life");
        // The first span has passed: `a` moves to the previous generation and is still
        // refused while it lives.
        assert!(cache.first_sight("b", 160, 60));
        assert!(!cache.first_sight("a", 100, 70));
        // Past its own `until`, a remembered proof no longer counts.
        assert!(cache.first_sight("a", 170, 101));
        for i in 0..1_000 {
            assert!(cache.first_sight(&format!("k{i}"), 200, 110));
        }
        assert_eq!(cache.len(), 1_003);
        // Two spans on, everything before is dropped at once, without a sweep.
        assert!(cache.first_sight("c", 300, 240));
        assert_eq!(cache.len(), 1);
    }
}
