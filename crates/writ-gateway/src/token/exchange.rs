//! `POST /oauth/token` (RFC 8693 token exchange), `/oauth/revoke` (RFC 7009) and
//! `/oauth/introspect` (RFC 7662), as functions of the request's form parameters.
//!
//! A task begins when an agent exchanges its identity (`subject_token`) for a writ; a
//! child task begins when a delegate presents its identity (`actor_token`) with its
//! parent's writ (`subject_token`). Each is its own decision, and a child never holds more
//! than its parent still does.

use std::collections::HashMap;

use axum::http::StatusCode;
use serde_json::{Value, json};
use writ_core::oauth::{
    CLIENT_ASSERTION_JWT, GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT,
};
use writ_core::task::TaskGrant;
use writ_store::{Agent, Task, TaskState};

use super::dpop::{ProofError, ProofTarget};
use super::identity::Proven;
use super::writs::{Confirmation, WRIT_TYP, WritClaims};
use super::{TokenService, actors, now};
use crate::events::event;
use writ_audit::kinds;

/// An OAuth error response (RFC 6749 section 5.2 and its extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    /// A nonce to send in `DPoP-Nonce` (with `use_dpop_nonce`).
    pub dpop_nonce: Option<String>,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        let status = match error {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Self {
            status,
            error,
            description: description.into(),
            dpop_nonce: None,
        }
    }

    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new("invalid_request", d)
    }
    fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new("invalid_grant", d)
    }
    fn invalid_details(d: impl Into<String>) -> Self {
        Self::new("invalid_authorization_details", d)
    }
    fn server_error(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(%err, "{context}");
        Self::new("server_error", format!("{context}; see the gateway log"))
    }
}

/// Form parameters, each given at most once (RFC 6749 section 3.2).
#[derive(Debug)]
pub struct Form(HashMap<String, String>);

