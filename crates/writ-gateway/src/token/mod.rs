//! The token service: Writ is the authorization server for its own MCP resource.
//!
//! Agents prove who they are (`identity`), exchange that proof for a writ bound to one
//! declared task (`exchange`), and present the writ — with a DPoP proof when it is bound
//! (`dpop`) — on every `/mcp` request (`authenticate`). Writ's signing keys are in `keys`,
//! the writ's claims and their cached verification in `writs`, the HTTP endpoints in
//! `endpoints`, revocation and introspection in `introspect`. Every JWT's lifetime is
//! judged by the gateway's [`Clock`] (`jwt`), never by the system's time.
//!
//! Three pieces, one job each: [`Authenticator`] admits `/mcp` requests, [`Issuer`]
//! begins tasks and hands out their writs, [`LiveTasks`] keeps the tasks in memory and
//! ends them. [`TokenService`] holds the three and what they share (keys, the proof
//! checker, the URLs), and follows the store's change feed for them, because one feed
//! carries changes for several (tasks, signing keys, tool pins). Callers reach the
//! piece they need through it rather than through forwarding methods, so what each
//! caller depends on shows at the call.
//!
//! State: the store is the truth; [`LiveTasks`] keeps each task this process has seen
//! in memory (state and call count) so a request costs no store round trip. Every
//! change this process makes updates memory at once; changes made elsewhere (the CLI,
//! another replica) arrive through the store's change feed, polled every
//! [`FOLLOW_EVERY`].

mod authenticate;
mod delegate;
pub mod dpop;
pub mod endpoints;
mod exchange;
mod identity;
mod introspect;
mod jwks;
mod jwt;
pub mod keys;
mod live;
mod oauth;
mod writer;
pub mod writs;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use writ_core::clock::{Clock, SystemClock};
use writ_core::config::Config;
use writ_core::task::TaskGrant;
use writ_policy::{AgentFacts, TaskFacts};
use writ_store::{Agent, ChangeKind, Store, Task};

use crate::audit::AuditLog;
use crate::events::event;
use crate::policy::Policies;
use writ_audit::kinds;

pub use authenticate::{Authenticator, Caller, Denied};
pub use dpop::ProofTarget;
pub use exchange::Issuer;
pub use identity::{SPIFFE_ISSUER, spiffe_trust_domain};
pub use live::{CallReservation, LiveTask, LiveTasks};
pub use writs::{WRIT_TYP, WritClaims};

use dpop::ProofChecker;
use identity::Identities;
use keys::{KeyError, KeyRing};
use writer::TaskWriter;
use writs::WritVerifier;

/// How often the change feed is read for revocations and key rotations made elsewhere,
/// and call counts are written to the store.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// How often expired tasks are marked so in the store (memory checks expiry on each use).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Seconds since the Unix epoch by the machine's clock, for the command line. The
/// gateway asks the [`Clock`] it was given instead.
pub fn now() -> i64 {
    SystemClock.now()
}

/// The addresses the token service names in tokens and metadata.
#[derive(Debug, Clone)]
pub struct Urls {
    /// Writ's issuer identifier: its public base URL.
    pub issuer: String,
    /// The protected resource: `{issuer}/mcp`.
    pub mcp: String,
    pub token_endpoint: String,
    pub revocation_endpoint: String,
    pub introspection_endpoint: String,
    pub jwks: String,
    /// RFC 9728 metadata for `/mcp`.
    pub resource_metadata: String,
}

impl Urls {
    pub fn new(base: &str) -> Self {
        let base = base.trim_end_matches('/');
        Self {
            issuer: base.to_owned(),
            mcp: format!("{base}/mcp"),
            token_endpoint: format!("{base}/oauth/token"),
            revocation_endpoint: format!("{base}/oauth/revoke"),
            introspection_endpoint: format!("{base}/oauth/introspect"),
            jwks: format!("{base}/.well-known/jwks.json"),
            resource_metadata: format!("{base}/.well-known/oauth-protected-resource/mcp"),
        }
    }
}

