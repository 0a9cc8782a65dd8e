//! Issuance: `POST /oauth/token` (RFC 8693 token exchange), as a function of the
//! request's form parameters. Revocation and introspection, which read what is issued
//! here, are in `introspect`.
//!
//! A task begins when an agent exchanges its identity (`subject_token`) for a writ; a
//! child task begins when a delegate presents its identity (`actor_token`) with its
//! parent's writ (`subject_token`). Each is its own decision, and a child never holds more
//! than its parent still does.

use std::sync::Arc;

use serde_json::{Value, json};
use writ_core::clock::Clock;
use writ_core::config::{DpopMode, TokenConfig};
use writ_core::oauth::{GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT};
use writ_core::task::TaskGrant;
use writ_store::{Agent, Begun, NewTask, Store, Task, TaskState};

use super::dpop::{ProofChecker, ProofError, ProofTarget};
use super::identity::{Identities, Proven, replayed};
use super::keys::KeyRing;
use super::live::{LiveTask, LiveTasks};
use super::oauth::{Form, OAuthError};
use super::writer::TaskWriter;
use super::writs::{Confirmation, WRIT_TYP, WritClaims, WritVerifier};
use super::{Urls, actors, agent_facts, task_facts};
use crate::audit::AuditLog;
use crate::events::event;
use crate::policy::Policies;
use writ_audit::kinds;

/// Issues writs: proves who asks, decides whether the task may begin, records it and
/// signs its writ; and answers revocation and introspection of what it issued.
#[derive(Debug)]
pub struct Issuer {
    pub(super) urls: Urls,
    pub(super) config: TokenConfig,
    pub(super) policies: Arc<Policies>,
    pub(super) store: Arc<dyn Store>,
    pub(super) keys: Arc<KeyRing>,
    pub(super) identities: Identities,
    pub(super) proofs: Arc<ProofChecker>,
    pub(super) writs: Arc<WritVerifier>,
    pub(super) live: Arc<LiveTasks>,
    /// The operators' token for introspection, when one is configured.
    pub(super) admin_token: Option<String>,
    /// Where identities proven and tasks begun are recorded.
    pub(super) audit: Arc<AuditLog>,
    /// Records new tasks in batches.
    pub(super) writer: Arc<TaskWriter>,
    /// What a writ's `iat` and `exp` count from, and what judges assertions and proofs.
    pub(super) clock: Arc<dyn Clock>,
}

impl Issuer {
    /// Whether every writ must be DPoP-bound (`tokens.dpop = "required"`).
    pub fn dpop_required(&self) -> bool {
        self.config.dpop == DpopMode::Required
    }