impl Form {
    pub fn parse(pairs: Vec<(String, String)>) -> Result<Self, OAuthError> {
        let mut map = HashMap::with_capacity(pairs.len());
        for (key, value) in pairs {
            if map.insert(key.clone(), value).is_some() {
                return Err(OAuthError::invalid_request(format!(
                    "parameter `{key}` is given more than once"
                )));
            }
        }
        Ok(Self(map))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn require(&self, key: &str) -> Result<&str, OAuthError> {
        self.get(key)
            .ok_or_else(|| OAuthError::invalid_request(format!("parameter `{key}` is required")))
    }
}

impl TokenService {
    /// `POST /oauth/token`. `dpop` is the request's `DPoP` header, if any.
    pub async fn exchange(&self, form: &Form, dpop: Option<&str>) -> Result<Value, OAuthError> {
        let now = now();
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
        let (task, holder) = match (subject_type, form.get("actor_token")) {
            (TOKEN_TYPE_JWT, None) => {
                let agent = self
                    .prove_active(subject_token, now, "subject_token")
                    .await?;
                self.decide_begin(&agent.agent, &asked, 0)?;
                let task = self.new_task(&agent, None, asked, now + ttl, jkt, Value::Null, now);
                (task, agent.agent)
            }
            (TOKEN_TYPE_ACCESS, Some(actor_token)) => {
                let actor_type = form.require("actor_token_type")?;
                if actor_type != TOKEN_TYPE_JWT {
                    return Err(OAuthError::invalid_request(format!(
                        "`actor_token_type` must be `{TOKEN_TYPE_JWT}`"
                    )));
                }
                self.delegate(subject_token, actor_token, asked, ttl, jkt, now)
                    .await?
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
        self.issue(task, &holder, now).await
    }

    fn token_request_proof(
        &self,
        dpop: Option<&str>,
        now: i64,
    ) -> Result<Option<String>, OAuthError> {
        let Some(proof) = dpop else {
            return match self.config.dpop {
                writ_core::config::DpopMode::Required => Err(OAuthError::new(
                    "invalid_dpop_proof",
                    "this Writ issues only DPoP-bound writs: send a `DPoP` proof header",
                )),
                writ_core::config::DpopMode::Optional => Ok(None),
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

    async fn prove_active(&self, token: &str, now: i64, which: &str) -> Result<Proven, OAuthError> {
        let proven = match self.identities.prove(token, now).await {
            Ok(proven) if proven.agent.disabled => Err((
                Some(proven.agent.id.clone()),
                format!("agent `{}` is disabled", proven.agent.name),
            )),
            Ok(proven) => Ok(proven),
            Err(e) => Err((None, format!("`{which}`: {e}"))),
        };
        match proven {
            Ok(proven) => {
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
                Ok(proven)
            }
            Err((agent, reason)) => {
                self.audit
                    .note(
                        event(kinds::AUTH_FAILED)
                            .with_actor(agent)
                            .with_field("endpoint", "token")
                            .with_field("error", "invalid_grant")
                            .with_field("reason", reason.clone()),
                    )
                    .await;
                Err(OAuthError::invalid_grant(reason))
            }
        }
    }

    /// The `begin_task` decision: may `agent` begin a task with this grant?
    fn decide_begin(&self, agent: &Agent, asked: &TaskGrant, depth: u32) -> Result<(), OAuthError> {
        let policies = self.policies.current();
        let decision = policies.begin_task(
            &super::agent_facts(agent),
            &super::task_facts("", asked, depth, 0),
            &self.policies.situation(),
        );
        self.enforce("begin_task", &agent.name, &decision)
            .map_err(OAuthError::invalid_details)
    }

    /// The `delegate` decision: may the parent task's agent hand `child` to `delegate`?
    fn decide_delegate(
        &self,
        parent_agent: &Agent,
        delegate: &Agent,
        parent: &super::LiveTask,
        child: &TaskGrant,
    ) -> Result<(), OAuthError> {
        let policies = self.policies.current();
        let decision = policies.delegate(
            &super::agent_facts(parent_agent),
            &super::agent_facts(delegate),
            &parent.facts(),
            &super::task_facts("", child, parent.task.depth + 1, 0),
            &self.policies.situation(),
        );
        self.enforce(
            "delegate",
            &format!("{} to {}", parent_agent.name, delegate.name),
            &decision,
        )
        .map_err(OAuthError::invalid_grant)
    }

    /// Turns a token-endpoint decision into a refusal text, or lets it pass (always, in
    /// shadow mode, where the would-be refusal is only logged).
    fn enforce(
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

    async fn delegate(
        &self,
        parent_token: &str,
        actor_token: &str,
        asked: TaskGrant,
        ttl: i64,
        jkt: Option<String>,
        now: i64,
    ) -> Result<(Task, Agent), OAuthError> {
        let parent_claims = self
            .writs
            .verify(&self.keys, parent_token, now)
            .map_err(|e| OAuthError::invalid_grant(format!("`subject_token`: {e}")))?;
        let parent = self
            .live_task(&parent_claims.task)
            .await
            .map_err(|_| OAuthError::server_error("could not read the parent task", "store"))?
            .ok_or_else(|| OAuthError::invalid_grant("`subject_token`: its task does not exist"))?;
        let state = parent.state(now);
        if state != TaskState::Active {
            return Err(OAuthError::invalid_grant(format!(
                "the parent task `{}` is {}; it cannot delegate",
                parent.task.id,
                state.as_str()
            )));
        }
        let depth = parent.task.depth + 1;
        if depth > self.config.max_delegation_depth {
            return Err(OAuthError::invalid_grant(format!(
                "delegation depth {depth} is over the limit of {} (`tokens.max_delegation_depth`)",
                self.config.max_delegation_depth
            )));
        }
        // The delegate proves itself with its own single-use assertion; a leaked parent writ
        // alone cannot begin a child task. The child is bound to the delegate's DPoP key.
        let delegate = self.prove_active(actor_token, now, "actor_token").await?;
        let parent_agent = self
            .store
            .agent(&parent.task.agent_id)
            .await
            .map_err(|e| OAuthError::server_error("could not read the agent registry", e))?
            .filter(|a| a.id == parent.task.agent_id)
            .ok_or_else(|| {
                OAuthError::invalid_grant("the parent task's agent is no longer registered")
            })?;
        if parent_agent.disabled {
            return Err(OAuthError::invalid_grant(format!(
                "agent `{}` is disabled",
                parent_agent.name
            )));
        }
        let grant = parent
            .grant
            .narrow(parent.calls(), asked)
            .map_err(|e| OAuthError::invalid_details(e.0))?;
        self.decide_delegate(&parent_agent, &delegate.agent, &parent, &grant)?;
        self.decide_begin(&delegate.agent, &grant, depth)?;
        let expires_at = (now + ttl).min(parent.task.expires_at);
        // RFC 8693 section 4.1: the current actor on top, earlier actors nested beneath.
        // The root task's agent is the subject (`sub`), not an actor.
        let act = if parent.task.actor_chain.is_null() {
            json!({ "sub": delegate.agent.id })
        } else {
            json!({ "sub": delegate.agent.id, "act": parent.task.actor_chain })
        };
        let mut task = self.new_task(
            &delegate,
            Some(&parent.task),
            grant,
            expires_at,
            jkt,
            act,
            now,
        );
        task.subject_id = parent.task.subject_id.clone();
        Ok((task, delegate.agent))
    }

    #[expect(clippy::too_many_arguments, reason = "one task record, field by field")]
    fn new_task(
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

    async fn issue(&self, task: Task, holder: &Agent, now: i64) -> Result<Value, OAuthError> {
        let live = super::LiveTask::new(task.clone(), holder);
        let claims = WritClaims {
            iss: self.urls.issuer.clone(),
            sub: task.subject_id.clone(),
            aud: self.urls.mcp.clone(),
            exp: task.expires_at,
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
        self.store
            .insert_task(&task)
            .await
            .map_err(|e| OAuthError::server_error("could not record the task", e))?;
        // The task is on record before its writ leaves: a task the audit log cannot
        // tell of is not begun.
        if let Err(err) = self.audit.record(begun_event(&task, holder)).await {
            if let Err(end) = self
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
        self.remember_task(task.clone(), holder);
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

    /// `POST /oauth/revoke`: the holder ends its task. Holding the writ is the right to end
    /// it (RFC 7009 section 2.1 leaves client authentication to the server); unknown or
    /// invalid tokens are answered the same way, so the endpoint reveals nothing.
    pub async fn revoke(&self, form: &Form) -> Result<(), OAuthError> {
        let token = form.require("token")?;
        if let Some(claims) = self.writs.verify_ignoring_expiry(&self.keys, token) {
            self.end_task(&claims.task, TaskState::Completed, "ended by its agent")
                .await
                .map_err(|e| OAuthError::server_error("could not end the task", e))?;
        }
        Ok(())
    }

    /// `POST /oauth/introspect`: operators (the admin token) see every writ; an agent
    /// (authenticated by a `client_assertion`) sees writs of its own task chains.
    pub async fn introspect(
        &self,
        form: &Form,
        authorization: Option<&str>,
    ) -> Result<Value, OAuthError> {
        let now = now();
        let caller = self.introspection_caller(form, authorization, now).await?;
        let token = form.require("token")?;
        let inactive = json!({ "active": false });
        let Ok(claims) = self.writs.verify(&self.keys, token, now) else {
            return Ok(inactive);
        };
        if let Some(agent_id) = &caller
            && claims.sub != *agent_id
            && claims.client_id != *agent_id
        {
            return Ok(inactive);
        }
        let Ok(Some(task)) = self.live_task(&claims.task).await else {
            return Ok(inactive);
        };
        let state = task.state(now);
        if state != TaskState::Active {
            return Ok(inactive);
        }
        let mut out = serde_json::to_value(claims.as_ref())
            .map_err(|e| OAuthError::server_error("could not describe the writ", e))?;
        if let Some(map) = out.as_object_mut() {
            map.insert("active".into(), true.into());
            map.insert(
                "token_type".into(),
                if claims.cnf.is_some() {
                    "DPoP"
                } else {
                    "Bearer"
                }
                .into(),
            );
            map.insert("task_state".into(), state.as_str().into());
            map.insert("calls".into(), task.calls().into());
            map.insert("purpose".into(), task.task.purpose.clone().into());
        }
        Ok(out)
    }

    /// `None` for an operator, the agent id for an agent.
    async fn introspection_caller(
        &self,
        form: &Form,
        authorization: Option<&str>,
        now: i64,
    ) -> Result<Option<String>, OAuthError> {
        if let (Some(expected), Some(header)) = (&self.admin_token, authorization)
            && let Some(given) = header.strip_prefix("Bearer ")
            && constant_time_eq(given.trim().as_bytes(), expected.as_bytes())
        {
            return Ok(None);
        }
        match (
            form.get("client_assertion_type"),
            form.get("client_assertion"),
        ) {
            (Some(CLIENT_ASSERTION_JWT), Some(assertion)) => {
                let proven = self.identities.prove(assertion, now).await.map_err(|e| {
                    OAuthError::new("invalid_client", format!("`client_assertion`: {e}"))
                })?;
                if proven.agent.disabled {
                    return Err(OAuthError::new(
                        "invalid_client",
                        format!("agent `{}` is disabled", proven.agent.name),
                    ));
                }
                Ok(Some(proven.agent.id))
            }
            _ => Err(OAuthError::new(
                "invalid_client",
                "introspection needs the admin token (`Authorization: Bearer`) or an agent's `client_assertion`",
            )),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