/// An agent as policy sees it.
pub fn agent_facts(agent: &Agent) -> AgentFacts {
    AgentFacts {
        id: agent.id.clone(),
        name: agent.name.clone(),
        team: agent.team.clone(),
        owner: agent.owner.clone(),
    }
}

/// A task (or a requested one, with an empty id) as policy sees it.
pub fn task_facts(id: &str, grant: &TaskGrant, depth: u32, calls: u64) -> TaskFacts {
    TaskFacts {
        id: id.to_owned(),
        purpose: grant.purpose.clone(),
        category: grant.category.clone(),
        tools: grant.tools.iter().map(ToString::to_string).collect(),
        data_classes: grant.data_classes.clone(),
        depth,
        calls,
        max_calls: grant.max_calls,
    }
}

/// Why the token service could not start.
#[derive(Debug, thiserror::Error)]
pub enum TokenStartError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("admin token: {0}")]
    Admin(String),
    #[error("could not open the store's connection for new tasks: {0}")]
    Tasks(writ_store::StoreError),
}

/// The token service: the three pieces and what they share. Each caller takes the
/// piece it needs — the front door [`authenticator`](Self::authenticator), the
/// `/oauth` routes [`issuer`](Self::issuer), the pipeline [`live`](Self::live) to end
/// a deviating task — and this struct keeps them and runs what follows the store.
#[derive(Debug)]
pub struct TokenService {
    pub urls: Urls,
    /// Checks each `/mcp` request's writ and proof.
    pub authenticator: Authenticator,
    /// Issues, revokes and introspects writs.
    pub issuer: Issuer,
    /// The tasks in memory; ends tasks.
    pub live: Arc<LiveTasks>,
    keys: Arc<KeyRing>,
    proofs: Arc<ProofChecker>,
    store: Arc<dyn Store>,
    /// The longest a writ lives: how long a retired signing key still verifies.
    max_ttl: Duration,
    /// Tool pins an operator changed (`server.tool`), from the change feed.
    pin_changes: broadcast::Sender<String>,
    /// Where key changes taken up are recorded.
    audit: Arc<AuditLog>,
    clock: Arc<dyn Clock>,
}

