//! The one-time identifier cache.

use writ_store::ReplayCache;

use crate::open;

#[tokio::test]
async fn remember_once_refuses_a_replay_until_it_expires() {
    let (_dir, store) = open().await;
    assert!(
        store
            .remember_once("dpop", "jti-1", 160, 100)
            .await
            .unwrap()
    );
    assert!(
        !store
            .remember_once("dpop", "jti-1", 170, 110)
            .await
            .unwrap()
    );
    // Scopes are separate.
    assert!(
        store
            .remember_once("assertion", "jti-1", 160, 110)
            .await
            .unwrap()
    );
    assert!(
        !store
            .remember_once("dpop", "jti-1", 220, 159)
            .await
            .unwrap()
    );
    // At its expiry the identifier is forgotten.
    assert!(
        store
            .remember_once("dpop", "jti-1", 220, 160)
            .await
            .unwrap()
    );
    assert!(
        !store
            .remember_once("dpop", "jti-1", 230, 170)
            .await
            .unwrap()
    );
}
