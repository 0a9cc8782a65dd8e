//! `POST /oauth/revoke` (RFC 7009) and `/oauth/introspect` (RFC 7662): the holder ends
//! its task; operators and agents ask what a writ is worth now.

use serde_json::{Value, json};
use writ_core::oauth::CLIENT_ASSERTION_JWT;
use writ_store::TaskState;

use super::exchange::Issuer;
use super::oauth::{Form, OAuthError};

impl Issuer {
    /// `POST /oauth/revoke`: the holder ends its task. Holding the writ is the right to end
    /// it (RFC 7009 section 2.1 leaves client authentication to the server); unknown or
    /// invalid tokens are answered the same way, so the endpoint reveals nothing.
    pub async fn revoke(&self, form: &Form) -> Result<(), OAuthError> {
        let token = form.require("token")?;
        if let Some(claims) = self.writs.verify_ignoring_expiry(&self.keys, token) {
            self.live
                .end_task(&claims.task, TaskState::Completed, "ended by its agent")
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
        let now = self.clock.now();
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
        let Ok(Some(task)) = self.live.get(&claims.task).await else {
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
                let invalid =
                    |e| OAuthError::new("invalid_client", format!("`client_assertion`: {e}"));
                let proven = self
                    .identities
                    .prove(assertion, now)
                    .await
                    .map_err(invalid)?;
                self.identities.spend(&proven, now).await.map_err(invalid)?;
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
