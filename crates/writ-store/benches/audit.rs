//! How fast SQLite takes audit records: sealed `call.decided` records appended in one
//! transaction per batch, as a gateway's group commit does. The target is
//! 20,000 events/s; throughput is printed per batch size.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmarks fail loudly on setup errors"
)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use writ_audit::{Chain, Event, Record, kinds};
use writ_store::{AuditStore, SqliteStore};

fn batch(chain: &mut Chain, size: usize) -> Vec<Record> {
    (0..size)
        .map(|i| {
            let event = Event::new(kinds::CALL_DECIDED)
                .unwrap()
                .with_actor(["agt_0123456789abcdef0123456789abcdef"])
                .with_task("tsk_0123456789abcdef0123456789abcdef")
                .with_tool("notes.write")
                .with_decision("allow")
                .with_field("policies", serde_json::json!(["research-writes-notes"]))
                .with_field(
                    "reasons",
                    serde_json::json!(["the research team keeps the notes"]),
                )
                .with_field(
                    "arguments_digest",
                    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                )
                .with_field(
                    "arguments",
                    serde_json::json!({ "title": "plan", "body": "[redacted:path]" }),
                )
                .with_field("call", i);
            chain.seal(event, 1_795_000_000_000)
        })
        .collect()
}

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("writ-audit-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = runtime
        .block_on(SqliteStore::open(&dir.join("writ.db")))
        .unwrap();
    let mut group = c.benchmark_group("audit_append");
    for size in [1_usize, 10, 100, 1_000] {
        let mut chain = Chain::new(format!("bench-{size}"), None);
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_batched(
                || batch(&mut chain, size),
                |records| runtime.block_on(store.append_audit(&records)).unwrap(),
                criterion::BatchSize::SmallInput,
            );
        });
    }
    group.finish();
    runtime.block_on(store.close());
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = append
}
criterion_main!(benches);
