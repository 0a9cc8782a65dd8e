//! The audit log in SQLite: sealed records stored in batches (through the pool or the
//! blocking appender), read back and verified by `writ_audit::verify_chain`; tampering
//! with the file is caught and named; queries, retention and checkpoint keys.

use ed25519_dalek::SigningKey;
use sqlx::Connection as _;
use writ_audit::{Broken, Chain, Checkpoint, Event, Place, Record, kinds, verify_chain};
use writ_store::{AuditEntry, AuditFilter, AuditKey, AuditStore, SqliteStore, StoreError};

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

// ----- queries -----

const OTHER: &str = "gw-other";

/// Two writers' records, committed interleaved: what `audit_query` is asked about.
/// Record `n` (1-based, in commit order) is sealed at `1_000 + n`.
async fn story(store: &SqliteStore) -> Vec<Record> {
    let mut chains = [Chain::new(WRITER, None), Chain::new(OTHER, None)];
    let e = |kind: &str| Event::new(kind).unwrap();
    let call = |kind: &str, call: &str| {
        e(kind)
            .with_task("tsk_child")
            .with_tool("notes.write")
            .with_field("call", call)
    };
    let events = [
        (0, e(kinds::AUDIT_STARTED).with_field("key_id", "k1")),
        (1, e(kinds::AUDIT_STARTED).with_field("key_id", "k2")),
        (
            0,
            e(kinds::TASK_BEGUN)
                .with_actor(["agt_lead"])
                .with_task("tsk_root"),
        ),
        (
            0,
            e(kinds::TASK_DELEGATED)
                .with_actor(["agt_helper", "agt_lead"])
                .with_task("tsk_child")
                .with_field("parent", "tsk_root"),
        ),
        (
            1,
            call(kinds::CALL_DECIDED, "c_1")
                .with_actor(["agt_helper", "agt_lead"])
                .with_decision("allow"),
        ),
        (1, call(kinds::CALL_FORWARDED, "c_1")),
        (0, e("callback.done").with_actor(["agt_lead"])),
        (
            1,
            call(kinds::CALL_COMPLETED, "c_1").with_field("status", "ok"),
        ),
        (
            0,
            call(kinds::CALL_DECIDED, "c_2")
                .with_actor(["agt_helper", "agt_lead"])
                .with_tool("billing.export")
                .with_decision("deny"),
        ),
        (
            0,
            e(kinds::TASK_REVOKED)
                .with_task("tsk_child")
                .with_field("ended", serde_json::json!(["tsk_child"])),
        ),
    ];
    let mut records = Vec::new();
    for (n, (chain, event)) in (1..).zip(events) {
        let record = chains[chain].seal(event, 1_000 + n);
        store
            .append_audit(std::slice::from_ref(&record))
            .await
            .unwrap();
        records.push(record);
    }
    records
}

async fn query(store: &SqliteStore, filter: AuditFilter) -> Vec<AuditEntry> {
    store.audit_query(&filter).await.unwrap()
}

