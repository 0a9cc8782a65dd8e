#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

//! `SqliteStore` against real database files in a temporary directory: one test binary,
//! one module per area, the helpers here.

mod agents;
mod audit;
mod faults;
mod files;
mod keys;
mod pins;
mod replay;
mod tasks;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use writ_core::task::ToolPattern;
use writ_store::{
    Agent, AgentCredential, ChangeFeed, ChangeKind, SigningKey, SqliteStore, Task, TaskState,
    TaskStore,
};

/// A directory of its own per test, removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!(
            "writ-store-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self(std::env::temp_dir().join(name))
    }

    /// The database path, one directory down so `open` has to create it.
    fn db(&self) -> PathBuf {
        self.0.join("data").join("writ.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn open() -> (TempDir, SqliteStore) {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.db()).await.unwrap();
    (dir, store)
}

fn agent(id: &str, name: &str) -> Agent {
    Agent {
        id: id.to_owned(),
        name: name.to_owned(),
        team: Some("payments".to_owned()),
        owner: None,
        credential: AgentCredential::PublicKey {
            algorithm: "EdDSA".to_owned(),
            pem: "-----BEGIN PUBLIC KEY-----".to_owned(),
        },
        disabled: false,
        created_at: 1_000,
    }
}

fn external(id: &str, name: &str, issuer: &str, subject: &str) -> Agent {
    Agent {
        credential: AgentCredential::External {
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
        },
        ..agent(id, name)
    }
}

fn task(id: &str, agent_id: &str, created_at: i64) -> Task {
    Task {
        id: id.to_owned(),
        agent_id: agent_id.to_owned(),
        subject_id: agent_id.to_owned(),
        parent_id: None,
        depth: 0,
        purpose: "reconcile invoices".to_owned(),
        category: Some("finance".to_owned()),
        tools: vec![pattern("billing.*"), pattern("mail.send")],
        data_classes: vec!["pii".to_owned()],
        max_calls: Some(10),
        calls: 0,
        state: TaskState::Active,
        reason: None,
        proof: "key".to_owned(),
        jkt: Some("thumbprint".to_owned()),
        actor_chain: serde_json::Value::Null,
        created_at,
        expires_at: created_at + 600,
        ended_at: None,
    }
}

fn pattern(text: &str) -> ToolPattern {
    ToolPattern::parse(text).unwrap()
}

/// A task delegated from `parent` to `agent_id`.
fn child(id: &str, agent_id: &str, parent: &Task, created_at: i64) -> Task {
    Task {
        subject_id: parent.subject_id.clone(),
        parent_id: Some(parent.id.clone()),
        depth: parent.depth + 1,
        actor_chain: serde_json::json!({ "sub": parent.agent_id }),
        ..task(id, agent_id, created_at)
    }
}

fn key(kid: &str, created_at: i64) -> SigningKey {
    SigningKey {
        kid: kid.to_owned(),
        algorithm: "EdDSA".to_owned(),
        private_pem: format!("private {kid}"),
        created_at,
        retired_at: None,
    }
}

async fn state(store: &SqliteStore, id: &str) -> (TaskState, Option<String>, Option<i64>) {
    let task = store.task(id).await.unwrap().unwrap();
    (task.state, task.reason, task.ended_at)
}

async fn all_changes(store: &SqliteStore) -> Vec<(ChangeKind, String)> {
    let changes = store.changes_since(0, 1_000).await.unwrap();
    changes.into_iter().map(|c| (c.kind, c.subject)).collect()
}

fn ids(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}
