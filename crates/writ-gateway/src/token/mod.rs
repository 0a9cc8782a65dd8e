//! The token service: Writ is the authorization server for its own MCP resource.
//!
//! Agents prove who they are (`identity`), exchange that proof for a writ bound to one
//! declared task (`exchange`), and present the writ — with a DPoP proof when it is bound
//! (`dpop`) — on every `/mcp` request (`authenticate`). Writ's signing keys are in `keys`,
//! the writ's claims and their cached verification in `writs`, the HTTP endpoints in
//! `endpoints`.
//!
//! State: the store is the truth; this service keeps each task it has seen in memory
//! (state and call count) so a request costs no store round trip. Every change this
//! process makes updates memory at once; changes made elsewhere (the CLI, another
//! replica) arrive through the store's change feed, polled every [`FOLLOW_EVERY`].

pub mod dpop;
pub mod endpoints;
mod exchange;
mod identity;
mod jwks;
pub mod keys;
pub mod writs;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use writ_core::config::{Config, TokenConfig};
use writ_core::task::TaskGrant;
use writ_policy::{AgentFacts, TaskFacts};
use writ_store::{Agent, ChangeKind, Store, Task, TaskState};

use crate::audit::AuditLog;
use crate::events::event;
use crate::policy::Policies;
use writ_audit::kinds;

pub use dpop::ProofTarget;
pub use identity::{SPIFFE_ISSUER, spiffe_trust_domain};
pub use writs::{WRIT_TYP, WritClaims};

use dpop::{ProofChecker, ProofError};
use identity::Identities;
use keys::{KeyError, KeyRing};
use writs::WritVerifier;

/// How often the change feed is read for revocations and key rotations made elsewhere,
/// and call counts are written to the store.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// How often expired tasks are marked so in the store (memory checks expiry on each use).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
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

/// A task as this process knows it: the record, plus live state and call count.
#[derive(Debug)]
pub struct LiveTask {
    pub task: Task,
    pub grant: TaskGrant,
    /// The agent holding the writ, as policy sees it.
    pub agent: AgentFacts,
    state: Mutex<TaskState>,
    calls: AtomicU64,
    /// How many of `calls` the store already holds; the rest are added in batches.
    stored_calls: AtomicU64,
}

impl LiveTask {
    /// The task as recorded. The store parsed its patterns when it read the task, and
    /// refused it if one did not parse.
    fn new(task: Task, agent: &Agent) -> Self {
        let grant = TaskGrant {
            purpose: task.purpose.clone(),
            category: task.category.clone(),
            tools: task.tools.clone(),
            data_classes: task.data_classes.clone(),
            max_calls: task.max_calls,
        };
        Self {
            agent: agent_facts(agent),
            state: Mutex::new(task.state),
            calls: AtomicU64::new(task.calls),
            stored_calls: AtomicU64::new(task.calls),
            grant,
            task,
        }
    }

    /// Takes one call of the task's budget for a use about to be decided. The call is
    /// given back if the reservation is dropped unspent (the use was refused), so a
    /// refusal costs nothing, and concurrent uses can never spend more than the budget.
    /// `Err` carries the budget when none is left.
    pub fn reserve_call(self: &Arc<Self>) -> Result<CallReservation, u64> {
        let before = self.calls.fetch_add(1, Ordering::AcqRel);
        if let Some(max) = self.task.max_calls
            && before >= max
        {
            self.calls.fetch_sub(1, Ordering::AcqRel);
            return Err(max);
        }
        Ok(CallReservation {
            task: self.clone(),
            before,
            spent: false,
        })
    }

    /// The task as policy sees it when it has made `calls` calls.
    pub fn facts_at(&self, calls: u64) -> TaskFacts {
        task_facts(&self.task.id, &self.grant, self.task.depth, calls)
    }

    /// The state now, counting expiry as it happens rather than when it is swept.
    pub fn state(&self, now: i64) -> TaskState {
        let state = self.state.lock().map_or(TaskState::Revoked, |s| *s);
        if state == TaskState::Active && now >= self.task.expires_at {
            TaskState::Expired
        } else {
            state
        }
    }

    fn set_state(&self, state: TaskState) {
        if let Ok(mut current) = self.state.lock() {
            *current = state;
        }
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Acquire)
    }

    /// The task as policy sees it, with its calls so far.
    pub fn facts(&self) -> TaskFacts {
        task_facts(&self.task.id, &self.grant, self.task.depth, self.calls())
    }
}

/// One call of a task's budget, held while the call is decided.
#[derive(Debug)]
pub struct CallReservation {
    task: Arc<LiveTask>,
    before: u64,
    spent: bool,
}

impl CallReservation {
    /// The calls the task had made before this one.
    pub fn calls_before(&self) -> u64 {
        self.before
    }