    /// `POST /oauth/token`. `dpop` is the request's `DPoP` header, if any.
    pub async fn exchange(&self, form: &Form, dpop: Option<&str>) -> Result<Value, OAuthError> {
        let now = self.clock.now();
        let grant_type = form.require("grant_type")?;
        if grant_type != GRANT_TOKEN_EXCHANGE {
            return Err(OAuthError::new(
                "unsupported_grant_type",
                format!("grant type `{grant_type}` is not supported; use `{GRANT_TOKEN_EXCHANGE}`"),
            ));
        }
        let resource = form.require("resource")?;
        if resource.trim_end_matches('/') != self.urls.mcp {
            return Err(OAuthError::new(
                "invalid_target",
                format!(
                    "`resource` must be Writ's MCP endpoint `{}`, not `{resource}`",
                    self.urls.mcp
                ),
            ));
        }
        if let Some(requested) = form.get("requested_token_type")
            && requested != TOKEN_TYPE_ACCESS
        {
            return Err(OAuthError::invalid_request(format!(
                "`requested_token_type` `{requested}` is not issued; Writ issues `{TOKEN_TYPE_ACCESS}`"
            )));
        }
        let jkt = self.token_request_proof(dpop, now)?;
        let asked = TaskGrant::from_authorization_details(form.require("authorization_details")?)
            .map_err(|e| OAuthError::invalid_details(e.0))?;
        let ttl = self.ttl(form.get("expires_in"))?;
        let subject_token = form.require("subject_token")?;
        let subject_type = form.require("subject_token_type")?;
        // Past the proof of identity, a refusal still spends the proof (`refuse_proven`).
        let (proven, which, task) = match (subject_type, form.get("actor_token")) {
            (TOKEN_TYPE_JWT, None) => {
                let which = "subject_token";
                let proven = self.prove_active(subject_token, now, which).await?;
                let task = self.decide_begin(&proven.agent, &asked, 0).map(|()| {
                    self.new_task(&proven, None, asked, now + ttl, jkt, Value::Null, now)
                });
                (proven, which, task)
            }
            (TOKEN_TYPE_ACCESS, Some(actor_token)) => {
                let actor_type = form.require("actor_token_type")?;
                if actor_type != TOKEN_TYPE_JWT {
                    return Err(OAuthError::invalid_request(format!(
                        "`actor_token_type` must be `{TOKEN_TYPE_JWT}`"
                    )));
                }
                let parent = self.parent(subject_token, now).await?;
                // The delegate proves itself with its own single-use assertion; a leaked
                // parent writ alone cannot begin a child task.
                let which = "actor_token";
                let proven = self.prove_active(actor_token, now, which).await?;
                let task = self.delegate(&parent, &proven, asked, ttl, jkt, now).await;
                (proven, which, task)
            }
            (TOKEN_TYPE_ACCESS, None) => {
                return Err(OAuthError::invalid_request(
                    "a writ as `subject_token` begins a delegated task and needs the delegate's identity as `actor_token`",
                ));
            }
            (TOKEN_TYPE_JWT, Some(_)) => {
                return Err(OAuthError::invalid_request(
                    "`actor_token` is for delegation, where `subject_token` is the parent task's writ",
                ));
            }
            (other, _) => {
                return Err(OAuthError::invalid_request(format!(
                    "`subject_token_type` `{other}` is not accepted; use `{TOKEN_TYPE_JWT}` or `{TOKEN_TYPE_ACCESS}`"
                )));
            }
        };
        match task {
            Ok(task) => self.issue(task, &proven, which, now).await,
            Err(refusal) => Err(self.refuse_proven(&proven, which, now, refusal).await),
        }
    }

    fn token_request_proof(
        &self,
        dpop: Option<&str>,
        now: i64,
    ) -> Result<Option<String>, OAuthError> {
        let Some(proof) = dpop else {
            return match self.config.dpop {
                DpopMode::Required => Err(OAuthError::new(
                    "invalid_dpop_proof",
                    "this Writ issues only DPoP-bound writs: send a `DPoP` proof header",
                )),
                DpopMode::Optional => Ok(None),
            };
        };
        let target = ProofTarget {
            method: "POST",
            url: &self.urls.token_endpoint,
            access_token: None,
        };
        match self.proofs.check(proof, target, now) {
            Ok(jkt) => Ok(Some(jkt)),
            Err(ProofError::Invalid(m)) => Err(OAuthError::new("invalid_dpop_proof", m)),
            Err(ProofError::UseNonce(nonce)) => Err(OAuthError {
                dpop_nonce: Some(nonce),
                ..OAuthError::new(
                    "use_dpop_nonce",
                    "send the proof again with the nonce in `DPoP-Nonce`",
                )
            }),
        }
    }

    /// The writ's lifetime in seconds: as asked, clipped to `max_ttl`, never extended.
    fn ttl(&self, asked: Option<&str>) -> Result<i64, OAuthError> {
        let max = i64::try_from(self.config.max_ttl.as_secs()).unwrap_or(i64::MAX);
        let default = i64::try_from(self.config.ttl.as_secs()).unwrap_or(max);
        match asked {
            None => Ok(default.min(max)),
            Some(text) => match text.parse::<i64>() {
                Ok(secs) if secs > 0 => Ok(secs.min(max)),
                _ => Err(OAuthError::invalid_request(
                    "`expires_in` must be a positive number of seconds",
                )),
            },
        }
    }

