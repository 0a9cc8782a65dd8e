//! Who is calling `/mcp`: the writ, its DPoP proof when it is bound, and its task's
//! state, checked once per HTTP request at the front door.

use std::sync::Arc;

use writ_core::clock::Clock;
use writ_store::TaskState;

use super::dpop::{ProofChecker, ProofError, ProofTarget};
use super::keys::KeyRing;
use super::live::{LiveTask, LiveTasks};
use super::writs::{WritClaims, WritVerifier};

/// An authenticated `/mcp` request: whose writ, which task.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Arc<WritClaims>,
    pub task: Arc<LiveTask>,
}

impl Caller {
    /// The agent making the calls.
    pub fn agent_id(&self) -> &str {
        &self.claims.client_id
    }
}

/// Why a `/mcp` request was not let in; rendered as a `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credentials at all: the client should discover how to get a writ.
    NoToken,
    InvalidToken(String),
    InvalidProof(String),
    UseNonce(String),
    /// The writ is good but does not cover this request (403).
    InsufficientScope(String),
    /// Writ could not decide (store failure); fail closed.
    Unavailable,
}

/// Checks the writ (and proof) of each `/mcp` request and finds its live task.
#[derive(Debug)]
pub struct Authenticator {
    /// The protected resource, `{issuer}/mcp`: what a proof's `htu` must name.
    mcp: String,
    keys: Arc<KeyRing>,
    writs: Arc<WritVerifier>,
    proofs: Arc<ProofChecker>,
    live: Arc<LiveTasks>,
    /// What says whether a writ, a proof and a task are current.
    clock: Arc<dyn Clock>,
}

impl Authenticator {
    pub(super) fn new(
        mcp: String,
        keys: Arc<KeyRing>,
        writs: Arc<WritVerifier>,
        proofs: Arc<ProofChecker>,
        live: Arc<LiveTasks>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            mcp,
            keys,
            writs,
            proofs,
            live,
            clock,
        }
    }

    /// Authenticates one `/mcp` request: the writ, its DPoP proof when bound, and its
    /// task's state. `authorization` and `dpop` are the raw header values.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        dpop: Option<&str>,
        method: &str,
    ) -> Result<Caller, Denied> {
        let now = self.clock.now();
        let Some(authorization) = authorization else {
            return Err(Denied::NoToken);
        };
        let (scheme, token) = authorization
            .split_once(' ')
            .map(|(s, t)| (s.to_ascii_lowercase(), t.trim()))
            .ok_or_else(|| {
                Denied::InvalidToken(
                    "the `Authorization` header must be `Bearer <writ>` or `DPoP <writ>`".into(),
                )
            })?;
        if scheme != "bearer" && scheme != "dpop" {
            return Err(Denied::InvalidToken(format!(
                "authorization scheme `{scheme}` is not accepted; use `Bearer` or `DPoP`"
            )));
        }
        let claims = self
            .writs
            .verify(&self.keys, token, now)
            .map_err(Denied::InvalidToken)?;
        match (&claims.cnf, scheme.as_str()) {
            (Some(cnf), "dpop") => {
                let proof = dpop.ok_or_else(|| {
                    Denied::InvalidProof("a DPoP-bound writ needs a `DPoP` proof header".into())
                })?;
                let target = ProofTarget {
                    method,
                    url: &self.mcp,
                    access_token: Some(token),
                };
                let jkt = self.proofs.check(proof, target, now).map_err(|e| match e {
                    ProofError::Invalid(m) => Denied::InvalidProof(m),
                    ProofError::UseNonce(n) => Denied::UseNonce(n),
                })?;
                if jkt != cnf.jkt {
                    return Err(Denied::InvalidProof(
                        "the DPoP proof is signed by a key other than the one the writ is bound to"
                            .into(),
                    ));
                }
            }
            (Some(_), _) => {
                return Err(Denied::InvalidToken("this writ is DPoP-bound: send it as `Authorization: DPoP <writ>` with a `DPoP` proof".into()));
            }
            (None, "dpop") => {
                return Err(Denied::InvalidToken(
                    "this writ is not DPoP-bound: send it as `Authorization: Bearer <writ>`".into(),
                ));
            }
            (None, _) => {}
        }
        let task = self.live.get(&claims.task).await?.ok_or_else(|| {
            Denied::InvalidToken(format!("task `{}` does not exist", claims.task))
        })?;
        match task.state(now) {
            TaskState::Active => {}
            state => {
                return Err(Denied::InvalidToken(format!(
                    "task `{}` is {}; begin a new task",
                    claims.task,
                    state.as_str()
                )));
            }
        }
        // A spent budget does not stop the writ: the task check refuses each use (403),
        // and lists still answer.
        Ok(Caller { claims, task })
    }
}