    /// The call goes ahead: it counts. The store learns the count in batches
    /// (`flush_calls`), so a call costs no store write.
    pub fn spend(mut self) {
        self.spent = true;
    }
}

impl Drop for CallReservation {
    fn drop(&mut self) {
        if !self.spent {
            self.task.calls.fetch_sub(1, Ordering::AcqRel);
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

/// Why the token service could not start.
#[derive(Debug, thiserror::Error)]
pub enum TokenStartError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("admin token: {0}")]
    Admin(String),
}

/// The token service.
#[derive(Debug)]
pub struct TokenService {
    pub urls: Urls,
    config: TokenConfig,
    policies: Arc<Policies>,
    store: Arc<dyn Store>,
    keys: KeyRing,
    identities: Identities,
    proofs: ProofChecker,
    writs: WritVerifier,
    tasks: Mutex<HashMap<String, Arc<LiveTask>>>,
    admin_token: Option<String>,
    /// Tool pins an operator changed (`server.tool`), from the change feed.
    pin_changes: broadcast::Sender<String>,
    /// Where identities proven, tasks begun and tasks ended are recorded.
    audit: Arc<AuditLog>,
}

impl TokenService {
    pub async fn start(
        config: &Config,
        base_url: &str,
        store: Arc<dyn Store>,
        policies: Arc<Policies>,
        audit: Arc<AuditLog>,
    ) -> Result<Arc<Self>, TokenStartError> {
        let urls = Urls::new(base_url);
        let skew = config.tokens.clock_skew.as_secs();
        let keys = KeyRing::load(store.as_ref(), config.tokens.algorithm, now()).await?;
        let admin_token = match &config.admin.token {
            None => None,
            Some(source) => Some(
                source
                    .resolve()
                    .map_err(|e| TokenStartError::Admin(e.to_string()))?,
            ),
        };
        Ok(Arc::new(Self {
            identities: Identities::new(
                config.identity.clone(),
                &urls.issuer,
                &urls.token_endpoint,
                skew,
                store.clone(),
            ),
            proofs: ProofChecker::new(
                i64::try_from(config.tokens.dpop_proof_max_age.as_secs()).unwrap_or(60),
                i64::try_from(skew).unwrap_or(0),
                config.tokens.dpop_nonce,
            ),
            writs: WritVerifier::new(&urls.issuer, &urls.mcp, skew),
            urls,
            config: config.tokens.clone(),
            policies,
            store,
            keys,
            tasks: Mutex::default(),
            admin_token,
            pin_changes: broadcast::channel(256).0,
            audit,
        }))
    }

    /// Tool pins changed by an operator, as `server.tool`.
    pub fn pin_changes(&self) -> broadcast::Receiver<String> {
        self.pin_changes.subscribe()
    }

