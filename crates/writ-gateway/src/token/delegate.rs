//! Delegation: a task's agent hands part of what its task may do to another agent,
//! which proves itself with its own assertion and holds a child task. A child never holds
//! more than its parent still does, and ends no later than it.

use std::sync::Arc;

use serde_json::json;
use writ_core::task::TaskGrant;
use writ_store::{Agent, Task, TaskState};

use super::exchange::Issuer;
use super::identity::Proven;
use super::live::LiveTask;
use super::oauth::OAuthError;
use super::{agent_facts, task_facts};

impl Issuer {
    /// The parent task a delegation names by its writ (`subject_token`): active, and
    /// shallow enough to delegate from.
    pub(super) async fn parent(
        &self,
        parent_token: &str,
        now: i64,
    ) -> Result<Arc<LiveTask>, OAuthError> {
        let parent_claims = self
            .writs
            .verify(&self.keys, parent_token, now)
            .map_err(|e| OAuthError::invalid_grant(format!("`subject_token`: {e}")))?;
        let parent = self
            .live
            .get(&parent_claims.task)
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
        Ok(parent)
    }

    /// The child task `delegate` may hold under `parent`: narrowed to what the parent
    /// still holds, allowed by `delegate` and `begin_task`, bound to the delegate's DPoP
    /// key (`jkt`), ending no later than its parent.
    pub(super) async fn delegate(
        &self,
        parent: &LiveTask,
        delegate: &Proven,
        asked: TaskGrant,
        ttl: i64,
        jkt: Option<String>,
        now: i64,
    ) -> Result<Task, OAuthError> {
        let depth = parent.task.depth + 1;
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
        self.decide_delegate(&parent_agent, &delegate.agent, parent, &grant)?;
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
            delegate,
            Some(&parent.task),
            grant,
            expires_at,
            jkt,
            act,
            now,
        );
        task.subject_id = parent.task.subject_id.clone();
        Ok(task)
    }

    /// The `delegate` decision: may the parent task's agent hand `child` to `delegate`?
    fn decide_delegate(
        &self,
        parent_agent: &Agent,
        delegate: &Agent,
        parent: &LiveTask,
        child: &TaskGrant,
    ) -> Result<(), OAuthError> {
        let policies = self.policies.current();
        let decision = policies.delegate(
            &agent_facts(parent_agent),
            &agent_facts(delegate),
            &parent.facts(),
            &task_facts("", child, parent.task.depth + 1, 0),
            &self.policies.situation(),
        );
        self.enforce(
            "delegate",
            &format!("{} to {}", parent_agent.name, delegate.name),
            &decision,
        )
        .map_err(OAuthError::invalid_grant)
    }
}