impl TokenService {
    pub async fn start(
        config: &Config,
        base_url: &str,
        store: Arc<dyn Store>,
        policies: Arc<Policies>,
        audit: Arc<AuditLog>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, TokenStartError> {
        let urls = Urls::new(base_url);
        let skew = config.tokens.clock_skew.as_secs();
        let keys =
            Arc::new(KeyRing::load(store.as_ref(), config.tokens.algorithm, clock.now()).await?);
        let admin_token = match &config.admin.token {
            None => None,
            Some(source) => Some(
                source
                    .resolve()
                    .map_err(|e| TokenStartError::Admin(e.to_string()))?,
            ),
        };
        let proofs = Arc::new(ProofChecker::new(
            i64::try_from(config.tokens.dpop_proof_max_age.as_secs()).unwrap_or(60),
            i64::try_from(skew).unwrap_or(0),
            config.tokens.dpop_nonce,
        ));
        let writs = Arc::new(WritVerifier::new(&urls.issuer, &urls.mcp, skew));
        let live = Arc::new(LiveTasks::new(store.clone(), audit.clone(), clock.clone()));
        let authenticator = Authenticator::new(
            urls.mcp.clone(),
            keys.clone(),
            writs.clone(),
            proofs.clone(),
            live.clone(),
            clock.clone(),
        );
        let issuer = Issuer {
            identities: Identities::new(
                config.identity.clone(),
                &urls.issuer,
                &urls.token_endpoint,
                skew,
                store.clone(),
            ),
            urls: urls.clone(),
            config: config.tokens.clone(),
            policies,
            store: store.clone(),
            keys: keys.clone(),
            proofs: proofs.clone(),
            writs,
            live: live.clone(),
            admin_token,
            audit: audit.clone(),
            writer: TaskWriter::new(store.clone(), clock.clone())
                .map_err(TokenStartError::Tasks)?,
            clock: clock.clone(),
        };
        Ok(Arc::new(Self {
            urls,
            authenticator,
            issuer,
            live,
            keys,
            proofs,
            store,
            max_ttl: config.tokens.max_ttl,
            pin_changes: broadcast::channel(256).0,
            audit,
            clock,
        }))
    }

    /// Tool pins changed by an operator, as `server.tool`.
    pub fn pin_changes(&self) -> broadcast::Receiver<String> {
        self.pin_changes.subscribe()
    }

    /// A fresh DPoP nonce for response headers, when nonces are required.
    pub fn dpop_nonce(&self) -> Option<String> {
        self.proofs.nonce(self.clock.now())
    }

    /// Follows the store's change feed, flushes call counts and sweeps expired tasks
    /// until `shutdown`.
    pub fn spawn_followers(self: &Arc<Self>, shutdown: CancellationToken) {
        let service = self.clone();
        tokio::spawn(async move {
            let mut seq = match service.store.changes_since(0, u32::MAX).await {
                Ok(changes) => changes.last().map_or(0, |c| c.seq),
                Err(err) => {
                    tracing::error!(%err, "could not read the store's change feed");
                    0
                }
            };
            let mut last_sweep = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    () = tokio::time::sleep(FOLLOW_EVERY) => {}
                    () = shutdown.cancelled() => {
                        service.live.flush_calls().await;
                        return;
                    }
                }
                seq = service.follow(seq).await;
                service.live.flush_calls().await;
                if last_sweep.elapsed() >= SWEEP_EVERY {
                    last_sweep = tokio::time::Instant::now();
                    service.sweep().await;
                }
            }
        });
    }

    /// Hands each change after `after` to the piece it concerns; the last one seen.
    async fn follow(&self, after: u64) -> u64 {
        let changes = match self.store.changes_since(after, 1_000).await {
            Ok(changes) => changes,
            Err(err) => {
                tracing::error!(%err, "could not read the store's change feed");
                return after;
            }
        };
        let mut seq = after;
        for change in changes {
            seq = change.seq;
            match change.kind {
                ChangeKind::Task => self.live.refresh(&change.subject).await,
                ChangeKind::Key => match self.keys.reload(self.store.as_ref()).await {
                    // Each gateway records the key change it took up, with the key it
                    // signs writs with from now on.
                    Ok(()) => {
                        self.audit
                            .note(
                                event(kinds::KEY_ROTATED)
                                    .with_field("changed", change.subject.clone())
                                    .with_field("signing", self.keys.current_kid()),
                            )
                            .await;
                    }
                    Err(err) => tracing::error!(%err, "could not reload signing keys"),
                },
                ChangeKind::Agent => {}
                ChangeKind::Tool => {
                    let _ = self.pin_changes.send(change.subject);
                }
            }
        }
        seq
    }

    /// Expired tasks marked so in the store, and signing keys retired longer than any
    /// writ lives dropped.
    async fn sweep(&self) {
        self.live.sweep().await;
        let max_ttl = i64::try_from(self.max_ttl.as_secs()).unwrap_or(i64::MAX);
        if let Err(err) = keys::drop_expired(self.store.as_ref(), max_ttl, self.clock.now()).await {
            tracing::error!(%err, "could not drop retired signing keys");
        }
    }
}

/// A task's actor chain for the audit log: the agent acting now first, then every agent
/// it acts for, out to the root task's agent.
pub fn actors(task: &Task) -> Vec<String> {
    let mut chain = vec![task.agent_id.clone()];
    let mut act = &task.actor_chain;
    while let Some(sub) = act.get("sub").and_then(serde_json::Value::as_str) {
        if chain.last().is_none_or(|last| last != sub) {
            chain.push(sub.to_owned());
        }
        act = match act.get("act") {
            Some(next) => next,
            None => break,
        };
    }
    if chain.last() != Some(&task.subject_id) {
        chain.push(task.subject_id.clone());
    }
    chain
}
