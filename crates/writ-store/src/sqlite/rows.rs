//! Between SQLite and the records: decoding rows, encoding values, and turning sqlx errors
//! into store errors.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{Decode, Row, Type};
use writ_core::task::ToolPattern;

use crate::{
    Agent, AgentCredential, Change, ChangeKind, SigningKey, StoreError, StoreResult, Task,
    TaskState, ToolDrift, ToolPin,
};

/// Any sqlx error as a database error; the message is for the log, never for an agent.
pub(super) fn db(err: sqlx::Error) -> StoreError {
    StoreError::Database(err.to_string())
}

/// The error of a write: a unique violation is a conflict over `what` (given SQLite's
/// message, which names the columns), anything else a database error.
pub(super) fn write_error(err: sqlx::Error, what: impl FnOnce(&str) -> String) -> StoreError {
    match err.as_database_error() {
        Some(e) if e.is_unique_violation() => StoreError::Conflict(what(e.message())),
        _ => db(err),
    }
}

/// Whether the error is a foreign key pointing nowhere (SQLite does not say which one).
pub(super) fn is_missing_reference(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|e| e.is_foreign_key_violation())
}

/// SQLite integers are signed; counts above `i64::MAX` cannot be stored.
pub(super) fn to_i64(value: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(value).map_err(|_| StoreError::Database(format!("{what} {value} is too large")))
}

pub(super) fn to_json(value: &impl Serialize, what: &str) -> StoreResult<String> {
    serde_json::to_string(value)
        .map_err(|err| StoreError::Database(format!("cannot encode {what}: {err}")))
}

pub(super) fn kind_name(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Task => "task",
        ChangeKind::Agent => "agent",
        ChangeKind::Key => "key",
        ChangeKind::Tool => "tool",
    }
}

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> StoreResult<T>
where
    T: Decode<'r, Sqlite> + Type<Sqlite>,
{
    row.try_get(column).map_err(db)
}

fn get_json<T: DeserializeOwned>(row: &SqliteRow, column: &str) -> StoreResult<T> {
    let text: String = get(row, column)?;
    serde_json::from_str(&text)
        .map_err(|err| StoreError::Database(format!("unreadable JSON in `{column}`: {err}")))
}

pub(super) fn agent(row: &SqliteRow) -> StoreResult<Agent> {
    Ok(Agent {
        id: get(row, "id")?,
        name: get(row, "name")?,
        team: get(row, "team")?,
        owner: get(row, "owner")?,
        credential: get_json::<AgentCredential>(row, "credential")?,
        disabled: get(row, "disabled")?,
        created_at: get(row, "created_at")?,
    })
}

/// A task row. Its tool patterns are parsed here, once; a pattern that does not parse is
/// an error naming the task and the pattern, never dropped: a grant with a pattern left
/// out would be another grant.
pub(super) fn task(row: &SqliteRow) -> StoreResult<Task> {
    let id: String = get(row, "id")?;
    let state: String = get(row, "state")?;
    let state = TaskState::parse(&state)
        .ok_or_else(|| StoreError::Database(format!("unknown task state `{state}`")))?;
    let tools = get_json::<Vec<String>>(row, "tools")?
        .iter()
        .map(|text| {
            ToolPattern::parse(text).map_err(|err| {
                StoreError::Database(format!(
                    "task `{id}` is stored with tool pattern `{text}`, which does not parse: {err}"
                ))
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Task {
        id,
        agent_id: get(row, "agent_id")?,
        subject_id: get(row, "subject_id")?,
        parent_id: get(row, "parent_id")?,
        depth: get(row, "depth")?,
        purpose: get(row, "purpose")?,
        category: get(row, "category")?,
        tools,
        data_classes: get_json(row, "data_classes")?,
        max_calls: get(row, "max_calls")?,
        calls: get(row, "calls")?,
        state,
        reason: get(row, "reason")?,
        proof: get(row, "proof")?,
        jkt: get(row, "jkt")?,
        actor_chain: get_json(row, "actor_chain")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        ended_at: get(row, "ended_at")?,
    })
}

pub(super) fn signing_key(row: &SqliteRow) -> StoreResult<SigningKey> {
    Ok(SigningKey {
        kid: get(row, "kid")?,
        algorithm: get(row, "algorithm")?,
        private_pem: get(row, "private_pem")?,
        created_at: get(row, "created_at")?,
        retired_at: get(row, "retired_at")?,
    })
}

pub(super) fn tool_pin(row: &SqliteRow) -> StoreResult<ToolPin> {
    // The table's CHECK keeps the three drift columns all set or all NULL.
    let drift = match get::<Option<String>>(row, "drift_hash")? {
        Some(hash) => Some(ToolDrift {
            hash,
            definition: get_json(row, "drift_definition")?,
            seen_at: get(row, "drift_seen_at")?,
        }),
        None => None,
    };
    Ok(ToolPin {
        server: get(row, "server")?,
        tool: get(row, "tool")?,
        hash: get(row, "hash")?,
        definition: get_json(row, "definition")?,
        pinned_at: get(row, "pinned_at")?,
        drift,
    })
}

pub(super) fn change(row: &SqliteRow) -> StoreResult<Change> {
    let kind: String = get(row, "kind")?;
    let kind = match kind.as_str() {
        "task" => ChangeKind::Task,
        "agent" => ChangeKind::Agent,
        "key" => ChangeKind::Key,
        "tool" => ChangeKind::Tool,
        _ => {
            return Err(StoreError::Database(format!(
                "unknown change kind `{kind}`"
            )));
        }
    };
    Ok(Change {
        seq: get(row, "seq")?,
        kind,
        subject: get(row, "subject")?,
    })
}

/// Task ids changed by one statement, in a stable order: shallowest first (a parent before
/// the tasks delegated from it), then oldest, then by id. SQLite's `RETURNING` promises
/// no order, and callers and tests should not see one that varies.
pub(super) fn ordered_ids(rows: &[SqliteRow]) -> StoreResult<Vec<String>> {
    let mut changed = rows
        .iter()
        .map(|row| {
            Ok((
                get::<i64>(row, "depth")?,
                get::<i64>(row, "created_at")?,
                get::<String>(row, "id")?,
            ))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    changed.sort();
    Ok(changed.into_iter().map(|(_, _, id)| id).collect())
}
