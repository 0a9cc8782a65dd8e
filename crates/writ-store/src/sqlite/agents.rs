//! Agents: registered once, found by id, name or external identity, disabled with
//! every task they hold.

use async_trait::async_trait;

use super::rows::{self, db, to_json, write_error};
use super::{SqliteStore, changes, tasks};
use crate::{Agent, AgentCredential, AgentStore, ChangeKind, StoreError, StoreResult};

const REASON_AGENT_DISABLED: &str = "agent disabled";

#[async_trait]
impl AgentStore for SqliteStore {
    async fn create_agent(&self, agent: &Agent) -> StoreResult<()> {
        let (ext_issuer, ext_subject) = match &agent.credential {
            AgentCredential::External { issuer, subject } => (Some(issuer), Some(subject)),
            AgentCredential::PublicKey { .. } | AgentCredential::JwksUrl { .. } => (None, None),
        };
        sqlx::query(
            "INSERT INTO agents \
             (id, name, team, owner, credential, ext_issuer, ext_subject, disabled, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(&agent.id)
        .bind(&agent.name)
        .bind(&agent.team)
        .bind(&agent.owner)
        .bind(to_json(&agent.credential, "credential")?)
        .bind(ext_issuer)
        .bind(ext_subject)
        .bind(agent.disabled)
        .bind(agent.created_at)
        .execute(&self.pool)
        .await
        .map_err(|err| {
            write_error(err, |message| {
                if message.contains("agents.name") {
                    format!("agent named `{}`", agent.name)
                } else if message.contains("agents.id") {
                    format!("agent `{}`", agent.id)
                } else {
                    format!("agent with the identity of `{}`", agent.name)
                }
            })
        })?;
        Ok(())
    }

    async fn agent(&self, id_or_name: &str) -> StoreResult<Option<Agent>> {
        // An id match wins over a name match (a name could look like another's id).
        sqlx::query("SELECT * FROM agents WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1")
            .bind(id_or_name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(rows::agent)
            .transpose()
    }

    async fn agent_by_external(&self, issuer: &str, subject: &str) -> StoreResult<Option<Agent>> {
        sqlx::query("SELECT * FROM agents WHERE ext_issuer = ?1 AND ext_subject = ?2")
            .bind(issuer)
            .bind(subject)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(rows::agent)
            .transpose()
    }

    async fn agents(&self) -> StoreResult<Vec<Agent>> {
        sqlx::query("SELECT * FROM agents ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(rows::agent)
            .collect()
    }

    async fn disable_agent(&self, id: &str, now: i64) -> StoreResult<Vec<String>> {
        let mut tx = self.begin().await?;
        let disabled = sqlx::query("UPDATE agents SET disabled = 1 WHERE id = ?1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if disabled.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("agent `{id}`")));
        }
        let revoked = tasks::revoke_held_by(&mut tx, id, REASON_AGENT_DISABLED, now).await?;
        changes::record(&mut tx, ChangeKind::Agent, &[id]).await?;
        changes::record(&mut tx, ChangeKind::Task, &revoked).await?;
        tx.commit().await.map_err(db)?;
        Ok(revoked)
    }
}
