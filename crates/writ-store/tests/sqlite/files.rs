//! The database file itself: reopening, sharing, versions; and the in-memory variant.

use writ_store::{
    AgentStore, ChangeFeed, ChangeKind, ReplayCache, SigningKeyStore, SqliteStore, StoreError,
    Task, TaskState, TaskStore, ToolPinStore,
};

use crate::{TempDir, agent, key, task};

#[tokio::test]
async fn data_survives_reopening_the_file() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.db()).await.unwrap();
    store.create_agent(&agent("agt_1", "alice")).await.unwrap();
    store
        .insert_task(&task("tsk_1", "agt_1", 100))
        .await
        .unwrap();
    store.add_calls("tsk_1", 1).await.unwrap();
    store.add_signing_key(&key("k1", 100), 100).await.unwrap();
    assert!(
        store
            .remember_once("dpop", "jti-1", 500, 100)
            .await
            .unwrap()
    );
    store.close().await;
    drop(store);

    let store = SqliteStore::open(&dir.db()).await.unwrap();
    assert_eq!(store.agent("alice").await.unwrap().unwrap().id, "agt_1");
    assert_eq!(store.task("tsk_1").await.unwrap().unwrap().calls, 1);
    assert_eq!(store.signing_keys().await.unwrap()[0].kid, "k1");
    assert!(
        !store
            .remember_once("dpop", "jti-1", 500, 200)
            .await
            .unwrap()
    );
    // Sequence numbers carry on where they stopped.
    store.add_signing_key(&key("k2", 200), 200).await.unwrap();
    let seqs: Vec<_> = store
        .changes_since(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(seqs.len(), 2);
    assert!(seqs[0] < seqs[1]);
}

#[tokio::test]
async fn two_stores_on_one_file_see_each_others_writes() {
    let dir = TempDir::new();
    let path = dir.db();
    let (a, b) = tokio::join!(SqliteStore::open(&path), SqliteStore::open(&path));
    let (a, b) = (a.unwrap(), b.unwrap());
    a.create_agent(&agent("agt_1", "alice")).await.unwrap();
    assert!(b.agent("alice").await.unwrap().is_some());
    assert!(a.remember_once("dpop", "jti-1", 500, 100).await.unwrap());
    assert!(!b.remember_once("dpop", "jti-1", 500, 100).await.unwrap());
}

#[tokio::test]
async fn in_memory_store_keeps_its_data_between_calls() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    store.create_agent(&agent("agt_1", "alice")).await.unwrap();
    store
        .insert_task(&task("tsk_1", "agt_1", 100))
        .await
        .unwrap();
    assert_eq!(
        store
            .end_task("tsk_1", TaskState::Completed, "done", 200)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.agents().await.unwrap().len(), 1);
    // Two stores in memory are two databases.
    let other = SqliteStore::open_in_memory().await.unwrap();
    assert!(other.agents().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_schema_newer_than_this_writ_is_refused() {
    use sqlx::Connection;

    let dir = TempDir::new();
    SqliteStore::open(&dir.db()).await.unwrap().close().await;
    let url = format!("sqlite://{}", dir.db().display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("PRAGMA user_version = 99")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let err = SqliteStore::open(&dir.db()).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Database(message) if message.contains("99")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_version_1_database_migrates_keeping_its_tasks_and_change_sequence() {
    use sqlx::Connection;

    // A database as the first release of Writ left it: schema step 1 only, one task, and
    // a change feed whose newest entry has gone.
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.db().parent().unwrap()).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.db().display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(include_str!("../../src/sqlite/schema.sql"))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::raw_sql(
        "PRAGMA user_version = 1;
         INSERT INTO tasks (id, agent_id, subject_id, parent_id, depth, purpose, tools,
                            data_classes, max_calls, calls, state, reason, proof, jkt,
                            actor_chain, created_at, expires_at, ended_at)
         VALUES ('tsk_1', 'agt_1', 'agt_1', NULL, 0, 'reconcile invoices',
                 '[\"billing.*\",\"mail.send\"]', '[\"pii\"]', 10, 0, 'active', NULL, 'key',
                 'thumbprint', 'null', 100, 700, NULL);
         INSERT INTO changes (kind, subject) VALUES ('task', 'tsk_0'), ('key', 'k1'),
                                                    ('agent', 'agt_0');
         DELETE FROM changes WHERE seq = 3;",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let store = SqliteStore::open(&dir.db()).await.unwrap();
    let expected = Task {
        category: None,
        ..task("tsk_1", "agt_1", 100)
    };
    assert_eq!(store.task("tsk_1").await.unwrap(), Some(expected));
    let changes = store.changes_since(0, 10).await.unwrap();
    let changes: Vec<_> = changes
        .into_iter()
        .map(|c| (c.seq, c.kind, c.subject))
        .collect();
    assert_eq!(
        changes,
        [
            (1, ChangeKind::Task, "tsk_0".to_owned()),
            (2, ChangeKind::Key, "k1".to_owned()),
        ]
    );
    // The new kind is accepted, and sequence 3, which a follower may have seen, is not
    // handed out again.
    store
        .observe_tool("github", "search", "h1", &serde_json::json!({}), 200)
        .await
        .unwrap();
    store
        .observe_tool("github", "search", "h2", &serde_json::json!({}), 200)
        .await
        .unwrap();
    let last = store.changes_since(2, 10).await.unwrap();
    let last: Vec<_> = last
        .into_iter()
        .map(|c| (c.seq, c.kind, c.subject))
        .collect();
    assert_eq!(last, [(4, ChangeKind::Tool, "github.search".to_owned())]);
    store.close().await;

    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(version, 4, "migrated to the latest schema");
    conn.close().await.unwrap();
}