    /// Verifies the identity token in form field `which` and that its agent is enabled;
    /// a refusal is recorded (`auth.failed`). The proof's single-use identifier is not
    /// spent here but with the task the request begins (`issue`), or alone when the
    /// request is refused after all (`refuse_proven`); either records the outcome.
    async fn prove_active(&self, token: &str, now: i64, which: &str) -> Result<Proven, OAuthError> {
        match self.identities.prove(token, now).await {
            Ok(proven) if proven.agent.disabled => Err(self
                .auth_failed(
                    Some(proven.agent.id.clone()),
                    format!("agent `{}` is disabled", proven.agent.name),
                )
                .await),
            Ok(proven) => Ok(proven),
            Err(e) => Err(self.auth_failed(None, format!("`{which}`: {e}")).await),
        }
    }

    /// A request whose identity was proven is refused: its proof is spent all the same
    /// (an assertion is single-use whatever became of it), and a replayed one is refused
    /// as a replay, as if that had been found before anything was decided.
    async fn refuse_proven(
        &self,
        proven: &Proven,
        which: &str,
        now: i64,
        refusal: OAuthError,
    ) -> OAuthError {
        match self.identities.spend(proven, now).await {
            Ok(()) => {
                self.auth_succeeded(proven, which).await;
                refusal
            }
            Err(e) => self.auth_failed(None, format!("`{which}`: {e}")).await,
        }
    }

    /// `auth.succeeded`: the agent proved itself, its proof spent.
    async fn auth_succeeded(&self, proven: &Proven, which: &str) {
        self.audit
            .note(
                event(kinds::AUTH_SUCCEEDED)
                    .with_actor([proven.agent.id.clone()])
                    .with_field("endpoint", "token")
                    .with_field("method", proven.proof)
                    .with_field("agent_name", proven.agent.name.clone())
                    .with_field("as", which.to_owned()),
            )
            .await;
    }

    /// `auth.failed`, and the refusal it is.
    async fn auth_failed(&self, agent: Option<String>, reason: String) -> OAuthError {
        self.audit
            .note(
                event(kinds::AUTH_FAILED)
                    .with_actor(agent)
                    .with_field("endpoint", "token")
                    .with_field("error", "invalid_grant")
                    .with_field("reason", reason.clone()),
            )
            .await;
        OAuthError::invalid_grant(reason)
    }

    /// The `begin_task` decision: may `agent` begin a task with this grant?
    pub(super) fn decide_begin(
        &self,
        agent: &Agent,
        asked: &TaskGrant,
        depth: u32,
    ) -> Result<(), OAuthError> {
        let policies = self.policies.current();
        let decision = policies.begin_task(
            &agent_facts(agent),
            &task_facts("", asked, depth, 0),
            &self.policies.situation(),
        );
        self.enforce("begin_task", &agent.name, &decision)
            .map_err(OAuthError::invalid_details)
    }

    /// Turns a token-endpoint decision into a refusal text, or lets it pass (always, in
    /// shadow mode, where the would-be refusal is only logged).
    pub(super) fn enforce(
        &self,
        action: &str,
        who: &str,
        decision: &writ_policy::Decision,
    ) -> Result<(), String> {
        if decision.is_allow() {
            return Ok(());
        }
        let described = crate::policy::describe(decision);
        if !self.policies.enforcing() {
            tracing::warn!(action, who, decision = %described, "shadow mode: policy would refuse this");
            return Ok(());
        }
        tracing::info!(action, who, decision = %described, "policy refused");
        Err(format!("policy refuses `{action}` for {who}: {described}"))
    }

    #[expect(clippy::too_many_arguments, reason = "one task record, field by field")]
    pub(super) fn new_task(
        &self,
        agent: &Proven,
        parent: Option<&Task>,
        grant: TaskGrant,
        expires_at: i64,
        jkt: Option<String>,
        actor_chain: Value,
        now: i64,
    ) -> Task {
        Task {
            id: format!("tsk_{}", uuid::Uuid::new_v4().simple()),
            agent_id: agent.agent.id.clone(),
            subject_id: agent.agent.id.clone(),
            parent_id: parent.map(|p| p.id.clone()),
            depth: parent.map_or(0, |p| p.depth + 1),
            purpose: grant.purpose,
            category: grant.category,
            tools: grant.tools,
            data_classes: grant.data_classes,
            max_calls: grant.max_calls,
            calls: 0,
            state: TaskState::Active,
            reason: None,
            proof: agent.proof.to_owned(),
            jkt,
            actor_chain,
            created_at: now,
            expires_at,
            ended_at: None,
        }
    }

