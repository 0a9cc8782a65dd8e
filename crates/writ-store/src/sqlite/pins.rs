//! Tool pins: trust on first use, drift held back until an operator accepts it.

use async_trait::async_trait;
use sqlx::sqlite::SqliteConnection;

use super::rows::{self, db, to_json};
use super::{SqliteStore, changes};
use crate::{ChangeKind, OfferedTool, StoreError, StoreResult, ToolPin, ToolPinStore};

/// The change-feed subject and the name operators see: server names never contain `.`,
/// so the first `.` splits it again.
fn subject(server: &str, tool: &str) -> String {
    format!("{server}.{tool}")
}

async fn select(
    conn: &mut SqliteConnection,
    server: &str,
    tool: &str,
) -> StoreResult<Option<ToolPin>> {
    sqlx::query("SELECT * FROM tool_pins WHERE server = ?1 AND tool = ?2")
        .bind(server)
        .bind(tool)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?
        .as_ref()
        .map(rows::tool_pin)
        .transpose()
}

#[async_trait]
impl ToolPinStore for SqliteStore {
    async fn tool_pins(&self, server: Option<&str>) -> StoreResult<Vec<ToolPin>> {
        // A NULL parameter switches the condition off, as in `tasks`.
        sqlx::query("SELECT * FROM tool_pins WHERE ?1 IS NULL OR server = ?1 ORDER BY server, tool")
            .bind(server)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(rows::tool_pin)
            .collect()
    }

    async fn tool_pin(&self, server: &str, tool: &str) -> StoreResult<Option<ToolPin>> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        select(&mut conn, server, tool).await
    }

    async fn observe_tools(
        &self,
        server: &str,
        tools: &[OfferedTool<'_>],
        now: i64,
    ) -> StoreResult<Vec<ToolPin>> {
        let mut tx = self.begin().await?;
        let mut pins = Vec::with_capacity(tools.len());
        let mut changed = Vec::new();
        for offered in tools {
            let (pin, drift_changed) = observe(&mut tx, server, offered, now).await?;
            if drift_changed {
                changed.push(subject(server, offered.tool));
            }
            pins.push(pin);
        }
        if !changed.is_empty() {
            changes::record(&mut tx, ChangeKind::Tool, &changed).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(pins)
    }

    async fn accept_tool(
        &self,
        server: &str,
        tool: &str,
        expected: Option<&str>,
        now: i64,
    ) -> StoreResult<ToolPin> {
        let mut tx = self.begin().await?;
        // Copied inside the database: the definition accepted is the one stored, byte for byte.
        let accepted = sqlx::query(
            "UPDATE tool_pins \
             SET hash = drift_hash, definition = drift_definition, pinned_at = ?3, \
                 drift_hash = NULL, drift_definition = NULL, drift_seen_at = NULL \
             WHERE server = ?1 AND tool = ?2 AND drift_hash IS NOT NULL \
               AND (?4 IS NULL OR substr(drift_hash, 1, length(?4)) = ?4) RETURNING *",
        )
        .bind(server)
        .bind(tool)
        .bind(now)
        .bind(expected)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(accepted) = accepted else {
            let name = subject(server, tool);
            return Err(match select(&mut tx, server, tool).await? {
                Some(pin) => match (pin.drift, expected) {
                    (Some(drift), Some(expected)) => StoreError::Stale(format!(
                        "the changed definition of tool `{name}` is now {}, not {expected}: it changed again since it was reviewed",
                        drift.hash
                    )),
                    _ => StoreError::NotFound(format!("a changed definition of tool `{name}`")),
                },
                None => StoreError::NotFound(format!("tool `{name}`")),
            });
        };
        let pin = rows::tool_pin(&accepted)?;
        changes::record(&mut tx, ChangeKind::Tool, &[subject(server, tool)]).await?;
        tx.commit().await.map_err(db)?;
        Ok(pin)
    }
}

/// One offered tool against its pin, inside the caller's transaction: the pin now, and
/// whether its drift appeared, changed or was cleared.
async fn observe(
    tx: &mut SqliteConnection,
    server: &str,
    offered: &OfferedTool<'_>,
    now: i64,
) -> StoreResult<(ToolPin, bool)> {
    let OfferedTool {
        tool,
        hash,
        definition,
    } = *offered;
    Ok(match select(tx, server, tool).await? {
        None => {
            let pinned = sqlx::query(
                "INSERT INTO tool_pins (server, tool, hash, definition, pinned_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) RETURNING *",
            )
            .bind(server)
            .bind(tool)
            .bind(hash)
            .bind(to_json(definition, "tool definition")?)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            (rows::tool_pin(&pinned)?, false)
        }
        Some(pin) if pin.hash == hash && pin.drift.is_none() => (pin, false),
        // Back to the accepted definition: the drift is moot.
        Some(pin) if pin.hash == hash => {
            let cleared = sqlx::query(
                "UPDATE tool_pins \
                 SET drift_hash = NULL, drift_definition = NULL, drift_seen_at = NULL \
                 WHERE server = ?1 AND tool = ?2 RETURNING *",
            )
            .bind(server)
            .bind(tool)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            (rows::tool_pin(&cleared)?, true)
        }
        // The same drift again: equal hashes mean equal definitions, and its first
        // sighting is what an operator wants to see.
        Some(pin) if pin.drift.as_ref().is_some_and(|drift| drift.hash == hash) => (pin, false),
        Some(_) => {
            let drifted = sqlx::query(
                "UPDATE tool_pins SET drift_hash = ?3, drift_definition = ?4, drift_seen_at = ?5 \
                 WHERE server = ?1 AND tool = ?2 RETURNING *",
            )
            .bind(server)
            .bind(tool)
            .bind(hash)
            .bind(to_json(definition, "tool definition")?)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            (rows::tool_pin(&drifted)?, true)
        }
    })
}
