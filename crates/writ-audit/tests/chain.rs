//! The chain end to end: seal, store (here: a Vec and JSON lines), tamper, verify.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests fail loudly, and index records they just made"
)]

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::{Map, Value, json};
use writ_audit::{
    Before, Broken, Chain, Checkpoint, Event, GENESIS, Place, Record, kinds, verify_chain,
};

const WRITER: &str = "gw-1";

fn key() -> SigningKey {
    SigningKey::from_bytes(&[1; 32])
}

fn other_key() -> SigningKey {
    SigningKey::from_bytes(&[2; 32])
}

fn keys(id: &str) -> Option<VerifyingKey> {
    (id == "k1").then(|| key().verifying_key())
}

fn event(i: u64) -> Event {
    let kind = [
        kinds::CALL_DECIDED,
        kinds::CALL_FORWARDED,
        kinds::CALL_COMPLETED,
    ][(i % 3) as usize];
    Event::new(kind)
        .unwrap()
        .with_actor(["agent:a", "user:u"])
        .with_task(format!("task-{}", i / 10))
        .with_tool("fs.read")
        .with_decision(if i.is_multiple_of(7) { "deny" } else { "allow" })
        .with_field("request", i)
        .with_field(
            "arguments",
            json!({"path": format!("/tmp/{i}"), "depth": 2}),
        )
}

/// `n` records, and a checkpoint every `every` records.
fn sealed(n: u64, every: u64) -> (Vec<Record>, Vec<Checkpoint>) {
    let mut chain = Chain::new(WRITER, None);
    let mut records = Vec::new();
    let mut checkpoints = Vec::new();
    for i in 1..=n {
        records.push(chain.seal(event(i), 1_772_366_400_000 + i as i64));
        if i.is_multiple_of(every) {
            checkpoints.push(Checkpoint::sign(
                chain.head(),
                1_772_366_400_000 + i as i64,
                "k1",
                &key(),
            ));
        }
    }
    (records, checkpoints)
}

fn verify(records: &[Record], checkpoints: &[Checkpoint]) -> Result<writ_audit::Verified, Broken> {
    verify_chain(WRITER, None, records, checkpoints, keys)
}

#[test]
fn a_thousand_sealed_records_verify_with_their_checkpoints() {
    let (records, checkpoints) = sealed(1_000, 100);
    let verified = verify(&records, &checkpoints).unwrap();
    assert_eq!(verified.records, 1_000);
    assert_eq!(verified.last_seq, 1_000);
    assert_eq!(verified.last_hash, records[999].hash);
    assert_eq!(verified.checkpoints, 10);
    assert_eq!(verified.checkpointed, Some(1_000));
    // Owned records work as well as borrowed ones.
    assert_eq!(
        verify_chain(WRITER, None, records, &checkpoints, keys).unwrap(),
        verified
    );
}

#[test]
fn records_survive_json_lines_and_still_verify() {
    let (records, checkpoints) = sealed(50, 25);
    let lines: String = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    let back: Vec<Record> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(back, records);
    let checkpoints: Vec<Checkpoint> = checkpoints
        .iter()
        .map(|c| serde_json::from_str(&serde_json::to_string(c).unwrap()).unwrap())
        .collect();
    verify(&back, &checkpoints).unwrap();
}

#[test]
fn an_empty_chain_verifies() {
    let verified = verify(&[], &[]).unwrap();
    assert_eq!((verified.records, verified.last_seq), (0, 0));
    assert_eq!(verified.last_hash, GENESIS);
}

