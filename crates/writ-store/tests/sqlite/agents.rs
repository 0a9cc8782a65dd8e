//! Registering agents and finding them again.

use writ_store::{AgentStore, StoreError};

use crate::{agent, external, open};

#[tokio::test]
async fn agent_by_id_and_by_name() {
    let (_dir, store) = open().await;
    let alice = agent("agt_1", "alice");
    store.create_agent(&alice).await.unwrap();
    store.create_agent(&agent("agt_2", "bob")).await.unwrap();

    assert_eq!(store.agent("agt_1").await.unwrap(), Some(alice.clone()));
    assert_eq!(store.agent("alice").await.unwrap(), Some(alice));
    assert_eq!(store.agent("carol").await.unwrap(), None);
    let names: Vec<_> = store
        .agents()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["alice", "bob"]);
}

#[tokio::test]
async fn agent_id_wins_over_another_agents_name() {
    let (_dir, store) = open().await;
    store.create_agent(&agent("agt_1", "agt_2")).await.unwrap();
    store.create_agent(&agent("agt_2", "bob")).await.unwrap();
    assert_eq!(store.agent("agt_2").await.unwrap().unwrap().name, "bob");
}

#[tokio::test]
async fn duplicate_agent_name_or_id_is_a_conflict() {
    let (_dir, store) = open().await;
    store.create_agent(&agent("agt_1", "alice")).await.unwrap();

    let err = store
        .create_agent(&agent("agt_2", "alice"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(what) if what.contains("alice")),
        "{err:?}"
    );
    let err = store
        .create_agent(&agent("agt_1", "bob"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(what) if what.contains("agt_1")),
        "{err:?}"
    );
}

#[tokio::test]
async fn agent_by_external_identity() {
    let (_dir, store) = open().await;
    let ci = external("agt_1", "ci", "https://issuer.example", "repo:writ");
    store.create_agent(&ci).await.unwrap();
    store
        .create_agent(&external("agt_2", "svc", "spiffe", "spiffe://example/svc"))
        .await
        .unwrap();
    store.create_agent(&agent("agt_3", "keyed")).await.unwrap();

    let found = store
        .agent_by_external("https://issuer.example", "repo:writ")
        .await
        .unwrap();
    assert_eq!(found, Some(ci));
    let found = store
        .agent_by_external("spiffe", "spiffe://example/svc")
        .await
        .unwrap();
    assert_eq!(found.unwrap().id, "agt_2");
    let wrong_issuer = store
        .agent_by_external("spiffe", "repo:writ")
        .await
        .unwrap();
    assert_eq!(wrong_issuer, None);

    let twin = external("agt_4", "ci-twin", "https://issuer.example", "repo:writ");
    let err = store.create_agent(&twin).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
}
