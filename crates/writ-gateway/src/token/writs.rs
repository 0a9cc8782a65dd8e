//! The writ itself: an RFC 9068 access token (`typ: at+jwt`) Writ signs for one task, and
//! its verification, cached so a writ costs a hash lookup after its first request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::jwt::{describe, validation, within_lifetime};
use super::keys::KeyRing;

/// The JOSE `typ` of a writ (RFC 9068 section 2.1).
pub const WRIT_TYP: &str = "at+jwt";
/// Verified writs kept in memory; past this, expired ones are swept, then the oldest half.
const CACHE_LIMIT: usize = 20_000;

/// The claims of a writ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WritClaims {
    pub iss: String,
    /// The agent on whose behalf the task chain began.
    pub sub: String,
    /// Writ's MCP URL (RFC 8707 resource).
    pub aud: String,
    pub exp: i64,
    /// Writ issues none; a writ carrying one is not valid before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub iat: i64,
    pub jti: String,
    /// The agent that holds this writ and makes the calls.
    pub client_id: String,
    /// The task id.
    pub task: String,
    pub authorization_details: Value,
    /// RFC 8693 actor chain for delegated tasks: the current actor, then its `act`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Value>,
    /// DPoP binding (RFC 9449 section 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub jkt: String,
}

/// Checks writs against Writ's keys, remembering those already checked.
#[derive(Debug)]
pub struct WritVerifier {
    issuer: String,
    audience: String,
    skew_secs: u64,
    cache: Mutex<HashMap<String, Arc<WritClaims>>>,
}

impl WritVerifier {
    pub fn new(issuer: &str, audience: &str, skew_secs: u64) -> Self {
        Self {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            skew_secs,
            cache: Mutex::default(),
        }
    }

    /// The claims of a valid writ, or why it is not one. Revocation is not checked here:
    /// a writ's task state is looked up on every request by the caller.
    pub fn verify(&self, keys: &KeyRing, token: &str, now: i64) -> Result<Arc<WritClaims>, String> {
        let skew = i64::try_from(self.skew_secs).unwrap_or(0);
        if let Ok(cache) = self.cache.lock()
            && let Some(claims) = cache.get(token)
        {
            return if claims.exp + skew > now {
                Ok(claims.clone())
            } else {
                Err("the writ has expired".into())
            };
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| "the writ is not a JWT signed with an accepted algorithm".to_owned())?;
        if header.typ.as_deref() != Some(WRIT_TYP) {
            return Err("the token is not a writ (`typ` must be `at+jwt`)".into());
        }
        let kid = header.kid.ok_or("the writ names no signing key (`kid`)")?;
        let (algorithm, key) = keys
            .verifier(&kid)
            .ok_or_else(|| format!("the writ's signing key `{kid}` is not one of Writ's keys"))?;
        let mut validation = validation(algorithm);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        let claims = jsonwebtoken::decode::<WritClaims>(token, &key, &validation)
            .map_err(|e| format!("the writ was refused: {}", describe(&e)))?
            .claims;
        within_lifetime(claims.exp, claims.nbf, now, self.skew_secs)
            .map_err(|e| format!("the writ was refused: {e}"))?;
        let claims = Arc::new(claims);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.retain(|_, c| c.exp + skew > now);
                if cache.len() >= CACHE_LIMIT {
                    cache.clear();
                }
            }
            cache.insert(token.to_owned(), claims.clone());
        }
        Ok(claims)
    }

    /// Verifies a writ without the cache and without `exp`: for revocation, where an
    /// expired writ must still name its task.
    pub fn verify_ignoring_expiry(&self, keys: &KeyRing, token: &str) -> Option<WritClaims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.typ.as_deref() != Some(WRIT_TYP) {
            return None;
        }
        let (algorithm, key) = keys.verifier(header.kid.as_deref()?)?;
        let mut validation = Validation::new(algorithm);
        validation.validate_exp = false;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        jsonwebtoken::decode::<WritClaims>(token, &key, &validation)
            .ok()
            .map(|d| d.claims)
    }
}