    /// Records the task, spending the proof's identifier with it, records its beginning
    /// and hands out its writ.
    async fn issue(
        &self,
        task: Task,
        proven: &Proven,
        which: &str,
        now: i64,
    ) -> Result<Value, OAuthError> {
        let holder = &proven.agent;
        let live = LiveTask::new(task.clone(), holder);
        let claims = WritClaims {
            iss: self.urls.issuer.clone(),
            sub: task.subject_id.clone(),
            aud: self.urls.mcp.clone(),
            exp: task.expires_at,
            nbf: None,
            iat: now,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            client_id: task.agent_id.clone(),
            task: task.id.clone(),
            authorization_details: live.grant.to_authorization_details(),
            act: (!task.actor_chain.is_null()).then(|| task.actor_chain.clone()),
            cnf: task.jkt.clone().map(|jkt| Confirmation { jkt }),
        };
        let token = self
            .keys
            .sign(WRIT_TYP, &claims)
            .map_err(|e| OAuthError::server_error("could not sign the writ", e))?;
        let new = NewTask {
            task: task.clone(),
            once: proven.once.clone(),
        };
        match self.writer.begin(new).await {
            Ok(Begun::Recorded) => self.auth_succeeded(proven, which).await,
            Ok(Begun::Replayed) => {
                return Err(self
                    .auth_failed(None, format!("`{which}`: {}", replayed()))
                    .await);
            }
            Err(e) => return Err(OAuthError::server_error("could not record the task", e)),
        }
        // The task is on record before its writ leaves: a task the audit log cannot
        // tell of is not begun.
        if let Err(err) = self.audit.record(begun_event(&task, holder)).await {
            if let Err(end) = self
                .live
                .end_task(
                    &task.id,
                    TaskState::Revoked,
                    "its beginning could not be recorded",
                )
                .await
            {
                tracing::error!(%end, task = %task.id, "could not revoke an unrecorded task");
            }
            return Err(OAuthError::server_error("could not record the task", err));
        }
        self.live.remember(task.clone(), holder);
        tracing::info!(task = %task.id, agent = %task.agent_id, parent = ?task.parent_id, "task begun");
        Ok(json!({
            "access_token": token,
            "issued_token_type": TOKEN_TYPE_ACCESS,
            "token_type": if task.jkt.is_some() { "DPoP" } else { "Bearer" },
            "expires_in": task.expires_at - now,
            "authorization_details": claims.authorization_details,
            "task": task.id,
        }))
    }
}

/// `task.begun` or `task.delegated`: what the task may do, for how long, and how its
/// agent proves each request (bearer, or DPoP with the key thumbprint).
fn begun_event(task: &Task, holder: &Agent) -> writ_audit::Event {
    let kind = match task.parent_id {
        None => kinds::TASK_BEGUN,
        Some(_) => kinds::TASK_DELEGATED,
    };
    let mut begun = event(kind)
        .with_actor(actors(task))
        .with_task(task.id.clone())
        .with_field("purpose", task.purpose.clone())
        .with_field(
            "tools",
            task.tools
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        )
        .with_field("data_classes", task.data_classes.clone())
        .with_field("expires_at", task.expires_at)
        .with_field("depth", task.depth)
        .with_field("identity", task.proof.clone())
        .with_field("proof", if task.jkt.is_some() { "dpop" } else { "bearer" })
        .with_field("agent_name", holder.name.clone());
    for (name, value) in [
        ("parent", task.parent_id.clone()),
        ("category", task.category.clone()),
        ("jkt", task.jkt.clone()),
        ("team", holder.team.clone()),
    ] {
        if let Some(value) = value {
            begun = begun.with_field(name, value);
        }
    }
    if let Some(max) = task.max_calls {
        begun = begun.with_field("max_calls", max);
    }
    begun
}
