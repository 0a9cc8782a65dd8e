//! Tasks: recording, listing, ending, revoking down the delegation tree, expiring.

use writ_store::{
    AgentStore, Begun, ChangeFeed, ChangeKind, NewTask, OneTime, ReplayCache, StoreError,
    TaskFilter, TaskState, TaskStore,
};

use crate::{agent, all_changes, child, ids, open, pattern, state, task};

#[tokio::test]
async fn task_round_trips_and_begins_active() {
    let (_dir, store) = open().await;
    store.create_agent(&agent("agt_1", "alice")).await.unwrap();
    let root = task("tsk_1", "agt_1", 100);
    let mut delegated = child("tsk_2", "agt_1", &root, 110);
    // Whatever the caller says, a new task is active with no end.
    delegated.state = TaskState::Revoked;
    delegated.ended_at = Some(5);
    delegated.category = None;
    store.insert_task(&root).await.unwrap();
    store.insert_task(&delegated).await.unwrap();

    assert_eq!(store.task("tsk_1").await.unwrap(), Some(root.clone()));
    let stored = store.task("tsk_2").await.unwrap().unwrap();
    assert_eq!(stored.state, TaskState::Active);
    assert_eq!(stored.ended_at, None);
    assert_eq!(stored.actor_chain, serde_json::json!({ "sub": "agt_1" }));
    assert_eq!(stored.depth, 1);
    assert_eq!(stored.category, None);
    assert_eq!(
        store
            .task("tsk_1")
            .await
            .unwrap()
            .unwrap()
            .category
            .as_deref(),
        Some("finance")
    );
    assert_eq!(store.task("tsk_9").await.unwrap(), None);

    let err = store.insert_task(&root).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    // An unregistered external identity may hold a task (`require_registered = false`).
    store
        .insert_task(&task("tsk_3", "agt_9", 120))
        .await
        .unwrap();
    let mut orphan = task("tsk_4", "agt_1", 120);
    orphan.parent_id = Some("tsk_missing".into());
    let err = store.insert_task(&orphan).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

fn spending(task: writ_store::Task, jti: Option<&str>) -> NewTask {
    NewTask {
        once: jti.map(|id| OneTime {
            scope: "assertion".into(),
            id: id.into(),
            expires_at: 160,
        }),
        task,
    }
}

/// Begins `tasks` through the pool, or through a task appender of the store's own.
async fn begin(
    store: &writ_store::SqliteStore,
    own: bool,
    tasks: &[NewTask],
    now: i64,
) -> Result<Vec<Begun>, StoreError> {
    if own {
        let mut appender = store.task_appender().unwrap().unwrap();
        appender.begin_tasks(tasks, now)
    } else {
        store.begin_tasks(tasks, now).await
    }
}

/// Many tasks at once, each with the identifier its request spent: recorded as one by
/// one, a replay refused per task — remembered before, or spent by an earlier task of
/// the same call — and its task not recorded. Through the pool and through the
/// store's own connection alike.
#[tokio::test]
async fn begin_tasks_records_tasks_and_refuses_replays_one_by_one() {
    for own in [false, true] {
        let (_dir, store) = open().await;
        store.create_agent(&agent("agt_1", "alice")).await.unwrap();
        assert!(
            store
                .remember_once("assertion", "used", 160, 100)
                .await
                .unwrap()
        );
        let root = task("tsk_1", "agt_1", 100);
        let mut tasks = vec![
            spending(root.clone(), Some("j1")),
            spending(task("tsk_2", "agt_1", 100), Some("used")),
            spending(task("tsk_3", "agt_1", 100), Some("j3")),
            spending(task("tsk_4", "agt_1", 100), Some("j3")),
            spending(child("tsk_5", "agt_1", &root, 100), None),
        ];
        // Whatever the caller says, a new task is active with no end.
        tasks[2].task.state = TaskState::Revoked;
        tasks[2].task.ended_at = Some(5);
        let outcomes = begin(&store, own, &tasks, 100).await.unwrap();
        assert_eq!(
            outcomes,
            [
                Begun::Recorded,
                Begun::Replayed,
                Begun::Recorded,
                Begun::Replayed,
                Begun::Recorded
            ],
            "own connection: {own}"
        );
        assert_eq!(store.task("tsk_1").await.unwrap(), Some(root.clone()));
        assert_eq!(store.task("tsk_2").await.unwrap(), None);
        let third = store.task("tsk_3").await.unwrap().unwrap();
        assert_eq!((third.state, third.ended_at), (TaskState::Active, None));
        assert_eq!(store.task("tsk_4").await.unwrap(), None);
        assert_eq!(store.task("tsk_5").await.unwrap().unwrap().depth, 1);
        // The identifiers are remembered as `remember_once` remembers them…
        assert!(
            !store
                .remember_once("assertion", "j1", 160, 120)
                .await
                .unwrap()
        );
        // …and forgotten at their expiry, here by the next call.
        let again = [spending(task("tsk_6", "agt_1", 160), Some("j3"))];
        assert_eq!(
            begin(&store, own, &again, 160).await.unwrap(),
            [Begun::Recorded]
        );
        assert_eq!(begin(&store, own, &[], 160).await.unwrap(), []);
    }
}

/// A task that cannot be recorded refuses its whole call: nothing of it is recorded,
/// and its identifiers are not spent.
#[tokio::test]
async fn begin_tasks_records_nothing_when_a_task_fails() {
    for own in [false, true] {
        let (_dir, store) = open().await;
        store.create_agent(&agent("agt_1", "alice")).await.unwrap();
        let mut orphan = task("tsk_2", "agt_1", 100);
        orphan.parent_id = Some("tsk_missing".into());
        let tasks = [
            spending(task("tsk_1", "agt_1", 100), Some("j1")),
            spending(orphan, Some("j2")),
        ];
        let err = begin(&store, own, &tasks, 100).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{own}: {err:?}");
        assert_eq!(store.task("tsk_1").await.unwrap(), None);
        assert!(
            store
                .remember_once("assertion", "j1", 160, 100)
                .await
                .unwrap()
        );
        let twice = vec![spending(task("tsk_3", "agt_1", 100), None); 2];
        let err = begin(&store, own, &twice, 100).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{own}: {err:?}");
        assert_eq!(store.task("tsk_3").await.unwrap(), None);
    }
}

/// More tasks than one statement carries.
#[tokio::test]
async fn begin_tasks_takes_batches_larger_than_one_statement() {
    let (_dir, store) = open().await;
    store.create_agent(&agent("agt_1", "alice")).await.unwrap();
    let tasks: Vec<NewTask> = (0..1_100)
        .map(|i| {
            let id = format!("j{}", i % 1_050);
            spending(task(&format!("tsk_{i}"), "agt_1", 100), Some(id.as_str()))
        })
        .collect();
    let outcomes = store.begin_tasks(&tasks, 100).await.unwrap();
    let recorded = outcomes.iter().filter(|o| **o == Begun::Recorded).count();
    assert_eq!(recorded, 1_050);
    assert_eq!(outcomes[1_049], Begun::Recorded);
    assert_eq!(outcomes[1_050], Begun::Replayed);
    assert!(store.task("tsk_1049").await.unwrap().is_some());
    assert_eq!(store.task("tsk_1050").await.unwrap(), None);
}

#[tokio::test]
async fn tasks_filter_newest_first() {
    let (_dir, store) = open().await;
    store.create_agent(&agent("agt_1", "alice")).await.unwrap();
    store.create_agent(&agent("agt_2", "bob")).await.unwrap();
    let root = task("tsk_1", "agt_1", 100);
    store.insert_task(&root).await.unwrap();
    store
        .insert_task(&child("tsk_2", "agt_2", &root, 200))
        .await
        .unwrap();
    store
        .insert_task(&task("tsk_3", "agt_2", 300))
        .await
        .unwrap();
    store
        .insert_task(&task("tsk_4", "agt_2", 300))
        .await
        .unwrap();
    store
        .end_task("tsk_3", TaskState::Completed, "done", 400)
        .await
        .unwrap();

    let listed = |filter: TaskFilter| {
        let store = store.clone();
        async move {
            let tasks = store.tasks(&filter).await.unwrap();
            tasks.into_iter().map(|t| t.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed(TaskFilter::default()).await,
        ["tsk_4", "tsk_3", "tsk_2", "tsk_1"]
    );
    // An agent's tasks include those begun on its behalf and delegated onwards.
    let alice = TaskFilter {
        agent_id: Some("agt_1".to_owned()),
        ..TaskFilter::default()
    };
    assert_eq!(listed(alice).await, ["tsk_2", "tsk_1"]);
    let active_bob = TaskFilter {
        agent_id: Some("agt_2".to_owned()),
        state: Some(TaskState::Active),
        limit: None,
    };
    assert_eq!(listed(active_bob).await, ["tsk_4", "tsk_2"]);
    let two = TaskFilter {
        limit: Some(2),
        ..TaskFilter::default()
    };
    assert_eq!(listed(two).await, ["tsk_4", "tsk_3"]);
}

#[tokio::test]
async fn disable_agent_revokes_its_tasks_and_tasks_delegated_from_them() {
    let (_dir, store) = open().await;
    for (id, name) in [("agt_a", "alice"), ("agt_b", "bob"), ("agt_c", "carol")] {
        store.create_agent(&agent(id, name)).await.unwrap();
    }
    let own = task("tsk_1", "agt_a", 100);
    let delegated = child("tsk_2", "agt_b", &own, 110);
    let grandchild = child("tsk_3", "agt_c", &delegated, 120);
    let finished = task("tsk_4", "agt_a", 90);
    let unrelated = task("tsk_5", "agt_b", 130);
    for t in [&own, &delegated, &grandchild, &finished, &unrelated] {
        store.insert_task(t).await.unwrap();
    }
    store
        .end_task("tsk_4", TaskState::Completed, "done", 95)
        .await
        .unwrap();

    let revoked = store.disable_agent("agt_a", 500).await.unwrap();
    assert_eq!(revoked, ids(&["tsk_1", "tsk_2", "tsk_3"]));
    assert!(store.agent("agt_a").await.unwrap().unwrap().disabled);
    for id in ["tsk_1", "tsk_2", "tsk_3"] {
        let expected = (
            TaskState::Revoked,
            Some("agent disabled".to_owned()),
            Some(500),
        );
        assert_eq!(state(&store, id).await, expected, "{id}");
    }
    assert_eq!(state(&store, "tsk_4").await.0, TaskState::Completed);
    assert_eq!(state(&store, "tsk_5").await.0, TaskState::Active);
    assert!(!store.agent("agt_b").await.unwrap().unwrap().disabled);

    let changes = all_changes(&store).await;
    assert_eq!(
        changes,
        [
            (ChangeKind::Task, "tsk_4".to_owned()),
            (ChangeKind::Agent, "agt_a".to_owned()),
            (ChangeKind::Task, "tsk_1".to_owned()),
            (ChangeKind::Task, "tsk_2".to_owned()),
            (ChangeKind::Task, "tsk_3".to_owned()),
        ]
    );

    let err = store.disable_agent("agt_zz", 500).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn end_task_revokes_descendants_and_lists_the_task_first() {
    let (_dir, store) = open().await;
    store.create_agent(&agent("agt_1", "alice")).await.unwrap();
    let root = task("tsk_1", "agt_1", 100);
    let middle = child("tsk_2", "agt_1", &root, 110);
    let leaf_b = child("tsk_4", "agt_1", &middle, 130);
    let leaf_a = child("tsk_3", "agt_1", &middle, 120);
    let sibling = child("tsk_5", "agt_1", &root, 140);
    for t in [&root, &middle, &leaf_b, &leaf_a, &sibling] {
        store.insert_task(t).await.unwrap();
    }
    store
        .end_task("tsk_5", TaskState::Completed, "done", 150)
        .await
        .unwrap();

    let changed = store
        .end_task("tsk_2", TaskState::Revoked, "operator", 200)
        .await
        .unwrap();
    assert_eq!(changed, ids(&["tsk_2", "tsk_3", "tsk_4"]));
    assert_eq!(
        state(&store, "tsk_2").await,
        (TaskState::Revoked, Some("operator".to_owned()), Some(200))
    );
    assert_eq!(
        state(&store, "tsk_4").await,
        (
            TaskState::Revoked,
            Some("parent task ended".to_owned()),
            Some(200)
        )
    );
    assert_eq!(state(&store, "tsk_1").await.0, TaskState::Active);

    let changed = store
        .end_task("tsk_1", TaskState::Completed, "done", 300)
        .await
        .unwrap();
    assert_eq!(
        changed,
        ids(&["tsk_1"]),
        "ended descendants are not touched again"
    );
    assert_eq!(state(&store, "tsk_5").await.1, Some("done".to_owned()));

    let subjects: Vec<_> = all_changes(&store).await.into_iter().map(|c| c.1).collect();
    assert_eq!(subjects, ["tsk_5", "tsk_2", "tsk_3", "tsk_4", "tsk_1"]);
}

#[tokio::test]
async fn ending_a_task_that_is_not_active_changes_nothing() {
    let (_dir, store) = open().await;
    store.create_agent(&agent("agt_1", "alice")).await.unwrap();
    store
        .insert_task(&task("tsk_1", "agt_1", 100))
        .await
        .unwrap();
    store
        .end_task("tsk_1", TaskState::Completed, "done", 200)
        .await
        .unwrap();
    let before = store.changes_since(0, 100).await.unwrap();

    let changed = store
        .end_task("tsk_1", TaskState::Revoked, "again", 300)
        .await
        .unwrap();
    assert!(changed.is_empty());
    assert_eq!(
        state(&store, "tsk_1").await,
        (TaskState::Completed, Some("done".to_owned()), Some(200))
    );
    assert_eq!(store.changes_since(0, 100).await.unwrap(), before);

    let err = store
        .end_task("tsk_9", TaskState::Revoked, "x", 300)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let err = store
        .end_task("tsk_1", TaskState::Active, "x", 300)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
}

#[tokio::test]
async fn add_calls_returns_the_new_count() {
    let (_dir, store) = open().await;
    store.create_agent(&agent("agt_1", "alice")).await.unwrap();
    store
        .insert_task(&task("tsk_1", "agt_1", 100))
        .await
        .unwrap();

    assert_eq!(store.add_calls("tsk_1", 1).await.unwrap(), 1);
    assert_eq!(store.add_calls("tsk_1", 3).await.unwrap(), 4);
    assert_eq!(store.task("tsk_1").await.unwrap().unwrap().calls, 4);
    let err = store.add_calls("tsk_9", 1).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn expire_tasks_ends_only_active_tasks_past_expiry() {
    let (_dir, store) = open().await;
    store.create_agent(&agent("agt_1", "alice")).await.unwrap();
    // Expiring at 700, 710 and 800.
    store
        .insert_task(&task("tsk_1", "agt_1", 100))
        .await
        .unwrap();
    store
        .insert_task(&task("tsk_2", "agt_1", 110))
        .await
        .unwrap();
    store
        .insert_task(&task("tsk_3", "agt_1", 200))
        .await
        .unwrap();
    store
        .insert_task(&task("tsk_4", "agt_1", 50))
        .await
        .unwrap();
    store
        .end_task("tsk_4", TaskState::Completed, "done", 60)
        .await
        .unwrap();

    assert_eq!(
        store.expire_tasks(710).await.unwrap(),
        ids(&["tsk_1", "tsk_2"])
    );
    assert_eq!(
        state(&store, "tsk_1").await,
        (TaskState::Expired, Some("expired".to_owned()), Some(710))
    );
    assert_eq!(state(&store, "tsk_3").await.0, TaskState::Active);
    assert_eq!(state(&store, "tsk_4").await.0, TaskState::Completed);
    assert!(store.expire_tasks(710).await.unwrap().is_empty());

    let subjects: Vec<_> = all_changes(&store).await.into_iter().map(|c| c.1).collect();
    assert_eq!(subjects, ["tsk_4", "tsk_1", "tsk_2"]);
}

#[tokio::test]
async fn every_form_of_tool_pattern_reads_back_as_written() {
    let (_dir, store) = open().await;
    let mut wide = task("tsk_1", "agt_1", 100);
    wide.tools = [
        "*",
        "notes.*",
        "notes.read",
        "notes.prompt:*",
        "notes.prompt:summarise",
        "docs.resource:*",
        "docs.resource:file:///reports/q3.txt",
        "docs.resource:file:///reports/*",
    ]
    .into_iter()
    .map(pattern)
    .collect();
    store.insert_task(&wide).await.unwrap();
    assert_eq!(store.task("tsk_1").await.unwrap(), Some(wide));
}

/// A stored pattern Writ cannot read is an error naming the task and the pattern, never
/// dropped: a grant with a pattern left out would be another grant.
#[tokio::test]
async fn a_stored_tool_pattern_that_does_not_parse_is_an_error_naming_it() {
    use sqlx::Connection as _;

    let (dir, store) = open().await;
    store
        .insert_task(&task("tsk_1", "agt_1", 100))
        .await
        .unwrap();
    store
        .insert_task(&task("tsk_2", "agt_1", 110))
        .await
        .unwrap();
    // No API writes a bad pattern (the type cannot hold one), so the row is changed
    // behind the store's back, as a bad migration or another writer could.
    let url = format!("sqlite://{}", dir.db().display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE tasks SET tools = ?1 WHERE id = 'tsk_1'")
        .bind(r#"["billing.*","billing.no such tool"]"#)
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let err = store.task("tsk_1").await.unwrap_err();
    let StoreError::Database(message) = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("task `tsk_1`"), "{message}");
    assert!(message.contains("`billing.no such tool`"), "{message}");
    let err = store.tasks(&TaskFilter::default()).await.unwrap_err();
    assert!(err.to_string().contains("task `tsk_1`"), "{err}");
    // Only that task is unreadable.
    assert!(store.task("tsk_2").await.unwrap().is_some());
}
