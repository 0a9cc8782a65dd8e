//! What sealing and verifying cost.
//!
//! - `seal/call_decided`: sealing one typical `call.decided` event (two actors, task,
//!   tool, decision and ten fields, among them policy ids, reasons, an argument digest
//!   and a small redacted argument object) into a chain. Building the event is included,
//!   as the gateway pays for it on every call too (`seal/call_decided_prebuilt`
//!   leaves it out: the canonical encoding, SHA-256 and the record alone).
//! - `verify/10000`: recomputing and checking a chain of 10,000 such records with a
//!   checkpoint every 1,000.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmarks fail loudly on setup errors"
)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use writ_audit::{Chain, Checkpoint, Event, Record, digest, kinds, verify_chain};

fn call_decided(i: u64, arguments: &Value) -> Event {
    Event::new(kinds::CALL_DECIDED)
        .unwrap()
        .with_actor(["agent:billing-bot", "user:alice@example.com"])
        .with_task("task_01J9Z3K7M2Q4R6T8V0X2Y4A6C8")
        .with_tool("github.create_issue")
        .with_decision("allow")
        .with_field("request_id", format!("req-{i}"))
        .with_field("session", "sess_8f2c41")
        .with_field("server", "github")
        .with_field(
            "policies",
            json!(["team-permits-github", "read-only-default"]),
        )
        .with_field("reasons", json!(["permit: team-permits-github"]))
        .with_field("argument_digest", digest(arguments))
        .with_field("arguments", arguments.clone())
        .with_field("protocol", "2025-06-18")
        .with_field("approval", Value::Null)
        .with_field("decide_us", 19)
}

fn arguments() -> Value {
    json!({"repo": "writ/gateway", "title": "Audit chain", "labels": ["audit", "p1"],
           "body": "[redacted:path]"})
}

fn bench(c: &mut Criterion) {
    let arguments = arguments();
    let mut chain = Chain::new("gw-1", None);
    let mut i = 0u64;
    c.bench_function("seal/call_decided", |b| {
        b.iter(|| {
            i += 1;
            black_box(chain.seal(call_decided(i, &arguments), 1_772_366_400_000))
        });
    });
    c.bench_function("seal/call_decided_prebuilt", |b| {
        b.iter_batched(
            || call_decided(7, &arguments),
            |event| black_box(chain.seal(event, 1_772_366_400_000)),
            BatchSize::SmallInput,
        );
    });

    let key = SigningKey::from_bytes(&[9; 32]);
    let public = key.verifying_key();
    let mut chain = Chain::new("gw-1", None);
    let mut records: Vec<Record> = Vec::with_capacity(10_000);
    let mut checkpoints = Vec::new();
    for i in 1..=10_000u64 {
        records.push(chain.seal(call_decided(i, &arguments), 1_772_366_400_000 + i as i64));
        if i.is_multiple_of(1_000) {
            checkpoints.push(Checkpoint::sign(chain.head(), 0, "k1", &key));
        }
    }
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(10_000));
    group.sample_size(20);
    group.bench_function("10000", |b| {
        b.iter(|| verify_chain("gw-1", None, &records, &checkpoints, |_| Some(public)).unwrap());
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
