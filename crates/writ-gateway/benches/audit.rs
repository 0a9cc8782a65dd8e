//! The audit stage alone, as the call pipeline drives it: per call, a `call.decided`
//! record waited for, then `call.forwarded` and `call.completed` handed over. On a
//! SQLite file in a fresh temporary folder, through the audit log's group commit and its
//! own connection — everything but HTTP and policy.
//!
//! Two measurements, printed as a table (not criterion: percentiles under a fixed
//! arrival rate are what the targets are about):
//! - open loop: 16 clients together making 1,000 calls/s for 5 s; the latency of the
//!   wait for `call.decided`, from when it was handed over (and how many calls started
//!   over 2 ms after they were due: a client behind its schedule);
//! - closed loop: 16 clients calling back to back for 3 s; events committed per second.
//!
//! `cargo bench -p writ-gateway --bench audit` (add `-- --rate 2000 --clients 32` to vary).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    reason = "a benchmark fails loudly and prints its report"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;
use writ_audit::{Event, kinds};
use writ_core::config::AuditConfig;
use writ_gateway::audit::AuditLog;
use writ_store::{SqliteStore, Store};

fn decided(client: usize, n: usize) -> Event {
    Event::new(kinds::CALL_DECIDED)
        .unwrap()
        .with_actor([format!("agt_{client:032}")])
        .with_task(format!("tsk_{client:032}"))
        .with_tool("bench.echo")
        .with_decision("allow")
        .with_field("call", format!("c_{client:016}{n:016}"))
        .with_field("server", "bench")
        .with_field("proof", "bearer")
        .with_field("policies", vec!["policy0", "policy2"])
        .with_field("arguments_digest", "ab".repeat(32))
        .with_field("arguments", json!({ "text": "x".repeat(1024) }))
}

fn follow_up(kind: &str, client: usize, n: usize) -> Event {
    Event::new(kind)
        .unwrap()
        .with_task(format!("tsk_{client:032}"))
        .with_tool("bench.echo")
        .with_field("call", format!("c_{client:016}{n:016}"))
        .with_field("server", "bench")
        .with_field("status", "ok")
        .with_field("latency_ms", 0.123)
}

/// One call's worth of audit: the decision waited for, the rest handed over.
async fn one_call(log: &AuditLog, client: usize, n: usize) -> Duration {
    let started = Instant::now();
    log.record(decided(client, n)).await.unwrap();
    let waited = started.elapsed();
    log.note(follow_up(kinds::CALL_FORWARDED, client, n)).await;
    log.note(follow_up(kinds::CALL_COMPLETED, client, n)).await;
    waited
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.saturating_sub(1).min(sorted.len() - 1)].as_secs_f64() * 1_000.0
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().unwrap())
}

fn main() {
    let rate = arg("--rate", 1_000);
    let clients = arg("--clients", 16);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = std::env::temp_dir().join(format!("writ-audit-bench-{}", std::process::id()));
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("writ.db")).await.unwrap());
        let shutdown = CancellationToken::new();
        let log = AuditLog::start(
            store.clone(),
            &AuditConfig::default(),
            shutdown.clone(),
            Arc::new(writ_core::clock::SystemClock),
        )
        .await
        .unwrap();

        // Open loop: each client's calls are due every `clients / rate` seconds.
        let interval = Duration::from_secs_f64(clients as f64 / rate as f64);
        let per_client = (5 * rate) / clients;
        let started = Instant::now() + Duration::from_millis(50);
        let mut tasks = Vec::new();
        for client in 0..clients {
            let log = log.clone();
            let offset = interval.mul_f64(client as f64 / clients as f64);
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                let mut behind = 0;
                for n in 0..per_client {
                    let due = started + offset + interval.mul_f64(n as f64);
                    tokio::time::sleep_until(due.into()).await;
                    // Timers fire on a 1 ms tick, so a call starts up to 1 ms after it is
                    // due; later than that, the client is behind (its previous call was
                    // slow) and that counts.
                    if due.elapsed() > Duration::from_millis(2) {
                        behind += 1;
                    }
                    latencies.push(one_call(&log, client, n).await);
                }
                (latencies, behind)
            }));
        }
        let mut latencies = Vec::new();
        let mut behind = 0;
        for task in tasks {
            let (some, late) = task.await.unwrap();
            latencies.extend(some);
            behind += late;
        }
        latencies.sort_unstable();
        println!(
            "open loop, {rate} calls/s, {clients} clients, {} calls (3 events each, {behind} started over 2 ms late): call.decided committed after p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
            latencies.len(),
            percentile(&latencies, 50.0),
            percentile(&latencies, 90.0),
            percentile(&latencies, 99.0),
            percentile(&latencies, 99.9),
        );

        // Closed loop: as fast as the clients can go.
        let deadline = Instant::now() + Duration::from_secs(3);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for client in 0..clients {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut calls = 0;
                while Instant::now() < deadline {
                    one_call(&log, client + 1_000, calls).await;
                    calls += 1;
                }
                calls
            }));
        }
        let mut calls = 0;
        for task in tasks {
            calls += task.await.unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "closed loop, {clients} clients: {calls} calls in {elapsed:.2} s, {:.0} calls/s, {:.0} events/s committed",
            calls as f64 / elapsed,
            3.0 * calls as f64 / elapsed
        );
        // The log is folded back and started over as it goes; its file keeps the largest
        // size it reached (capped by `journal_size_limit`).
        let wal = std::fs::metadata(dir.join("writ.db-wal")).map_or(0, |m| m.len());
        println!("write-ahead log file at the end: {} KiB", wal / 1024);
        shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}
