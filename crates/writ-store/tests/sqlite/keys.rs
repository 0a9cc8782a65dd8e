//! Writ's signing keys and the change feed.

use writ_store::{Change, ChangeFeed, ChangeKind, SigningKeyStore, StoreError};

use crate::{all_changes, key, open};

#[tokio::test]
async fn adding_a_signing_key_retires_the_active_one() {
    let (_dir, store) = open().await;
    store.add_signing_key(&key("k1", 100), 100).await.unwrap();
    store.add_signing_key(&key("k2", 200), 200).await.unwrap();
    store.add_signing_key(&key("k3", 300), 300).await.unwrap();

    let keys = store.signing_keys().await.unwrap();
    let kids: Vec<_> = keys
        .iter()
        .map(|k| (k.kid.as_str(), k.retired_at))
        .collect();
    assert_eq!(kids, [("k3", None), ("k2", Some(300)), ("k1", Some(200))]);
    assert_eq!(keys[0].private_pem, "private k3");

    let err = store
        .add_signing_key(&key("k2", 400), 400)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(what) if what.contains("k2")),
        "{err:?}"
    );
    // The failed rotation retired nothing.
    assert_eq!(store.signing_keys().await.unwrap()[0].retired_at, None);
}

#[tokio::test]
async fn drop_retired_keys_keeps_active_and_recent_keys() {
    let (_dir, store) = open().await;
    store.add_signing_key(&key("k1", 100), 100).await.unwrap();
    store.add_signing_key(&key("k2", 200), 200).await.unwrap();
    store.add_signing_key(&key("k3", 300), 300).await.unwrap();

    assert_eq!(store.drop_retired_keys(250).await.unwrap(), 1);
    let kids: Vec<_> = store
        .signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(kids, ["k3", "k2"]);
    assert_eq!(store.drop_retired_keys(250).await.unwrap(), 0);
    assert_eq!(store.drop_retired_keys(10_000).await.unwrap(), 1);

    let changes = all_changes(&store).await;
    let expected: Vec<_> = ["k1", "k2", "k3", "k1", "k2"]
        .map(|kid| (ChangeKind::Key, kid.to_owned()))
        .into();
    assert_eq!(changes, expected);
}

#[tokio::test]
async fn changes_since_pages_in_order() {
    let (_dir, store) = open().await;
    for (i, kid) in ["k1", "k2", "k3", "k4", "k5"].into_iter().enumerate() {
        store
            .add_signing_key(&key(kid, i as i64), i as i64)
            .await
            .unwrap();
    }

    let first = store.changes_since(0, 2).await.unwrap();
    let subjects: Vec<_> = first.iter().map(|c| c.subject.as_str()).collect();
    assert_eq!(subjects, ["k1", "k2"]);
    assert!(first[0].seq < first[1].seq);

    let rest = store.changes_since(first[1].seq, 10).await.unwrap();
    let subjects: Vec<_> = rest.iter().map(|c| c.subject.as_str()).collect();
    assert_eq!(subjects, ["k3", "k4", "k5"]);
    let last = rest.last().unwrap().seq;
    assert_eq!(
        store.changes_since(last, 10).await.unwrap(),
        Vec::<Change>::new()
    );
    assert!(store.changes_since(u64::MAX, 10).await.unwrap().is_empty());
}
