//! The audit log in SQLite: sealed records stored in batches, read back and verified by
//! `writ_audit::verify_chain`; tampering with the file is caught and named.

use ed25519_dalek::SigningKey;
use sqlx::Connection as _;
use writ_audit::{Broken, Chain, Checkpoint, Event, Place, Record, kinds, verify_chain};
use writ_store::{SqliteStore, Store, StoreError};

use super::open;

const WRITER: &str = "gw-test";

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// `count` sealed `call.decided` records of `WRITER`.
fn sealed(count: u64) -> Vec<Record> {
    let mut chain = Chain::new(WRITER, None);
    (1..=count)
        .map(|i| {
            let event = Event::new(kinds::CALL_DECIDED)
                .unwrap()
                .with_actor(["agt_a"])
                .with_task(format!("tsk_{}", i % 7))
                .with_tool("notes.read")
                .with_decision("allow")
                .with_field("policies", serde_json::json!(["read-tools-for-everyone"]))
                .with_field("call", i);
            chain.seal(event, 1_795_000_000_000 + i64::try_from(i).unwrap())
        })
        .collect()
}

async fn all(store: &SqliteStore) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    loop {
        let after = out.last().map_or(0, |r| r.seq);
        let page = store.audit_records(WRITER, after, 100).await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

async fn verify(store: &SqliteStore) -> Result<writ_audit::Verified, Broken> {
    let records = all(store).await;
    let checkpoints = store.audit_checkpoints(WRITER).await.unwrap();
    let anchor = store.audit_anchor(WRITER).await.unwrap();
    let public = key().verifying_key();
    verify_chain(WRITER, anchor, &records, &checkpoints, |id| {
        (id == "k1").then_some(public)
    })
}

/// A store holding 250 records appended in three batches, checkpointed at 200.
async fn filled() -> (super::TempDir, SqliteStore, Vec<Record>) {
    let (dir, store) = open().await;
    let records = sealed(250);
    for batch in records.chunks(100) {
        store.append_audit(batch).await.unwrap();
    }
    let at_200 = records.get(199).unwrap();
    let checkpoint = Checkpoint::sign(at_200.head(), 1_795_000_001_000, "k1", &key());
    store.add_audit_checkpoint(&checkpoint).await.unwrap();
    (dir, store, records)
}

/// Runs SQL on the database file behind the store's back, as someone with the file would.
async fn tamper(dir: &super::TempDir, sql: &str) {
    let url = format!("sqlite://{}", dir.db().display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn sealed_records_round_trip_and_verify() {
    let (_dir, store, records) = filled().await;
    let stored = all(&store).await;
    assert_eq!(stored, records, "every member comes back as it was sealed");
    let verified = verify(&store).await.unwrap();
    assert_eq!(verified.records, 250);
    assert_eq!(verified.checkpointed, Some(200));
    let last = records.last().unwrap();
    assert_eq!(
        store.audit_head(WRITER).await.unwrap(),
        Some((250, last.hash.clone()))
    );
    assert_eq!(store.audit_head("nobody").await.unwrap(), None);
    assert_eq!(store.audit_writers().await.unwrap(), [WRITER]);
}

#[tokio::test]
async fn a_batch_with_a_seq_already_stored_is_refused_whole() {
    let (_dir, store, records) = filled().await;
    let mut chain = Chain::new(WRITER, Some((250, records.last().unwrap().hash.clone())));
    let next = chain.seal(Event::new(kinds::CALL_COMPLETED).unwrap(), 1);
    let again = records.last().unwrap().clone();
    let err = store.append_audit(&[next, again]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.audit_head(WRITER).await.unwrap().unwrap().0, 250);
}

#[tokio::test]
async fn records_are_append_only() {
    let (dir, store, _) = filled().await;
    let url = format!("sqlite://{}", dir.db().display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let err = sqlx::query("UPDATE audit_records SET decision = 'deny' WHERE seq = 3")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    conn.close().await.unwrap();
    verify(&store).await.unwrap();
}

#[tokio::test]
async fn a_changed_field_is_named() {
    let (dir, store, _) = filled().await;
    tamper(
        &dir,
        "DROP TRIGGER audit_records_append_only; \
         UPDATE audit_records SET decision = 'deny' WHERE seq = 17;",
    )
    .await;
    let broken = verify(&store).await.unwrap_err();
    assert_eq!(broken.place(), Place::Record(17), "{broken}");
    assert!(broken.to_string().starts_with("record 17:"), "{broken}");
}

#[tokio::test]
async fn a_deleted_record_is_named() {
    let (dir, store, _) = filled().await;
    tamper(&dir, "DELETE FROM audit_records WHERE seq = 42;").await;
    let broken = verify(&store).await.unwrap_err();
    assert_eq!(broken.place(), Place::Record(42), "{broken}");
    assert!(broken.to_string().contains("missing"), "{broken}");
}

#[tokio::test]
async fn a_cut_tail_is_caught_by_the_checkpoint() {
    let (dir, store, _) = filled().await;
    tamper(&dir, "DELETE FROM audit_records WHERE seq > 150;").await;
    let broken = verify(&store).await.unwrap_err();
    assert!(broken.to_string().contains("the tail was cut"), "{broken}");
}

#[tokio::test]
async fn the_log_survives_reopening_the_file() {
    let (dir, store, records) = filled().await;
    store.close().await;
    let store = SqliteStore::open(&dir.db()).await.unwrap();
    assert_eq!(all(&store).await, records);
    verify(&store).await.unwrap();
}