    /// Follows the store's change feed and sweeps expired tasks until `shutdown`.
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
                        service.flush_calls().await;
                        return;
                    }
                }
                seq = service.follow(seq).await;
                service.flush_calls().await;
                if last_sweep.elapsed() >= SWEEP_EVERY {
                    last_sweep = tokio::time::Instant::now();
                    service.sweep().await;
                }
            }
        });
    }

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
                ChangeKind::Task => self.refresh_task(&change.subject).await,
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

    async fn sweep(&self) {
        match self.store.expire_tasks(now()).await {
            Ok(expired) => {
                self.set_states(&expired, TaskState::Expired, TaskState::Expired);
                for id in &expired {
                    self.audit
                        .note(ended_event(id, TaskState::Expired, "expired", &[]))
                        .await;
                }
            }
            Err(err) => tracing::error!(%err, "could not sweep expired tasks"),
        }
        let max_ttl = i64::try_from(self.config.max_ttl.as_secs()).unwrap_or(i64::MAX);
        if let Err(err) = keys::drop_expired(self.store.as_ref(), max_ttl, now()).await {
            tracing::error!(%err, "could not drop retired signing keys");
        }
        if let Ok(mut tasks) = self.tasks.lock() {
            let now = now();
            tasks.retain(|_, t| t.state(now) == TaskState::Active);
        }
    }

    /// Re-reads one task's state from the store into memory, if this process knows it.
    async fn refresh_task(&self, id: &str) {
        let known = self.tasks.lock().ok().and_then(|t| t.get(id).cloned());
        let Some(live) = known else { return };
        match self.store.task(id).await {
            Ok(Some(task)) => {
                // Ended elsewhere (the CLI, another replica): recorded as this gateway
                // takes it up.
                if live.state(now()) == TaskState::Active && task.state != TaskState::Active {
                    let reason = task.reason.as_deref().unwrap_or("ended");
                    self.audit
                        .note(
                            ended_event(id, task.state, reason, &[]).with_field("seen_in", "store"),
                        )
                        .await;
                }
                live.set_state(task.state);
            }
            Ok(None) => live.set_state(TaskState::Revoked),
            Err(err) => tracing::error!(%err, task = id, "could not refresh a task"),
        }
    }

    /// Memory follows a state change this process made in the store: the first task
    /// takes `first`, the rest (its descendants, for an ended task) take `rest`.
    fn set_states(&self, ids: &[String], first: TaskState, rest: TaskState) {
        let Ok(tasks) = self.tasks.lock() else { return };
        for (i, id) in ids.iter().enumerate() {
            if let Some(live) = tasks.get(id) {
                live.set_state(if i == 0 { first } else { rest });
            }
        }
    }

    /// The live task `id`, loaded from the store on first sight.
    async fn live_task(&self, id: &str) -> Result<Option<Arc<LiveTask>>, Denied> {
        if let Some(live) = self.tasks.lock().ok().and_then(|t| t.get(id).cloned()) {
            return Ok(Some(live));
        }
        let unavailable = |err: writ_store::StoreError| {
            tracing::error!(%err, task = id, "could not read a task");
            Denied::Unavailable
        };
        let Some(task) = self.store.task(id).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let agent = self
            .store
            .agent(&task.agent_id)
            .await
            .map_err(unavailable)?
            .filter(|a| a.id == task.agent_id)
            .ok_or_else(|| {
                Denied::InvalidToken(format!("the agent of task `{id}` is no longer registered"))
            })?;
        Ok(Some(self.remember_task(task, &agent)))
    }

    fn remember_task(&self, task: Task, agent: &Agent) -> Arc<LiveTask> {
        let id = task.id.clone();
        let live = Arc::new(LiveTask::new(task, agent));
        match self.tasks.lock() {
            Ok(mut tasks) => tasks.entry(id).or_insert(live).clone(),
            Err(_) => live,
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
        let now = now();
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
                    url: &self.urls.mcp,
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
        let task = self.live_task(&claims.task).await?.ok_or_else(|| {
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

    /// Adds the calls counted in memory since the last flush to the store.
    async fn flush_calls(&self) {
        let pending: Vec<Arc<LiveTask>> = match self.tasks.lock() {
            Ok(tasks) => tasks
                .values()
                .filter(|t| t.calls() > t.stored_calls.load(Ordering::Acquire))
                .cloned()
                .collect(),
            Err(_) => return,
        };
        for task in pending {
            let counted = task.calls();
            let stored = task.stored_calls.load(Ordering::Acquire);
            match self.store.add_calls(&task.task.id, counted - stored).await {
                Ok(_) => task.stored_calls.store(counted, Ordering::Release),
                Err(err) => tracing::error!(%err, task = %task.task.id, "could not record calls"),
            }
        }
    }

    /// A fresh DPoP nonce for response headers, when nonces are required.
    pub fn dpop_nonce(&self) -> Option<String> {
        self.proofs.nonce(now())
    }

    /// Ends a task and its descendants in the store and in memory at once.
    pub async fn end_task(
        &self,
        id: &str,
        state: TaskState,
        reason: &str,
    ) -> Result<Vec<String>, writ_store::StoreError> {
        self.end_task_for(id, state, reason, None).await
    }

    /// [`end_task`](Self::end_task), because of call `call` (a deviation), which the
    /// audit record names.
    pub async fn end_task_for(
        &self,
        id: &str,
        state: TaskState,
        reason: &str,
        call: Option<&str>,
    ) -> Result<Vec<String>, writ_store::StoreError> {
        let changed = self.store.end_task(id, state, reason, now()).await?;
        self.set_states(&changed, state, TaskState::Revoked);
        if !changed.is_empty() {
            let ended = ended_event(id, state, reason, &changed);
            match call {
                // A deviation's revocation is committed before the agent is told of it,
                // like the deviation's own record just before it.
                Some(call) => {
                    if let Err(err) = self
                        .audit
                        .record(ended.with_field("call", call.to_owned()))
                        .await
                    {
                        tracing::error!(%err, task = id, "could not record a revocation");
                    }
                }
                None => self.audit.note(ended).await,
            }
        }
        Ok(changed)
    }
}

/// `task.completed`, `task.revoked` or `task.expired`: task `id` ended, and with it the
/// tasks in `ended` (itself first, then its descendants).
fn ended_event(id: &str, state: TaskState, reason: &str, ended: &[String]) -> writ_audit::Event {
    let kind = match state {
        TaskState::Completed => kinds::TASK_COMPLETED,
        TaskState::Expired => kinds::TASK_EXPIRED,
        TaskState::Active | TaskState::Revoked => kinds::TASK_REVOKED,
    };
    event(kind)
        .with_task(id)
        .with_field("reason", reason.to_owned())
        .with_field("ended", ended.to_vec())
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
