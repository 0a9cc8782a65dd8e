//! `FaultyStore` around a `SqliteStore`: everything forwarded while no switch is on, the
//! operations switched on refused before they reach the store, the audit appender too.

use std::sync::Arc;

use writ_audit::{Chain, Event, kinds};
use writ_store::faults::{Fault, FaultyStore};
use writ_store::{
    AgentStore, AuditStore, ChangeFeed, ReplayCache, SigningKeyStore, StoreError, TaskStore,
    ToolPinStore,
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
