//! `FaultyStore` around a `SqliteStore`: everything forwarded while no switch is on, the
//! operations switched on refused before they reach the store, the audit appender too.

use std::sync::Arc;

use writ_audit::{Chain, Event, kinds};
use writ_store::faults::{Fault, FaultyStore};
use writ_store::{
    AgentStore, AuditStore, Begun, ChangeFeed, NewTask, OneTime, ReplayCache, SigningKeyStore,
    StoreError, TaskStore, ToolPinStore,
};

use crate::{agent, key, open, task};

fn is_injected(err: &StoreError) -> bool {
    matches!(err, StoreError::Database(message) if message.starts_with("injected fault: "))
}

#[tokio::test]
async fn with_no_switch_on_every_concern_is_forwarded() {
    let (_dir, inner) = open().await;
    let faulty = FaultyStore::new(Arc::new(inner.clone()));
    faulty.create_agent(&agent("agt_1", "alice")).await.unwrap();
    faulty
        .insert_task(&task("tsk_1", "agt_1", 100))
        .await
        .unwrap();
    assert!(faulty.remember_once("jti", "a", 200, 100).await.unwrap());
    faulty.add_signing_key(&key("k1", 100), 100).await.unwrap();
    faulty
        .observe_tool("notes", "read", "h1", &serde_json::json!({}), 100)
        .await
        .unwrap();
    assert_eq!(inner.agents().await.unwrap().len(), 1);
    assert_eq!(
        faulty.task("tsk_1").await.unwrap(),
        inner.task("tsk_1").await.unwrap()
    );
    assert!(!inner.remember_once("jti", "a", 200, 100).await.unwrap());
    assert_eq!(faulty.signing_keys().await.unwrap().len(), 1);
    assert!(inner.tool_pin("notes", "read").await.unwrap().is_some());
    assert_eq!(faulty.changes_since(0, 10).await.unwrap().len(), 1);
    assert_eq!(faulty.refused(Fault::TaskWrites), 0);
}

#[tokio::test]
async fn a_switched_on_fault_refuses_before_the_store_and_can_be_switched_off() {
    let (_dir, inner) = open().await;
    let faulty = FaultyStore::new(Arc::new(inner.clone()));
    faulty.fail(Fault::TaskWrites, true);
    let err = faulty
        .insert_task(&task("tsk_1", "agt_1", 100))
        .await
        .unwrap_err();
    assert!(is_injected(&err), "{err:?}");
    assert_eq!(err.to_string(), "store: injected fault: task writes fail");
    assert_eq!(
        inner.task("tsk_1").await.unwrap(),
        None,
        "nothing reached the store"
    );
    assert_eq!(faulty.refused(Fault::TaskWrites), 1);
    // Other concerns, and reads of the same one, go on working.
    assert_eq!(faulty.task("tsk_1").await.unwrap(), None);
    faulty.create_agent(&agent("agt_1", "alice")).await.unwrap();

    faulty.fail(Fault::TaskWrites, false);
    faulty
        .insert_task(&task("tsk_1", "agt_1", 100))
        .await
        .unwrap();
    assert!(inner.task("tsk_1").await.unwrap().is_some());
    assert_eq!(faulty.refused(Fault::TaskWrites), 1);
}

/// Tasks begun with an identifier are both task writes and replay checks: either switch
/// refuses them; without an identifier, only task writes do.
#[tokio::test]
async fn tasks_begun_with_an_identifier_fail_with_task_writes_or_replay_checks() {
    let (_dir, inner) = open().await;
    let faulty = FaultyStore::new(Arc::new(inner.clone()));
    faulty.create_agent(&agent("agt_1", "alice")).await.unwrap();
    let spending = |id: &str, jti: Option<&str>| NewTask {
        task: task(id, "agt_1", 100),
        once: jti.map(|jti| OneTime {
            scope: "assertion".into(),
            id: jti.into(),
            expires_at: 200,
        }),
    };
    faulty.fail(Fault::ReplayChecks, true);
    let err = faulty
        .begin_tasks(&[spending("tsk_1", Some("a"))], 100)
        .await
        .unwrap_err();
    assert!(is_injected(&err), "{err:?}");
    assert_eq!(
        faulty
            .begin_tasks(&[spending("tsk_2", None)], 100)
            .await
            .unwrap(),
        [Begun::Recorded]
    );
    faulty.fail(Fault::ReplayChecks, false);
    faulty.fail(Fault::TaskWrites, true);
    let err = faulty
        .begin_tasks(&[spending("tsk_3", None)], 100)
        .await
        .unwrap_err();
    assert!(is_injected(&err), "{err:?}");
    assert_eq!(inner.task("tsk_1").await.unwrap(), None);
    assert_eq!(inner.task("tsk_3").await.unwrap(), None);
    assert_eq!(faulty.refused(Fault::TaskWrites), 1);
    assert_eq!(faulty.refused(Fault::ReplayChecks), 1);

    // A task appender handed out before the switch was thrown fails while it is on.
    faulty.fail(Fault::TaskWrites, false);
    let mut appender = faulty.task_appender().unwrap().unwrap();
    faulty.fail(Fault::TaskWrites, true);
    let err = appender
        .begin_tasks(&[spending("tsk_4", None)], 100)
        .unwrap_err();
    assert!(is_injected(&err), "{err:?}");
    faulty.fail(Fault::TaskWrites, false);
    assert_eq!(
        appender
            .begin_tasks(&[spending("tsk_4", Some("b"))], 100)
            .unwrap(),
        [Begun::Recorded]
    );
    assert!(inner.task("tsk_4").await.unwrap().is_some());
}

#[tokio::test]
async fn an_appender_handed_out_earlier_fails_its_appends_while_the_switch_is_on() {
    let (_dir, inner) = open().await;
    let faulty = FaultyStore::new(Arc::new(inner.clone()));
    let mut appender = faulty
        .audit_appender()
        .unwrap()
        .expect("a file store has one");
    let mut chain = Chain::new("gw_1", None);
    let mut seal = |n: i64| chain.seal(Event::new(kinds::CALL_DECIDED).unwrap(), n);
    let first = seal(1);
    appender.append(&[first], None).unwrap();

    faulty.fail(Fault::AuditAppends, true);
    let second = seal(2);
    let err = appender
        .append(std::slice::from_ref(&second), None)
        .unwrap_err();
    assert!(is_injected(&err), "{err:?}");
    let err = faulty
        .append_audit(std::slice::from_ref(&second))
        .await
        .unwrap_err();
    assert!(is_injected(&err), "{err:?}");
    assert_eq!(faulty.refused(Fault::AuditAppends), 2);
    assert_eq!(inner.audit_head("gw_1").await.unwrap().unwrap().0, 1);

    faulty.fail(Fault::AuditAppends, false);
    appender.append(&[second], None).unwrap();
    assert_eq!(inner.audit_head("gw_1").await.unwrap().unwrap().0, 2);
}