/// The story's record numbers (1-based, commit order) that `filter` returns, in order.
async fn numbers(store: &SqliteStore, records: &[Record], filter: AuditFilter) -> Vec<usize> {
    query(store, filter)
        .await
        .iter()
        .map(|entry| {
            records
                .iter()
                .position(|r| *r == entry.record)
                .map(|i| i + 1)
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn audit_query_matches_every_condition_given() {
    let (_dir, store) = open().await;
    let records = story(&store).await;
    let all = |f: AuditFilter| numbers(&store, &records, f);
    let some = |s: &str| Some(s.to_owned());

    assert_eq!(
        all(AuditFilter::default()).await,
        (1..=10).collect::<Vec<_>>()
    );
    // An agent anywhere in the actor chain: acting, or acted for.
    let lead = AuditFilter {
        agent: some("agt_lead"),
        ..AuditFilter::default()
    };
    assert_eq!(all(lead).await, [3, 4, 5, 7, 9]);
    let helper = AuditFilter {
        agent: some("agt_helper"),
        ..AuditFilter::default()
    };
    assert_eq!(all(helper).await, [4, 5, 9]);
    let agt = AuditFilter {
        agent: some("agt"),
        ..AuditFilter::default()
    };
    assert!(
        all(agt).await.is_empty(),
        "an actor matches whole, not by prefix"
    );
    // A kind exactly, or by whole segments under a prefix.
    let decided = AuditFilter {
        kind: some("call.decided"),
        ..AuditFilter::default()
    };
    assert_eq!(all(decided).await, [5, 9]);
    let calls = AuditFilter {
        kind: some("call.*"),
        ..AuditFilter::default()
    };
    assert_eq!(all(calls).await, [5, 6, 8, 9], "not `callback.done`");
    let tasks = AuditFilter {
        kind: some("task.*"),
        task: some("tsk_child"),
        ..AuditFilter::default()
    };
    assert_eq!(all(tasks).await, [4, 10]);
    let deny = AuditFilter {
        decision: some("deny"),
        ..AuditFilter::default()
    };
    assert_eq!(all(deny).await, [9]);
    let tool = AuditFilter {
        tool: some("notes.write"),
        ..AuditFilter::default()
    };
    assert_eq!(all(tool).await, [5, 6, 8]);
    // Every record of one call, across the kinds that carry it.
    let call = AuditFilter {
        call: some("c_1"),
        ..AuditFilter::default()
    };
    assert_eq!(all(call).await, [5, 6, 8]);
    let several = AuditFilter {
        call: some("c_1"),
        kind: some("call.forwarded"),
        ..AuditFilter::default()
    };
    assert_eq!(all(several).await, [6], "conditions combine");
    // `since` is inclusive, `until` exclusive.
    let window = AuditFilter {
        since_ms: Some(1_004),
        until_ms: Some(1_007),
        ..AuditFilter::default()
    };
    assert_eq!(all(window).await, [4, 5, 6]);
}

#[tokio::test]
async fn audit_query_pages_by_position_in_commit_order_across_writers() {
    let (_dir, store) = open().await;
    let records = story(&store).await;
    let entries = query(&store, AuditFilter::default()).await;
    let positions: Vec<u64> = entries.iter().map(|e| e.position).collect();
    assert!(positions.is_sorted() && positions.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        entries.iter().map(|e| e.record.clone()).collect::<Vec<_>>(),
        records,
        "both writers' records, as committed"
    );

    // Following the log: everything after a position, a page at a time.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = query(
            &store,
            AuditFilter {
                after,
                limit: 3,
                ..AuditFilter::default()
            },
        )
        .await;
        let Some(last) = page.last() else { break };
        after = Some(last.position);
        assert!(page.len() <= 3);
        seen.extend(page.into_iter().map(|e| e.record));
    }
    assert_eq!(seen, records);
    let after_fifth = AuditFilter {
        after: Some(positions[4]),
        ..AuditFilter::default()
    };
    assert_eq!(
        numbers(&store, &records, after_fifth).await,
        [6, 7, 8, 9, 10]
    );

    // Newest first, at most `limit`.
    let newest = AuditFilter {
        newest_first: true,
        limit: 3,
        ..AuditFilter::default()
    };
    assert_eq!(numbers(&store, &records, newest).await, [10, 9, 8]);
    let newest_call = AuditFilter {
        kind: Some("call.*".to_owned()),
        newest_first: true,
        limit: 1,
        ..AuditFilter::default()
    };
    assert_eq!(numbers(&store, &records, newest_call).await, [9]);
}

#[tokio::test]
async fn audit_query_without_a_limit_returns_a_thousand() {
    let (_dir, store) = open().await;
    let records = sealed(1_100);
    store.append_audit(&records).await.unwrap();
    let first = query(&store, AuditFilter::default()).await;
    assert_eq!(first.len(), 1_000);
    assert_eq!(first[999].record, records[999]);
    let rest = AuditFilter {
        after: Some(first[999].position),
        ..AuditFilter::default()
    };
    assert_eq!(query(&store, rest).await.len(), 100);
}

#[tokio::test]
async fn a_kind_prefix_is_matched_literally() {
    let (_dir, store) = open().await;
    let mut chain = Chain::new(WRITER, None);
    let records: Vec<Record> = ["tool_x.y", "toolax.y", "tool_x"]
        .iter()
        .map(|kind| chain.seal(Event::new(kind).unwrap(), 1_795_000_000_000))
        .collect();
    store.append_audit(&records).await.unwrap();
    let found = store
        .audit_query(&AuditFilter {
            kind: Some("tool_x.*".to_owned()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let kinds: Vec<&str> = found.iter().map(|e| e.record.kind.as_str()).collect();
    assert_eq!(kinds, ["tool_x.y"], "`_` is not a wildcard");
}

// ----- retention -----

#[tokio::test]
async fn pruning_leaves_an_anchor_and_what_remains_verifies() {
    let (_dir, store, records) = filled().await;
    // Checkpoints before the cut and at it, besides the one at 200.
    for seq in [50, 100] {
        let record = &records[seq - 1];
        let checkpoint = Checkpoint::sign(record.head(), record.time_ms + 1, "k1", &key());
        store.add_audit_checkpoint(&checkpoint).await.unwrap();
    }
    // Another writer, sealed after the cut: untouched.
    let mut other = Chain::new(OTHER, None);
    let late = other.seal(Event::new(kinds::AUDIT_STARTED).unwrap(), 1_795_000_000_500);
    store
        .append_audit(std::slice::from_ref(&late))
        .await
        .unwrap();

    // Records 1 to 100 were sealed before 1_795_000_000_101.
    let pruned = store.prune_audit(1_795_000_000_101).await.unwrap();
    assert_eq!(pruned.records, 100);
    assert_eq!(pruned.anchors, [(WRITER.to_owned(), 100)]);
    assert_eq!(
        store.audit_anchor(WRITER).await.unwrap(),
        Some((100, records[99].hash.clone()))
    );
    assert_eq!(store.audit_anchor(OTHER).await.unwrap(), None);
    assert_eq!(all(&store).await, records[100..]);
    assert_eq!(
        store.audit_records(OTHER, 0, 10).await.unwrap(),
        std::slice::from_ref(&late)
    );
    assert_eq!(store.audit_head(WRITER).await.unwrap().unwrap().0, 250);

    let verified = verify(&store).await.unwrap();
    assert_eq!(verified.records, 150);
    assert_eq!(
        verified.checkpoints, 3,
        "the checkpoints at and before the anchor stay"
    );
    assert_eq!(verified.last_seq, 250);

    // Nothing more before the same time; pruning is idempotent.
    let again = store.prune_audit(1_795_000_000_101).await.unwrap();
    assert_eq!((again.records, again.anchors.len()), (0, 0));

    // Pruning everything leaves each chain its anchor, to go on from and to verify —
    // and keeps the newest record of all (the other writer's), so positions never
    // start over.
    let everything = store.prune_audit(1_795_000_001_000).await.unwrap();
    assert_eq!(everything.records, 150);
    assert_eq!(everything.anchors, [(WRITER.to_owned(), 250)]);
    assert!(all(&store).await.is_empty());
    assert_eq!(store.audit_records(OTHER, 0, 10).await.unwrap(), [late]);
    assert_eq!(
        store.audit_head(WRITER).await.unwrap(),
        Some((250, records[249].hash.clone()))
    );
    assert_eq!(store.audit_writers().await.unwrap(), [OTHER, WRITER]);
    let verified = verify(&store).await.unwrap();
    assert_eq!((verified.records, verified.last_seq), (0, 250));
}

#[tokio::test]
async fn a_pruned_chain_whose_anchor_was_changed_does_not_verify() {
    let (dir, store, _) = filled().await;
    store.prune_audit(1_795_000_000_101).await.unwrap();
    tamper(
        &dir,
        &format!(
            "UPDATE audit_anchors SET hash = '{}' WHERE writer = '{WRITER}';",
            "0".repeat(64)
        ),
    )
    .await;
    let broken = verify(&store).await.unwrap_err();
    assert_eq!(broken.place(), Place::Record(101), "{broken}");
    assert!(broken.to_string().contains("the anchor's hash"), "{broken}");
}

// ----- checkpoint keys -----

#[tokio::test]
async fn audit_keys_round_trip_and_a_key_id_is_stored_once() {
    let (_dir, store) = open().await;
    assert!(store.audit_keys().await.unwrap().is_empty());
    let key = |key_id: &str, writer: &str, created_ms: i64| AuditKey {
        key_id: key_id.to_owned(),
        writer: writer.to_owned(),
        public_key: format!("public-{key_id}"),
        created_ms,
    };
    let later = key("k2", OTHER, 2_000);
    let earlier = key("k1", WRITER, 1_000);
    store.add_audit_key(&later).await.unwrap();
    store.add_audit_key(&earlier).await.unwrap();
    assert_eq!(store.audit_keys().await.unwrap(), [earlier.clone(), later]);

    let err = store
        .add_audit_key(&key("k1", OTHER, 3_000))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        store.audit_keys().await.unwrap()[0],
        earlier,
        "the first is kept"
    );
}

// ----- the blocking appender -----

#[tokio::test]
async fn the_blocking_appender_commits_records_and_their_checkpoint_together() {
    let (_dir, store) = open().await;
    let mut appender = store.audit_appender().unwrap().unwrap();
    let records = sealed(12);
    let at_10 = Checkpoint::sign(records[9].head(), 2, "k1", &key());
    appender.append(&records[..10], Some(&at_10)).unwrap();
    assert_eq!(all(&store).await, records[..10]);
    assert_eq!(
        store.audit_checkpoints(WRITER).await.unwrap(),
        std::slice::from_ref(&at_10)
    );
    verify(&store).await.unwrap();

    // A batch with a seq already stored is refused whole, its checkpoint with it.
    let at_12 = Checkpoint::sign(records[11].head(), 3, "k1", &key());
    let batch = [records[10].clone(), records[11].clone(), records[9].clone()];
    let err = appender.append(&batch, Some(&at_12)).unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.audit_head(WRITER).await.unwrap().unwrap().0, 10);
    assert_eq!(
        store.audit_checkpoints(WRITER).await.unwrap(),
        std::slice::from_ref(&at_10)
    );

    // A checkpoint already stored refuses its records too.
    let err = appender.append(&records[10..], Some(&at_10)).unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.audit_head(WRITER).await.unwrap().unwrap().0, 10);

    // The appender goes on after a refusal; records alone, then a checkpoint alone.
    appender.append(&records[10..], None).unwrap();
    appender.append(&[], Some(&at_12)).unwrap();
    appender.append(&[], None).unwrap();
    assert_eq!(all(&store).await, records);
    assert_eq!(verify(&store).await.unwrap().checkpointed, Some(12));
}

#[tokio::test]
async fn an_in_memory_store_has_no_blocking_appender() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    assert!(store.audit_appender().unwrap().is_none());
}