#[test]
fn changing_any_member_of_one_record_names_that_record() {
    let (records, checkpoints) = sealed(40, 10);
    type Change = (&'static str, fn(&mut Record));
    let changes: Vec<Change> = vec![
        ("writer", |r| r.writer = "gw-2".into()),
        ("time_ms", |r| r.time_ms += 1),
        ("kind", |r| r.kind = "call.denied".into()),
        ("actor changed", |r| r.actor[0] = "agent:b".into()),
        ("actor added", |r| r.actor.push("user:v".into())),
        ("actor removed", |r| {
            r.actor.pop();
        }),
        ("task", |r| r.task = Some("task-x".into())),
        ("task removed", |r| r.task = None),
        ("tool", |r| r.tool = Some("fs.write".into())),
        ("decision", |r| r.decision = Some("deny".into())),
        ("decision removed", |r| r.decision = None),
        ("field value", |r| r.fields["request"] = json!(999)),
        ("nested field", |r| {
            r.fields["arguments"]["path"] = json!("/etc/shadow")
        }),
        ("field added", |r| {
            r.fields.insert("extra".into(), json!(true));
        }),
        ("field removed", |r| {
            r.fields.remove("arguments");
        }),
        ("prev_hash", |r| r.prev_hash = "1".repeat(64)),
        ("hash", |r| r.hash = "2".repeat(64)),
        ("seq", |r| r.seq = 99),
    ];
    for (what, change) in changes {
        let mut tampered = records.clone();
        change(&mut tampered[16]);
        let broken = verify(&tampered, &checkpoints).unwrap_err();
        assert_eq!(broken.place(), Place::Record(17), "{what}: {broken}");
    }
    let mut tampered = records.clone();
    tampered[16].fields["request"] = json!(999);
    assert_eq!(
        verify(&tampered, &checkpoints).unwrap_err().to_string(),
        "record 17: hash does not match its contents (a field was changed)"
    );
}

#[test]
fn a_rehashed_change_is_named_at_the_next_record() {
    let (mut records, checkpoints) = sealed(40, 10);
    records[16].fields["request"] = json!(999);
    records[16].hash = records[16].expected_hash();
    let broken = verify(&records, &checkpoints).unwrap_err();
    assert_eq!(
        broken,
        Broken::Unlinked {
            seq: 18,
            before: Before::Record(17)
        }
    );
    assert_eq!(
        broken.to_string(),
        "record 18: prev_hash is not the hash of record 17 (a record was replaced, or the \
         chain was rewritten from here)"
    );
}

#[test]
fn a_chain_rewritten_from_a_record_on_is_caught_by_the_next_checkpoint() {
    let (records, checkpoints) = sealed(40, 10);
    // Rewrite record 17 and re-seal everything after it, as someone with write access
    // to the store but not the signing key could.
    let mut chain = Chain::new(WRITER, Some((16, records[15].hash.clone())));
    let mut rewritten = records[..16].to_vec();
    for (i, record) in records[16..].iter().enumerate() {
        let mut e = event(17 + i as u64);
        if i == 0 {
            e = e.with_decision("allow");
            e.fields.insert("request".into(), json!(999));
        }
        rewritten.push(chain.seal(e, record.time_ms));
    }
    let broken = verify(&rewritten, &checkpoints).unwrap_err();
    assert_eq!(broken.place(), Place::Checkpoint(20));
    assert!(
        broken.to_string().starts_with(
            "checkpoint at 20 (signed 2026-03-01T12:00:00.020Z with key `k1`) names another hash"
        ),
        "{broken}"
    );
}

#[test]
fn a_deleted_record_is_named() {
    let (mut records, checkpoints) = sealed(40, 10);
    records.remove(17);
    let broken = verify(&records, &checkpoints).unwrap_err();
    assert_eq!(
        broken.to_string(),
        "record 18 is missing (17 is followed by 19)"
    );
    assert_eq!(broken.place(), Place::Record(18));
}

#[test]
fn a_deleted_first_record_is_named() {
    let (mut records, checkpoints) = sealed(40, 10);
    records.remove(0);
    let broken = verify(&records, &checkpoints).unwrap_err();
    assert_eq!(
        broken.to_string(),
        "record 1 is missing (the chain starts at 2)"
    );
}

#[test]
fn reordered_records_are_named() {
    let (mut records, checkpoints) = sealed(40, 10);
    records.swap(17, 18);
    let broken = verify(&records, &checkpoints).unwrap_err();
    assert_eq!(
        broken.to_string(),
        "record 18 is missing (17 is followed by 19)"
    );

    let (mut records, _) = sealed(40, 10);
    let copy = records[9].clone();
    records.insert(12, copy);
    let broken = verify(&records, &checkpoints).unwrap_err();
    assert_eq!(broken.place(), Place::Record(13));
    assert_eq!(
        broken.to_string(),
        "record 13 is missing: 12 is followed by a record that says it is 10 (records were \
         reordered or repeated, or a seq was changed)"
    );
}

#[test]
fn a_record_of_another_writer_is_named() {
    let (mut records, checkpoints) = sealed(10, 10);
    let mut other = Chain::new("gw-2", Some((4, records[3].hash.clone())));
    records[4] = other.seal(event(5), records[4].time_ms);
    let broken = verify(&records, &checkpoints).unwrap_err();
    assert_eq!(
        broken.to_string(),
        "record 5: written by `gw-2`, not `gw-1`"
    );
}

#[test]
fn a_tail_cut_after_a_checkpoint_is_detected() {
    let (mut records, checkpoints) = sealed(50, 50);
    records.truncate(40);
    let broken = verify(&records, &checkpoints).unwrap_err();
    assert_eq!(
        broken.to_string(),
        "the chain ends at 40 but checkpoint at 50 (signed 2026-03-01T12:00:00.050Z with key \
         `k1`) says it reached 50: the tail was cut"
    );
    assert_eq!(broken.place(), Place::Checkpoint(50));
    // Every record gone is the same story.
    let broken = verify(&[], &checkpoints).unwrap_err();
    assert!(
        matches!(
            broken,
            Broken::TailCut {
                end: 0,
                seq: 50,
                ..
            }
        ),
        "{broken}"
    );
}

#[test]
fn a_tail_cut_after_the_last_checkpoint_is_not_detectable() {
    // The documented limit: records after the latest checkpoint are unprotected.
    let (mut records, checkpoints) = sealed(50, 20);
    records.truncate(45);
    let verified = verify(&records, &checkpoints).unwrap();
    assert_eq!((verified.last_seq, verified.checkpointed), (45, Some(40)));
}

#[test]
fn a_forged_checkpoint_signature_is_named() {
    let (mut records, mut checkpoints) = sealed(50, 50);
    checkpoints[0].signature.replace_range(0..4, "AAAA");
    let broken = verify(&records, &checkpoints).unwrap_err();
    assert_eq!(broken.to_string(), "checkpoint at 50: bad signature");

    // A forged checkpoint is named as forged, not taken for a cut tail.
    records.truncate(40);
    assert_eq!(
        verify(&records, &checkpoints).unwrap_err(),
        Broken::BadSignature {
            seq: 50,
            malformed: false
        }
    );

    checkpoints[0].signature = "not base64!".into();
    assert_eq!(
        verify(&records, &checkpoints).unwrap_err().to_string(),
        "checkpoint at 50: bad signature (not a base64url Ed25519 signature)"
    );
}

#[test]
fn a_checkpoint_signed_with_another_key_is_named() {
    let (records, _) = sealed(50, 50);
    let forged = Checkpoint::sign(records[49].head(), 0, "k1", &other_key());
    assert_eq!(
        verify(&records, &[forged]).unwrap_err(),
        Broken::BadSignature {
            seq: 50,
            malformed: false
        }
    );
    let unknown = Checkpoint::sign(records[49].head(), 0, "k9", &other_key());
    assert_eq!(
        verify(&records, &[unknown]).unwrap_err().to_string(),
        "checkpoint at 50: signed with unknown key `k9`"
    );
}

#[test]
fn a_checkpoint_of_another_writer_is_named() {
    let (records, _) = sealed(10, 10);
    let mut foreign = Checkpoint::sign(records[9].head(), 0, "k1", &key());
    foreign.writer = "gw-2".into();
    assert_eq!(
        verify(&records, &[foreign]).unwrap_err().to_string(),
        "checkpoint at 10: signed for `gw-2`, not `gw-1`"
    );
}

#[test]
fn problems_are_named_in_seq_order() {
    let (mut records, mut checkpoints) = sealed(50, 10);
    checkpoints[3].signature = "AAAA".into(); // at 40
    records[24].time_ms = 0; // record 25
    assert_eq!(
        verify(&records, &checkpoints).unwrap_err().place(),
        Place::Record(25)
    );
    // Checkpoints given out of order are taken in seq order.
    checkpoints.reverse();
    assert_eq!(
        verify(&records, &checkpoints).unwrap_err().place(),
        Place::Record(25)
    );
}

#[test]
fn a_chain_pruned_to_an_anchor_verifies() {
    let (records, checkpoints) = sealed(100, 10);
    let anchor = Some((30, records[29].hash.clone()));
    let kept = &records[30..];
    let verified = verify_chain(WRITER, anchor.clone(), kept, &checkpoints, keys).unwrap();
    assert_eq!((verified.records, verified.last_seq), (70, 100));
    // With everything pruned, the anchor is the head.
    let all_pruned = Some((100, records[99].hash.clone()));
    let verified = verify_chain(WRITER, all_pruned, &[] as &[Record], &checkpoints, keys).unwrap();
    assert_eq!((verified.records, verified.last_seq), (0, 100));
    // Sealing continues from a pruned chain's anchor.
    let mut chain = Chain::new(WRITER, anchor.clone());
    let resumed: Vec<Record> = (31..=40)
        .map(|i| chain.seal(event(i), records[i as usize - 1].time_ms))
        .collect();
    assert_eq!(resumed, records[30..40]);
}

#[test]
fn a_wrong_anchor_fails() {
    let (records, checkpoints) = sealed(100, 10);
    let kept = &records[30..];

    let wrong_hash = Some((30, records[28].hash.clone()));
    let broken = verify_chain(WRITER, wrong_hash, kept, &[], keys).unwrap_err();
    assert_eq!(
        broken,
        Broken::Unlinked {
            seq: 31,
            before: Before::Anchor(30)
        }
    );
    assert_eq!(
        broken.to_string(),
        "record 31: prev_hash is not the anchor's hash (the records up to 30 that were \
         pruned ended with another record)"
    );

    let too_early = Some((29, records[28].hash.clone()));
    let broken = verify_chain(WRITER, too_early, kept, &checkpoints, keys).unwrap_err();
    assert_eq!(
        broken.to_string(),
        "record 30 is missing (the anchor at 29 is followed by 31)"
    );

    let too_late = Some((31, records[30].hash.clone()));
    let broken = verify_chain(WRITER, too_late, kept, &checkpoints, keys).unwrap_err();
    assert_eq!(broken.place(), Place::Record(32));

    // A checkpoint at the anchor's seq pins the anchor's hash.
    let forged_anchor = Some((30, "f".repeat(64)));
    let broken = verify_chain(WRITER, forged_anchor, kept, &checkpoints, keys).unwrap_err();
    assert_eq!(broken.place(), Place::Checkpoint(30));
}

#[test]
fn the_hash_does_not_depend_on_field_insertion_order() {
    let mut one = Map::new();
    one.insert("zeta".into(), json!(1));
    one.insert("alpha".into(), json!({"y": [1, 2], "b": null, "a": "x"}));
    one.insert("mid".into(), json!(true));
    let mut nested = Map::new();
    nested.insert("a".into(), json!("x"));
    nested.insert("b".into(), Value::Null);
    nested.insert("y".into(), json!([1, 2]));
    let mut two = Map::new();
    two.insert("mid".into(), json!(true));
    two.insert("alpha".into(), Value::Object(nested));
    two.insert("zeta".into(), json!(1));
    // The workspace's serde_json keeps insertion order, so these really differ in order.
    assert_ne!(
        one.keys().collect::<Vec<_>>(),
        two.keys().collect::<Vec<_>>()
    );

    let seal = |fields: Map<String, Value>| {
        let mut e = Event::new(kinds::CALL_DECIDED).unwrap();
        e.fields = fields;
        Chain::new(WRITER, None).seal(e, 0)
    };
    let (a, b) = (seal(one), seal(two));
    assert_eq!(a.canonical(), b.canonical());
    assert_eq!(a.hash, b.hash);
    // And a record loaded from JSON in yet another order verifies.
    let reordered: Record = serde_json::from_str(
        &serde_json::to_string(&b)
            .unwrap()
            .replace("\"mid\":true,", "")
            .replace("{\"alpha\"", "{\"mid\":true,\"alpha\""),
    )
    .unwrap();
    verify(&[reordered], &[]).unwrap();
}

/// The encoding is a format other programs verify: if this test fails, the change
/// breaks every stored chain and needs a new version tag, not a new golden value.
///
/// The hash was computed independently, from the crate docs alone, in Python:
///
/// ```text
/// import hashlib, struct
/// def s(x): b = x.encode(); return struct.pack('>Q', len(b)) + b
/// out = (s("writ-audit-record-v1") + s("w") + struct.pack('>Q', 1)
///        + struct.pack('>q', 1772366400000) + s("call.decided") + struct.pack('>Q', 2)
///        + s("agent:a") + s("user:ü") + b'\x00' + b'\x01' + s("fs.read") + b'\x01'
///        + s("allow") + s("0" * 64)
///        + b'{"a":{"b":[true,null,-2],"q":"\\"x\\"\\n"},"z":1.5}')
/// print(hashlib.sha256(out).hexdigest())
/// ```
#[test]
fn golden_record_encoding_and_hash() {
    let event = Event::new(kinds::CALL_DECIDED)
        .unwrap()
        .with_actor(["agent:a", "user:ü"])
        .with_tool("fs.read")
        .with_decision("allow")
        .with_field("z", json!(1.5))
        .with_field("a", json!({"q": "\"x\"\n", "b": [true, null, -2]}));
    let record = Chain::new("w", None).seal(event, 1_772_366_400_000);

    let mut expected = Vec::new();
    let str_ = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u64).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    str_(&mut expected, "writ-audit-record-v1");
    str_(&mut expected, "w");
    expected.extend_from_slice(&1u64.to_be_bytes());
    expected.extend_from_slice(&1_772_366_400_000i64.to_be_bytes());
    str_(&mut expected, "call.decided");
    expected.extend_from_slice(&2u64.to_be_bytes());
    str_(&mut expected, "agent:a");
    str_(&mut expected, "user:ü");
    expected.push(0); // task: absent
    expected.push(1);
    str_(&mut expected, "fs.read");
    expected.push(1);
    str_(&mut expected, "allow");
    str_(&mut expected, GENESIS);
    expected.extend_from_slice(br#"{"a":{"b":[true,null,-2],"q":"\"x\"\n"},"z":1.5}"#);
    assert_eq!(record.canonical(), expected);

    assert_eq!(
        record.hash,
        "5961b41d4c691ae57cae489b0da8c5b748186f3eff2f323bcf140bb622f149c1"
    );
}
