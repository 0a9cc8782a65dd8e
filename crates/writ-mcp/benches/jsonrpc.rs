//! What reading an agent's request costs before any check: `parse_body` on the bodies
//! the front door sees most — a `tools/call` with 1 KiB and with 64 KiB of arguments,
//! a `tools/list`, and a batch of ten calls (earlier protocol revisions).
//!
//! `cargo bench -p writ-mcp --bench jsonrpc -- --warm-up-time 1 --measurement-time 3`

#![allow(clippy::unwrap_used, reason = "benchmarks fail loudly on setup errors")]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use writ_mcp::jsonrpc::parse_body;

/// The front door's default nesting limit.
const MAX_DEPTH: usize = 64;

fn call(text_len: usize, id: u64) -> serde_json::Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {
            "name": "notes.write",
            "arguments": { "title": "plan", "body": "x".repeat(text_len), "tags": ["a", "b"] },
            "_meta": { "progressToken": id }
        }
    })
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_body");
    let bodies = [
        ("tools_call_1KiB", call(1024, 1).to_string()),
        ("tools_call_64KiB", call(64 * 1024, 1).to_string()),
        (
            "tools_list",
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {"cursor": "c2"}})
                .to_string(),
        ),
        (
            "batch_of_10_calls",
            serde_json::Value::Array((0..10).map(|i| call(256, i)).collect()).to_string(),
        ),
    ];
    for (name, body) in &bodies {
        // Every body must parse, or the figure would be for the error path.
        parse_body(body.as_bytes(), MAX_DEPTH).unwrap();
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| parse_body(black_box(body.as_bytes()), MAX_DEPTH));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
